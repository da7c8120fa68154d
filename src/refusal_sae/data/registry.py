"""Dataset registry: names → files under the data directory (or their public source).

Data directory resolution: explicit argument > ``$REFUSAL_SAE_DATA_DIR`` > a ``shared/datasets``
folder beside the working directory or the source checkout. With none of those, the public source
is downloaded once into the cache (needs internet). The files are never copied into the repo.

Files are JSON lists, JSONL or CSV, each optionally gzip-compressed (``.jsonl.gz``, ``.json.gz``, ``.csv.gz``),
read as shipped. A row's fields may be named by dotted paths into nested objects (``text_field``,
``family_field``, ``label_field``, e.g. ``extra.prompt_complexity_cate``).
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import urllib.request
import zlib
from dataclasses import dataclass, replace
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
    text_field: str | None = None  # dotted path of the prompt; None: the first of _TEXT_KEYS a row has
    family_field: str | None = None  # dotted path of the row's family (jailbreak style / source category)
    label_field: str | None = "label"  # dotted path of a per-row label; None: ``label`` for every row
    dedup: bool = False  # keep the first row of each distinct prompt (in file order)
    drop_fields: tuple[str, ...] = ()  # dotted paths left out of ``extra`` (fields of one answer, not the prompt)


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
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}, or a "
                        ".json/.jsonl/.csv path (optionally .gz)") from None


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
    _outside()


# Fields of one judged answer in judge_labels/*/rows.jsonl.gz, not of its prompt: kept out of the prompt records.
_ANSWER_FIELDS = ("answer", "label_source", "extra.original_label", "extra.meaning", "extra.producing_model")


def _outside() -> None:
    """Prompts written outside this project, for out-of-distribution tests only.

    They are read from the human-labelled answer sets of ``judge_labels/`` (several answers per prompt: each prompt
    is kept once, at its first row, with ``extra["n_rows"]`` its number of rows). The answers and their
    complied / refused labels are not kept. Held-out test splits: never for training or selection.
    """
    register_dataset(DatasetSpec(
        "jailjudge_mini", "judge_labels/jailjudge_mini/rows.jsonl.gz", "harmful", True, "",
        description="JAILJUDGE-mini (via JailbreakEval): 826 distinct jailbreak / harmful prompts written outside "
                    "this project (GCG-style suffixes, persona and 'speculative answer' templates, plain requests), "
                    "family = JAILJUDGE prompt-complexity category Q1-Q5 (first row's where a prompt has several), "
                    "every row with a Llama Guard 3 hazard category (S3/S5/S7/S14) in extra; OOD tests only",
        text_field="instruction", family_field="extra.prompt_complexity_cate", label_field=None, dedup=True,
        drop_fields=_ANSWER_FIELDS))
    register_dataset(DatasetSpec(
        "xstest_prompts", "judge_labels/xstest/rows.jsonl.gz", "from_column", True, "",
        description="XSTest's 450 prompts (250 safe that look unsafe, 200 unsafe: label from extra.prompt_is_unsafe), "
                    "written outside this project, family = XSTest prompt type (18 types of 25); the same prompts "
                    "as `xstest` but one; OOD tests only",
        text_field="instruction", family_field="extra.prompt_type", label_field="extra.prompt_is_unsafe", dedup=True,
        drop_fields=_ANSWER_FIELDS))


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
    if not spec.url:
        raise DataError(f"dataset {spec.name!r} has no public source in this form: it is read from the data "
                        f"directory (set --data-dir or ${DATA_DIR_ENV} to a folder holding {spec.path})")
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
                 limit: PromptLimit | None = None, *, text_field: str | None = None, family_field: str | None = None,
                 dedup: bool | None = None) -> PromptSet:
    """Load a registered dataset by name, or a JSON / JSONL / CSV file of instructions (optionally gzip-compressed:
    ``.jsonl.gz``, ...) by path. ``limit``: every row's prompt must fit it (a DataError naming the row otherwise),
    checked before sampling ``n``.

    ``text_field`` / ``family_field``: dotted paths (``"extra.prompt_complexity_cate"``) of the prompt and of its
    family (jailbreak style / source category), overriding a registered dataset's; the family is kept as
    ``extra["family"]`` (a row's own ``family`` field is kept there too). ``dedup``: keep only the first row of each
    distinct prompt (a registered dataset's own setting when ``None``)."""
    if name_or_path in _REGISTRY:
        spec = _REGISTRY[name_or_path]
        path = resolve_path(name_or_path, data_dir)
        records = read_records(path, source=spec.name, label=spec.label, subset=spec.subset, limit=limit,
                               text_field=text_field or spec.text_field,
                               family_field=family_field or spec.family_field, label_field=spec.label_field,
                               dedup=spec.dedup if dedup is None else dedup, drop_fields=spec.drop_fields)
        pset = PromptSet(spec.name, records, is_test=spec.is_test)
    else:
        path = Path(name_or_path)
        if _format(path) is None:
            get_spec(name_or_path)  # raises the "unknown dataset" error
        if not path.is_file():
            raise DataError(f"dataset file not found: {path}")
        name = _stem(path)
        pset = PromptSet(name, read_records(path, source=name, label="unknown", limit=limit, text_field=text_field,
                                            family_field=family_field, dedup=bool(dedup)))
    if not pset.records:
        raise DataError(f"dataset {pset.name!r} ({path}) is empty")
    return pset.sample(n, seed)


_TEXT_KEYS = ("instruction", "prompt", "goal", "behavior", "text")
_FORMATS = (".json", ".jsonl", ".csv")
_MISSING = object()


def _format(path: Path) -> str | None:
    """``.json`` / ``.jsonl`` / ``.csv`` (of ``x.jsonl`` or ``x.jsonl.gz``), or ``None`` for any other name."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes and suffixes[-1] in _FORMATS else None


def _stem(path: Path) -> str:
    """``x`` of ``x.jsonl`` and of ``x.jsonl.gz``."""
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return Path(name).stem


def lookup(row: dict, field: str):
    """The value at ``field`` in ``row``: the key itself, else a dotted path into nested objects
    (``"extra.prompt_complexity_cate"``); :data:`_MISSING` when absent."""
    if field in row:
        return row[field]
    value = row
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _without(row: dict, fields: tuple[str, ...]) -> dict:
    """``row`` less the dotted paths ``fields`` (nested objects copied, never changed in place)."""
    out = dict(row)
    for field in fields:
        head, _, rest = field.partition(".")
        if field in out:
            del out[field]
        elif rest and isinstance(out.get(head), dict):
            out[head] = _without(out[head], (rest,))
    return out


def _label_of(value, label: str) -> str:
    """A row's label: with ``label == "from_column"``, safe / unsafe (or a boolean "is unsafe") → harmless /
    harmful; otherwise the value itself when it is harmful / harmless. Anything else is ``unknown``."""
    if label == "from_column":
        if isinstance(value, bool):
            return "harmful" if value else "harmless"
        value = {"safe": "harmless", "unsafe": "harmful"}.get(value) if isinstance(value, str) else None
    return value if value in ("harmful", "harmless") else "unknown"


def _record_from(obj, path: Path, where: str, source: str, label: str, text_field: str | None = None,
                 family_field: str | None = None, label_field: str | None = "label",
                 drop_fields: tuple[str, ...] = ()) -> PromptRecord:
    if isinstance(obj, str):
        text, row = obj, {}
    elif isinstance(obj, dict):
        key = text_field if text_field is not None else next((k for k in _TEXT_KEYS if k in obj), None)
        if key is None:
            raise DataError(f"{path}: {where} has none of the fields {_TEXT_KEYS}")
        text, row = lookup(obj, key), obj
        if text is _MISSING:
            raise DataError(f"{path}: {where} has no field {key!r}")
    else:
        raise DataError(f"{path}: {where} is neither a string nor an object")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{path}: {where} has an empty instruction")
    if label_field is None:
        row_label = _label_of(label, "")
    else:
        value = lookup(row, label_field)
        row_label = _label_of(label if value is _MISSING and label != "from_column" else value, label)
    # a named text field leaves the other text-like fields in extra (e.g. the plain instruction of a wrapped prompt)
    skip = {"category", "label", "jailbreak_family", *(_TEXT_KEYS if text_field is None else (text_field,))}
    extra = {k: v for k, v in _without(row, drop_fields).items() if k not in skip}
    if family_field is not None:
        family = lookup(row, family_field)
        if family is _MISSING or family is None or family == "":
            pass  # this row has none (a row's own ``family`` field, if any, stays)
        elif isinstance(family, str | int | float | bool):
            extra["family"] = str(family)
        else:
            raise DataError(f"{path}: {where}: the family field {family_field!r} holds a {type(family).__name__}, "
                            "not a string")
    return PromptRecord(text.strip(), row_label, source, row.get("category") or row.get("type"),
                        row.get("jailbreak_family"), extra)


def _json_lines(text: str, path: Path) -> list[tuple[str, object]]:
    """``(line N, object)`` of each non-blank line: parsed one by one, so an error names the file's line (a
    JSONDecodeError of one line always says line 1). Lines end at ``\\n`` only: a JSON string may hold U+2028 or
    other characters that ``str.splitlines`` would break on."""
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                rows.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: malformed JSON on line {n} (column {e.colno}): {e.msg}") from None
    return rows


def _read_text(path: Path) -> str:
    """The file's text, gunzipped when its name ends in ``.gz``; one DataError for an unreadable, non-UTF-8 or
    corrupt / truncated gzip file."""
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return f.read()
        return path.read_text(encoding="utf-8")
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: not a valid gzip file ({e or type(e).__name__})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from e


def read_records(path: Path, source: str, label: str, subset: str | None = None,
                 limit: PromptLimit | None = None, *, text_field: str | None = None, family_field: str | None = None,
                 label_field: str | None = "label", dedup: bool = False,
                 drop_fields: tuple[str, ...] = ()) -> list[PromptRecord]:
    """The records of ``path`` (see :func:`load_dataset`); with ``dedup``, the first row of each distinct prompt
    (file order), its ``extra["n_rows"]`` the number of rows with that prompt."""
    fmt = _format(path)
    text = _read_text(path)
    try:
        if fmt == ".json":
            items = json.loads(text)
            if not isinstance(items, list):
                raise DataError(f"{path}: expected a JSON list of instructions, got {type(items).__name__}")
            rows = [(f"item {i}", r) for i, r in enumerate(items, 1)]
        elif fmt == ".jsonl":
            rows = _json_lines(text, path)
        else:
            reader = csv.DictReader(text.splitlines())
            if not reader.fieldnames or not any(k in reader.fieldnames for k in (*_TEXT_KEYS, text_field)):
                raise DataError(f"{path}: CSV needs a column named one of {_TEXT_KEYS}")
            rows = [(f"line {reader.line_num}", r) for r in reader]  # line_num: where the row ends (header = line 1)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON: {e}") from e
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV: {e}") from e
    if subset is not None:
        rows = [(w, r) for w, r in rows if isinstance(r, dict) and r.get("label") == subset]
    if family_field is not None and rows and not any(
            isinstance(r, dict) and lookup(r, family_field) is not _MISSING for _, r in rows):
        raise DataError(f"{path}: no row has the family field {family_field!r}")
    records = [_record_from(r, path, where, source, label, text_field, family_field, label_field, drop_fields)
               for where, r in rows]
    if limit is not None:
        for (where, _), rec in zip(rows, records, strict=True):
            check_length(limit, rec.instruction, f"{source!r} ({path})", where)
    return _dedup(records) if dedup else records


def _dedup(records: list[PromptRecord]) -> list[PromptRecord]:
    counts: dict[str, int] = {}
    first: dict[str, PromptRecord] = {}
    for r in records:
        counts[r.instruction] = counts.get(r.instruction, 0) + 1
        first.setdefault(r.instruction, r)
    return [replace(r, extra={**r.extra, "n_rows": counts[t]}) for t, r in first.items()]
