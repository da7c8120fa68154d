"""Dataset registry: names → files under the data directory (or their public source).

Data directory resolution: explicit argument > ``$REFUSAL_SAE_DATA_DIR`` > a ``shared/datasets``
folder beside the working directory or the source checkout. With none of those, the public source
is downloaded once into the cache (needs internet). The files are never copied into the repo.
"""

from __future__ import annotations

import csv
import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from refusal_sae.data.limits import PromptLimit, check_length
from refusal_sae.data.records import PromptRecord, PromptSet
from refusal_sae.errors import DataError

DATA_DIR_ENV = "REFUSAL_SAE_DATA_DIR"
_RD = "https://raw.githubusercontent.com/andyrdt/refusal_direction/main/dataset"
_XSTEST = "https://raw.githubusercontent.com/paul-rottger/exaggerated-safety/main/xstest_prompts.csv"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    path: str  # relative to the data directory
    label: str  # harmful | harmless | from_column
    is_test: bool
    url: str
    subset: str | None = None  # xstest: "safe" / "unsafe"
    description: str = ""


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> None:
    if spec.name in _REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def dataset_names() -> list[str]:
    return sorted(_REGISTRY)


def is_test_split(name: str) -> bool:
    """Whether ``name`` is a registered held-out test split (never for training or selection)."""
    return name in _REGISTRY and _REGISTRY[name].is_test


def get_spec(name: str) -> DatasetSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}, or a .json/.jsonl/.csv path") from None


def _builtin() -> None:
    splits = {
        "harmful_train": ("harmful", False, "Arditi et al. harmful training split (AdvBench + MaliciousInstruct + TDC2023)"),
        "harmful_val": ("harmful", False, "Arditi et al. harmful validation split (HarmBench val)"),
        "harmless_train": ("harmless", False, "Alpaca training split"),
        "harmless_val": ("harmless", False, "Alpaca validation split"),
        "harmless_test": ("harmless", True, "Alpaca test split (held out)"),
    }
    for name, (label, test, desc) in splits.items():
        register_dataset(DatasetSpec(name, f"refusal_direction/splits/{name}.json", label, test,
                                     f"{_RD}/splits/{name}.json", description=desc))
    processed = {
        "advbench": ("harmful", False), "harmbench_val": ("harmful", False), "harmbench_test": ("harmful", True),
        "jailbreakbench": ("harmful", True), "malicious_instruct": ("harmful", False), "tdc2023": ("harmful", False),
        "alpaca": ("harmless", False),
    }
    for name, (label, test) in processed.items():
        register_dataset(DatasetSpec(name, f"refusal_direction/processed/{name}.json", label, test,
                                     f"{_RD}/processed/{name}.json", description=name))
    for name, subset in (("xstest", None), ("xstest_safe", "safe"), ("xstest_unsafe", "unsafe")):
        register_dataset(DatasetSpec(name, "xstest/xstest_prompts.csv", "from_column", True, _XSTEST, subset,
                                     "XSTest exaggerated-safety prompts"))


_builtin()


def default_data_dir() -> Path | None:
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *Path.cwd().parents, *here.parents]:
        cand = base / "shared" / "datasets"
        if cand.is_dir():
            return cand
    return None


def _download(spec: DatasetSpec) -> Path:
    from refusal_sae.models.embedded import cache_root

    target = cache_root() / "datasets" / spec.path
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(spec.url, timeout=30) as resp:  # noqa: S310 (fixed https URL)
            data = resp.read()
    except OSError as e:
        raise DataError(f"no data directory found (set --data-dir or ${DATA_DIR_ENV}) and downloading "
                        f"{spec.name} from its public source failed: {e}") from e
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def resolve_path(name: str, data_dir: str | Path | None = None) -> Path:
    spec = get_spec(name)
    base = Path(data_dir) if data_dir is not None else default_data_dir()
    if base is None:
        return _download(spec)
    path = base / spec.path
    if not path.is_file():
        raise DataError(f"dataset {name!r}: file not found: {path}")
    return path


def load_dataset(name_or_path: str, data_dir: str | Path | None = None, n: int | None = None, seed: int = 0,
                 limit: PromptLimit | None = None) -> PromptSet:
    """Load a registered dataset by name, or a JSON / JSONL / CSV file of instructions by path. ``limit``: every row's
    prompt must fit it (a DataError naming the row otherwise), checked before sampling ``n``."""
    if name_or_path in _REGISTRY:
        spec = _REGISTRY[name_or_path]
        path = resolve_path(name_or_path, data_dir)
        records = read_records(path, source=spec.name, label=spec.label, subset=spec.subset, limit=limit)
        pset = PromptSet(spec.name, records, is_test=spec.is_test)
    else:
        path = Path(name_or_path)
        if path.suffix.lower() not in (".json", ".jsonl", ".csv"):
            get_spec(name_or_path)  # raises the "unknown dataset" error
        if not path.is_file():
            raise DataError(f"dataset file not found: {path}")
        pset = PromptSet(path.stem, read_records(path, source=path.stem, label="unknown", limit=limit))
    if not pset.records:
        raise DataError(f"dataset {pset.name!r} ({path}) is empty")
    return pset.sample(n, seed)


_TEXT_KEYS = ("instruction", "prompt", "goal", "behavior", "text")


def _record_from(obj, path: Path, where: str, source: str, label: str) -> PromptRecord:
    if isinstance(obj, str):
        text, row = obj, {}
    elif isinstance(obj, dict):
        key = next((k for k in _TEXT_KEYS if k in obj), None)
        if key is None:
            raise DataError(f"{path}: {where} has none of the fields {_TEXT_KEYS}")
        text, row = obj[key], obj
    else:
        raise DataError(f"{path}: {where} is neither a string nor an object")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{path}: {where} has an empty instruction")
    row_label = row.get("label", label)
    if label == "from_column":
        row_label = {"safe": "harmless", "unsafe": "harmful"}.get(row.get("label"), "unknown")
    extra = {k: v for k, v in row.items() if k not in (*_TEXT_KEYS, "category", "label", "jailbreak_family")}
    return PromptRecord(text.strip(), row_label if row_label in ("harmful", "harmless") else "unknown", source,
                        row.get("category") or row.get("type"), row.get("jailbreak_family"), extra)


def _json_lines(text: str, path: Path) -> list[tuple[str, object]]:
    """``(line N, object)`` of each non-blank line: parsed one by one, so an error names the file's line (a
    JSONDecodeError of one line always says line 1)."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: malformed JSON on line {n} (column {e.colno}): {e.msg}") from None
    return rows


def read_records(path: Path, source: str, label: str, subset: str | None = None,
                 limit: PromptLimit | None = None) -> list[PromptRecord]:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    try:
        if suffix == ".json":
            items = json.loads(text)
            if not isinstance(items, list):
                raise DataError(f"{path}: expected a JSON list of instructions, got {type(items).__name__}")
            rows = [(f"item {i}", r) for i, r in enumerate(items, 1)]
        elif suffix == ".jsonl":
            rows = _json_lines(text, path)
        else:
            reader = csv.DictReader(text.splitlines())
            if not reader.fieldnames or not any(k in reader.fieldnames for k in _TEXT_KEYS):
                raise DataError(f"{path}: CSV needs a column named one of {_TEXT_KEYS}")
            rows = [(f"line {reader.line_num}", r) for r in reader]  # line_num: where the row ends (header = line 1)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON: {e}") from e
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV: {e}") from e
    if subset is not None:
        rows = [(w, r) for w, r in rows if isinstance(r, dict) and r.get("label") == subset]
    records = [_record_from(r, path, where, source, label) for where, r in rows]
    if limit is not None:
        for (where, _), rec in zip(rows, records, strict=True):
            check_length(limit, rec.instruction, f"{source!r} ({path})", where)
    return records
