"""Paired comparison of two evaluations of the same prompts (e.g. a model with and without an intervention).

Rates on a few hundred prompts differ by a few points from run to run of anything that perturbs greedy decoding, so
two conditions are compared on the *same* prompts: which prompts carry a label in one run and not in the other, and
McNemar's exact test on those discordant prompts (the unpaired Wilson intervals of ``eval`` are far wider).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import model_serializer, model_validator

from refusal_sae.checks import read_user_text
from refusal_sae.errors import ConfigError, DataError, MismatchError
from refusal_sae.runs.io import jsonl_objects
from refusal_sae.scoring.judge import JUDGEMENTS
from refusal_sae.scoring.stats import mcnemar_exact


@dataclass(frozen=True)
class PairedComparison:
    label: str
    n: int
    count_a: int  # prompts labelled `label` in run A
    count_b: int
    only_a: int  # labelled in A, not in B (discordant)
    only_b: int
    p_value: float  # McNemar exact, two-sided, on only_a vs only_b
    only_a_prompts: list[str]
    only_b_prompts: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def read_eval_rows(path: Path) -> list[dict]:
    """The rows of an ``eval`` JSONL (one object per prompt with ``instruction`` and ``judgement``), or of the eval
    folder of a run directory (its ``rows.jsonl``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "rows.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows = []
    for n, row in jsonl_objects(read_user_text(path, "an eval JSONL").splitlines(), path):
        if "instruction" not in row or row.get("judgement") not in JUDGEMENTS:
            raise DataError(f"{path}:{n}: expected an eval row with 'instruction' and a judgement in {JUDGEMENTS}")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _check_paired(rows_a: list[dict], rows_b: list[dict]) -> None:
    if len(rows_a) != len(rows_b):
        raise MismatchError(f"the runs cover different prompt sets ({len(rows_a)} vs {len(rows_b)} rows)")
    for i, (a, b) in enumerate(zip(rows_a, rows_b, strict=True)):
        if a["instruction"] != b["instruction"]:
            raise MismatchError(f"row {i + 1} holds different prompts: {a['instruction'][:60]!r} vs {b['instruction'][:60]!r}")


def compare_evals(rows_a: list[dict], rows_b: list[dict], label: str = "complied") -> PairedComparison:
    """Compare two evaluations prompt by prompt; both must list the same prompts in the same order."""
    if label not in JUDGEMENTS:
        raise ConfigError(f"label must be one of {JUDGEMENTS}, not {label!r}")
    _check_paired(rows_a, rows_b)
    in_a = [r["judgement"] == label for r in rows_a]
    in_b = [r["judgement"] == label for r in rows_b]
    only_a = [r["instruction"] for r, x, y in zip(rows_a, in_a, in_b, strict=True) if x and not y]
    only_b = [r["instruction"] for r, x, y in zip(rows_a, in_a, in_b, strict=True) if y and not x]
    return PairedComparison(label=label, n=len(rows_a), count_a=sum(in_a), count_b=sum(in_b),
                            only_a=len(only_a), only_b=len(only_b), p_value=mcnemar_exact(len(only_a), len(only_b)),
                            only_a_prompts=only_a, only_b_prompts=only_b)


def compare_files(pairs: list[tuple[Path, Path]], label: str = "complied") -> PairedComparison:
    """Compare pairs of ``eval`` JSONLs (A, B), each pair over the same prompts, pooled into one paired comparison
    (e.g. JailbreakBench and HarmBench test with and without an intervention)."""
    if not pairs:
        raise ConfigError("no eval files to compare")
    rows_a: list[dict] = []
    rows_b: list[dict] = []
    for path_a, path_b in pairs:
        ra, rb = read_eval_rows(path_a), read_eval_rows(path_b)
        _check_paired(ra, rb)  # each pair on its own: pooled rows could line up by accident
        rows_a += ra
        rows_b += rb
    return compare_evals(rows_a, rows_b, label)


def rejudge_rows(rows: list[dict], judge) -> list[dict]:
    """``rows`` of an eval with their completions judged again by ``judge``; the earlier label is kept as
    ``previous_judgement``, so one file holds old and new side by side."""
    labels = judge.judge([r["instruction"] for r in rows], [r["completion"] for r in rows])
    return [r | {"judgement": j.label, "reason": j.reason, "relevance": j.relevance, "judge_score": j.score,
                 "previous_judgement": r["judgement"]} for r, j in zip(rows, labels, strict=True)]


def group_counts(rows: list[dict], key: str) -> list[dict]:
    """Per value of ``rows``' ``key`` (in order of first appearance): counts under the earlier judge
    (``previous_judgement``) and the new one (``judgement``), paired on "complied" (McNemar exact)."""
    if any(key not in r for r in rows):
        raise DataError(f"--by {key}: not every row has the key {key!r}")
    out = []
    for g in dict.fromkeys(str(r[key]) for r in rows):
        sub = [r for r in rows if str(r[key]) == g]
        before = [r["previous_judgement"] == "complied" for r in sub]
        after = [r["judgement"] == "complied" for r in sub]
        ob = sum(b and not a for b, a in zip(before, after, strict=True))
        oa = sum(a and not b for b, a in zip(before, after, strict=True))
        out.append({"group": g, "n": len(sub), "complied_before": sum(before), "complied_after": sum(after),
                    "only_before": ob, "only_after": oa, "p_value": mcnemar_exact(ob, oa),
                    "refused_before": sum(r["previous_judgement"] == "refused" for r in sub),
                    "refused_after": sum(r["judgement"] == "refused" for r in sub)})
    return out


def compare_labels(prompts: list[str], labels_a: list[str], labels_b: list[str],
                   label: str = "complied") -> PairedComparison:
    """:func:`compare_evals` for two lists of judged labels of the same prompts (in-memory stage results)."""
    return compare_evals([{"instruction": p, "judgement": x} for p, x in zip(prompts, labels_a, strict=True)],
                         [{"instruction": p, "judgement": x} for p, x in zip(prompts, labels_b, strict=True)], label)


@dataclass
class PairedRow:
    """One paired comparison inside a stage result: condition ``a`` against ``b`` on the same prompts, without the
    prompt lists of :class:`PairedComparison` (the search table, the interactions K sweep, the hardening curves).

    Saved as ``{k?, a, b, group?, label?, n, <counts>, only_a, only_b, p_value}``: ``k`` when the row belongs to one
    set size of a sweep; ``group`` and ``label`` when the result compares several prompt groups or labels, with the
    counts saved as ``count_a`` / ``count_b``; otherwise the counts are named after the label (``complied_a`` /
    ``complied_b``), which is then implied. The saved layout is this class's, not the result's: results that hold
    rows stay plain field declarations."""

    a: str
    b: str
    n: int
    count_a: int  # prompts labelled `label` under a
    count_b: int
    only_a: int  # labelled under a, not under b (discordant)
    only_b: int
    p_value: float  # McNemar exact, two-sided, on only_a vs only_b
    label: str = "complied"
    group: str | None = None  # which prompts (e.g. jailbreak, xstest), when the result compares several groups
    k: int | None = None  # the set size, in a sweep over sizes

    @classmethod
    def compare(cls, a: str, b: str, prompts: Sequence[str], labels_a: Sequence[str], labels_b: Sequence[str],
                label: str = "complied", group: str | None = None, k: int | None = None) -> PairedRow:
        """``a``'s labels against ``b``'s on the same ``prompts`` (:func:`compare_labels`)."""
        pc = compare_labels(list(prompts), list(labels_a), list(labels_b), label)
        return cls(a, b, pc.n, pc.count_a, pc.count_b, pc.only_a, pc.only_b, pc.p_value, label, group, k)

    @property
    def complied_a(self) -> int:
        """``count_a`` of a comparison of complied answers (the name an ungrouped row is saved under)."""
        return self._complied(self.count_a)

    @property
    def complied_b(self) -> int:
        return self._complied(self.count_b)

    def _complied(self, count: int) -> int:
        if self.label != "complied":
            raise AttributeError(f"a paired row on {self.label!r} has no complied counts; read count_a / count_b")
        return count

    @model_serializer(mode="plain")
    def _saved(self) -> dict:
        out: dict = {} if self.k is None else {"k": self.k}
        out |= {"a": self.a, "b": self.b}
        if self.group is None:
            names = (f"{self.label}_a", f"{self.label}_b")
        else:
            out |= {"group": self.group, "label": self.label}
            names = ("count_a", "count_b")
        return out | {"n": self.n, names[0]: self.count_a, names[1]: self.count_b, "only_a": self.only_a,
                      "only_b": self.only_b, "p_value": self.p_value}

    @model_validator(mode="before")
    @classmethod
    def _from_saved(cls, data):
        if not isinstance(data, dict) or "count_a" in data:
            return data
        label = next((key[:-2] for key in data if key.endswith("_a") and key != "only_a"), None)
        if label is None:
            return data  # let validation name the missing counts
        rest = {key: v for key, v in data.items() if key not in (f"{label}_a", f"{label}_b")}
        return rest | {"label": label, "count_a": data[f"{label}_a"], "count_b": data.get(f"{label}_b")}
