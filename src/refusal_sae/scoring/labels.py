"""The hand-labelled judge set: model answers labelled refused / complied / degenerate by a person.

The files live in ``artifacts/judge_labels/``: ``answers.jsonl`` (written by ``scripts/make_judge_answers.py``:
``id``, ``condition``, ``source`` = {dataset, index, sha}, ``jailbreak`` = {family, seed, template} or null,
``answer``, ``split``) and ``labels.jsonl`` (``id``, ``label``, ``rationale``, optional ``confidence``), labelled
by reading each answer against ``docs/judge-rubric.md``. Instructions are not stored: each is re-read from the
dataset by (dataset, row index) and checked against the stored sha256 prefix, so a changed dataset file is a
:class:`DataError`, not a silently relabelled row.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from refusal_sae.checks import read_user_text
from refusal_sae.errors import ConfigError, DataError
from refusal_sae.runs.io import jsonl_objects

LABELS = ("refused", "complied", "degenerate")
SPLITS = ("dev", "test")
CONFIDENCES = ("high", "low")
LABELS_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "judge_labels"
ANSWERS_FILE = "answers.jsonl"
LABELS_FILE = "labels.jsonl"


@dataclass(frozen=True)
class LabelledAnswer:
    id: str
    condition: str  # "<intervention>/<prompt kind>", e.g. "ablate/harmful"
    instruction: str  # the plain instruction, re-read from its dataset
    prompt: str  # what the model was given: the instruction, or its jailbreak wrapping
    answer: str
    label: str  # refused | complied | degenerate
    rationale: str
    split: str  # dev | test
    confidence: str = "high"  # high | low
    source: dict = field(default_factory=dict, compare=False)  # {dataset, index, sha}
    jailbreak: dict | None = field(default=None, compare=False)  # {family, seed, template}
    producing_model: str = field(default="unknown", compare=False)  # the model that wrote the answer

    @property
    def intervention(self) -> str:
        return self.condition.split("/", 1)[0]


def sha12(text: str) -> str:
    """The reference checksum of an instruction: first 12 hex characters of sha256 of its UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"labelled-answer file not found: {path}")
    rows = []
    for n, row in jsonl_objects(read_user_text(path, "a JSONL file of labelled answers").splitlines(), path):
        if not isinstance(row.get("id"), str):
            raise DataError(f"{path}:{n}: expected an object with a string id")
        rows.append(row)
    return rows


def _by_id(rows: list[dict], path: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for row in rows:
        if row["id"] in out:
            raise DataError(f"{path}: id {row['id']!r} appears more than once")
        out[row["id"]] = row
    return out


class _Instructions:
    """Dataset rows by (name, index), each dataset read once; test splits refused."""

    def __init__(self, data_dir) -> None:
        self.data_dir = data_dir
        self._sets: dict[str, list[str]] = {}

    def get(self, ref: dict, where: str) -> str:
        from refusal_sae.data import load_dataset
        from refusal_sae.data.registry import get_spec

        try:
            name, index, sha = ref["dataset"], ref["index"], ref["sha"]
        except (KeyError, TypeError):
            raise DataError(f"{where}: source must be {{dataset, index, sha}}, got {ref!r}") from None
        spec = get_spec(name)  # DataError for an unknown dataset
        if spec.is_test:
            raise DataError(f"{where}: references the test split {name!r}; labelled answers use training / "
                            "validation prompts only")
        if name not in self._sets:
            self._sets[name] = load_dataset(name, self.data_dir).instructions
        rows = self._sets[name]
        if not isinstance(index, int) or not 0 <= index < len(rows):
            raise DataError(f"{where}: row {index!r} is out of range for {name} ({len(rows)} rows)")
        text = rows[index]
        if sha12(text) != sha:
            raise DataError(f"{where}: {name} row {index} has sha {sha12(text)}, the reference says {sha}: the "
                            "dataset file changed or the reference is wrong")
        return text


def load_labelled(split: str | None = None, data_dir=None, labels_dir: str | Path | None = None) -> list[LabelledAnswer]:
    """Every labelled answer (or those of one ``split``), in the order of ``answers.jsonl``.

    Checks, each a :class:`DataError`: every answer has exactly one label in :data:`LABELS` and every label an
    answer; instructions re-read from their datasets match their sha; no test split is referenced; jailbreak prompts
    rebuild; one instruction is never in both splits.
    """
    from refusal_sae.data.jailbreaks import wrap

    if split is not None and split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {SPLITS} or None")
    folder = Path(labels_dir) if labels_dir is not None else LABELS_DIR
    a_path, l_path = folder / ANSWERS_FILE, folder / LABELS_FILE
    answers = _by_id(_read_jsonl(a_path), a_path)
    labels = _by_id(_read_jsonl(l_path), l_path)
    missing = [i for i in answers if i not in labels]
    extra = [i for i in labels if i not in answers]
    if missing or extra:
        raise DataError(f"answers and labels disagree: {len(missing)} answers unlabelled (e.g. {missing[:3]}), "
                        f"{len(extra)} labels without an answer (e.g. {extra[:3]})")
    source = _Instructions(data_dir)
    out: list[LabelledAnswer] = []
    split_of: dict[str, str] = {}
    for aid, row in answers.items():
        where = f"{a_path.name} id {aid}"
        lab = labels[aid]
        if lab.get("label") not in LABELS:
            raise DataError(f"{l_path.name} id {aid}: label {lab.get('label')!r} is not one of {LABELS}")
        conf = lab.get("confidence", "high")
        if conf not in CONFIDENCES:
            raise DataError(f"{l_path.name} id {aid}: confidence {conf!r} is not one of {CONFIDENCES}")
        if not str(lab.get("rationale", "")).strip():
            raise DataError(f"{l_path.name} id {aid}: empty rationale")
        if row.get("split") not in SPLITS:
            raise DataError(f"{where}: split {row.get('split')!r} is not one of {SPLITS}")
        if not isinstance(row.get("answer"), str) or not isinstance(row.get("condition"), str):
            raise DataError(f"{where}: needs a string answer and condition")
        instruction = source.get(row.get("source"), where)
        key = " ".join(instruction.lower().split())
        if split_of.setdefault(key, row["split"]) != row["split"]:
            raise DataError(f"{where}: its instruction is in both the dev and the test split")
        jb = row.get("jailbreak")
        prompt = instruction
        if jb is not None:
            try:
                prompt = wrap(instruction, jb["family"], jb["seed"])
            except (KeyError, TypeError):
                raise DataError(f"{where}: jailbreak must be {{family, seed}}, got {jb!r}") from None
            except ConfigError as e:
                raise DataError(f"{where}: {e}") from None
        if split is not None and row["split"] != split:
            continue
        out.append(LabelledAnswer(aid, row["condition"], instruction, prompt, row["answer"], lab["label"],
                                  lab["rationale"], row["split"], conf, row["source"], jb,
                                  "smollm2-135m" if row["condition"].startswith("base/") else "smollm2-135m-refusing"))
    return out


def count_table(items: Iterable[LabelledAnswer], by: Sequence[str] = ("condition",)) -> dict[tuple, dict[str, int]]:
    """Counts per group (attributes ``by``, e.g. condition and split) × label; every label present, 0 when absent."""
    table: dict[tuple, Counter] = {}
    for it in items:
        table.setdefault(tuple(getattr(it, b) for b in by), Counter())[it.label] += 1
    return {k: {lab: c[lab] for lab in LABELS} for k, c in sorted(table.items())}


def format_table(items: Sequence[LabelledAnswer], by: Sequence[str] = ("condition",)) -> str:
    """A plain-text table of :func:`count_table` with a total row."""
    table = count_table(items, by)
    head = " | ".join(by) + " | n | " + " | ".join(LABELS)
    lines = [head, "|".join("---" for _ in range(len(by) + 1 + len(LABELS)))]
    for key, c in table.items():
        lines.append(" | ".join(map(str, key)) + f" | {sum(c.values())} | " + " | ".join(str(c[lab]) for lab in LABELS))
    tot = Counter(it.label for it in items)
    first = " | ".join(["total"] + [""] * (len(by) - 1))
    lines.append(first + f" | {len(items)} | " + " | ".join(str(tot[lab]) for lab in LABELS))
    return "\n".join(lines)
