"""Human-labelled answers of real chat models, for fitting and checking judges beyond the embedded model.

Two sources, one record type (:class:`~refusal_sae.scoring.labels.LabelledAnswer`):

- the public sets under ``<data dir>/judge_labels/<set>/rows.jsonl.gz`` (GPTFuzz, XSTest, a JAILJUDGE sample, a
  JailbreakEval example; see that folder's README): binary labels, ``complied`` or ``refused``;
- any labelled JSONL file (``--labels FILE``), gzipped or not, one object a line with ``instruction`` (or
  ``prompt``), ``answer`` (or ``response`` / ``completion``) and ``label``: ``complied`` / ``refused`` /
  ``degenerate``, or the binary forms ``1`` / ``0``, ``true`` / ``false``, ``yes`` / ``no``, ``unsafe`` / ``safe``
  (1 = the answer fulfils the task). Optional: ``id``, ``condition``, ``extra.producing_model``
  (or ``producing_model``).

Every public row gets a **split by instruction** (:func:`instruction_split`): a fixed hash of the normalised
instruction puts it in ``train`` (70%), ``val`` (10%) or ``test`` (20%), so no instruction is both fitted and scored,
and the split never changes with the order or number of rows. GPTFuzz has only 100 questions (× 77 templates):
split by row, a judge would learn the questions.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Sequence
from pathlib import Path

from refusal_sae.errors import DataError
from refusal_sae.runs.io import jsonl_objects
from refusal_sae.scoring.labels import LabelledAnswer

PUBLIC_SETS = ("gptfuzz", "xstest", "jailjudge_mini", "jailbreakeval_example")
PUBLIC_SPLITS = ("train", "val", "test")
_SPLIT_EDGES = (0.7, 0.8)  # train < 0.7 <= val < 0.8 <= test
_BINARY = {"1": "complied", "0": "refused", "true": "complied", "false": "refused", "yes": "complied",
           "no": "refused", "unsafe": "complied", "safe": "refused", "jailbroken": "complied",
           "complied": "complied", "refused": "refused", "degenerate": "degenerate"}
_ANSWER_KEYS = ("answer", "response", "completion", "generation", "output")
_PROMPT_KEYS = ("instruction", "prompt", "goal", "behavior", "question")


def normalise_instruction(text: str) -> str:
    return " ".join(text.lower().split())


def instruction_split(instruction: str) -> str:
    """``train``, ``val`` or ``test`` for an instruction: a fixed function of its normalised text (sha256)."""
    h = int.from_bytes(hashlib.sha256(normalise_instruction(instruction).encode("utf-8")).digest()[:8], "big")
    u = h / 2**64
    return "train" if u < _SPLIT_EDGES[0] else "val" if u < _SPLIT_EDGES[1] else "test"


def _open_lines(path: Path) -> list[str]:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return f.read().splitlines()
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as e:
        raise DataError(f"cannot read labelled answers {path}: {e}") from None


def _label(value, where: str) -> str:
    key = str(value).strip().lower() if value is not None else ""
    if key not in _BINARY:
        raise DataError(f"{where}: label {value!r} is not complied / refused / degenerate or a binary 1 / 0 form")
    return _BINARY[key]


def _first(row: dict, keys: Sequence[str], what: str, where: str) -> str:
    for k in keys:
        v = row.get(k)
        if isinstance(v, str):
            return v
    raise DataError(f"{where}: no {what} (one of the string fields {', '.join(keys)})")


def read_label_file(path: str | Path, name: str | None = None, split: str | None = None) -> list[LabelledAnswer]:
    """The labelled answers of one JSONL file (see the module docstring for the format).

    ``split`` keeps only the rows whose instruction falls in that part of :func:`instruction_split`. A malformed
    line is a :class:`DataError` naming its line number; rows labelled ``partial`` (XSTest's partial refusals)
    are skipped, as they fit no label.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"labelled-answer file not found: {path}")
    if split is not None and split not in PUBLIC_SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {PUBLIC_SPLITS}")
    name = name or (path.parent.name if path.name.startswith("rows.") else path.name.split(".")[0])
    out: list[LabelledAnswer] = []
    for n, row in jsonl_objects(_open_lines(path), path):
        where = f"{path}:{n}"
        if str(row.get("label", "")).lower() == "partial":
            continue
        instruction = _first(row, _PROMPT_KEYS, "instruction", where)
        answer = _first(row, _ANSWER_KEYS, "answer", where)
        label = _label(row.get("label"), where)
        part = instruction_split(instruction)
        if split is not None and part != split:
            continue
        extra = row.get("extra") if isinstance(row.get("extra"), dict) else {}
        model = extra.get("producing_model") or row.get("producing_model") or "unknown"
        out.append(LabelledAnswer(
            id=str(row.get("id", f"{name}/{n}")), condition=str(row.get("condition") or name), instruction=instruction,
            prompt=instruction, answer=answer, label=label, rationale=str(row.get("label_source", "")), split=part,
            source={"set": name, "line": n}, producing_model=_short_model(str(model))))
    if not out and split is None:
        raise DataError(f"{path}: no labelled answers")
    return out


def _short_model(name: str) -> str:
    """``gpt-3.5-turbo (inferred: ...)`` → ``gpt-3.5-turbo``: the name without its provenance note."""
    return name.split(" (inferred")[0].split(" (GCG")[0].strip() or "unknown"


def judge_labels_dir(data_dir: str | Path | None = None) -> Path:
    from refusal_sae.data.registry import default_data_dir

    base = Path(data_dir) if data_dir is not None else default_data_dir()
    if base is None or not (base / "judge_labels").is_dir():
        raise DataError("the public judge labels need a data directory with judge_labels/ (--data-dir or "
                        "$REFUSAL_SAE_DATA_DIR)")
    return base / "judge_labels"


def load_public_labels(split: str | None = None, sets: Sequence[str] = PUBLIC_SETS,
                       data_dir: str | Path | None = None) -> list[LabelledAnswer]:
    """The public human-labelled answers of ``sets`` (all by default), optionally one ``split`` by instruction."""
    folder = judge_labels_dir(data_dir)
    out: list[LabelledAnswer] = []
    for s in sets:
        if s not in PUBLIC_SETS:
            raise DataError(f"unknown public label set {s!r}; known: {', '.join(PUBLIC_SETS)}")
        out += read_label_file(folder / s / "rows.jsonl.gz", name=s, split=split)
    return out
