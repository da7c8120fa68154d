"""Choose the set size ``K*`` and the clamp ``c`` on validation prompts, by a rule fixed before any test data is read.

For every ``(K, c)`` of the grid, the global set's top ``K`` is clamped at ``c`` and the model answers the validation
prompts that it refuses unclamped (greedy generations, judged). Eligible: the clamp leaves no more of the answers
degenerate than the bound (``max_degenerate``, or — by default — the refusal-direction ablation's own degenerate share
on the same prompts when that is higher: a feature clamp need not be more fluent than the intervention it refines),
and ``n_random`` random sets of the same size, layers and clamp flip at most ``max_random_flip`` of the prompts to
complied on average. Chosen: the eligible ``(K, c)`` with the most complied answers; ties go to the smaller ``K``,
then the milder clamp. Random controls are judged in the order of that ranking until one passes (the rest of the
grid's controls cannot change the choice, so they are not run). When nothing is eligible, the row with the best
complied-minus-random-flip margin is reported, marked ``met = False``, and always with its own random controls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from refusal_sae.errors import DataError
from refusal_sae.interventions.engine import InterventionEngine
from refusal_sae.runs.checkpoint import Checkpoint
from refusal_sae.scoring.judge import COMPLIED, DEGENERATE, REFUSED, Judge
from refusal_sae.search.featureset import FeatureSet, clamp_set, random_sets


@dataclass
class GridRow:
    k: int
    c: float
    n: int
    complied: int
    degenerate: int
    refused: int
    random_flip: float | None = None  # mean share of prompts the random sets flip to complied (None: not run)
    random_flips: list[float] | None = None
    eligible: bool | None = None
    labels: list[str] | None = None  # per prompt, in the order of ChoiceResult.prompts (None: a result saved before)

    @property
    def complied_rate(self) -> float:
        return self.complied / self.n

    @property
    def degenerate_rate(self) -> float:
        return self.degenerate / self.n


def counts(labels: Sequence[str]) -> tuple[int, int, int]:
    return sum(x == COMPLIED for x in labels), sum(x == DEGENERATE for x in labels), sum(x == REFUSED for x in labels)


def judged(engine: InterventionEngine, judge: Judge, prompts: Sequence[str], sets: Sequence[list],
           max_new_tokens: int, batch_size: int, desc: str, checkpoint: Checkpoint | None = None,
           keys: Sequence[str] = ()) -> list[list[str]]:
    """Judged labels ``[n_sets][n_prompts]`` of greedy answers under each intervention set. With a ``checkpoint``
    (and one key per set), each set's labels are kept as soon as they are judged and sets judged before an
    interrupt are not generated again (the engine generates one set at a time, so nothing is lost by it)."""
    if checkpoint is None:
        outs = engine.generate(prompts, sets, max_new_tokens, batch_size, progress=True, desc=desc)
        return [[j.label for j in judge.judge(prompts, o)] for o in outs]
    out = []
    for i, (key, s) in enumerate(zip(keys, sets, strict=True)):
        labels = checkpoint.get(key)
        if labels is None:
            (o,) = engine.generate(prompts, [s], max_new_tokens, batch_size, progress=True,
                                   desc=f"{desc} [{i + 1}/{len(sets)}]")
            labels = [j.label for j in judge.judge(prompts, o)]
            checkpoint.put(key, labels)
        out.append(list(labels))
    return out


def choose_k_and_clamp(engine: InterventionEngine, judge: Judge, saes: Mapping[int, object], prompts: Sequence[str],
                       ranking: FeatureSet, alive: Mapping, top_k: Sequence[int], clamps: Sequence[float],
                       n_random: int, max_random_flip: float, max_degenerate: float, seed: int,
                       max_new_tokens: int = 64, batch_size: int = 32,
                       checkpoint: Checkpoint | None = None) -> tuple[list[GridRow], GridRow, bool]:
    """The grid rows, the chosen row, and whether it met the rule (see the module docstring). ``checkpoint``: keep
    each judged set (grid cell, random control) as it is made, so an interrupted choice resumes at the next one."""
    grid = [(k, c) for c in clamps for k in top_k]
    labels = judged(engine, judge, prompts, [clamp_set(saes, ranking.take(k), c) for k, c in grid],
                    max_new_tokens, batch_size, "K*, c grid", checkpoint, [f"grid k={k} c={c:g}" for k, c in grid])
    rows = [GridRow(k, c, len(prompts), *counts(lab), labels=list(lab)) for (k, c), lab in zip(grid, labels, strict=True)]
    order = sorted(rows, key=lambda r: (-r.complied, r.k, abs(r.c)))

    def run_controls(row: GridRow) -> None:
        controls = random_sets(alive, ranking.take(row.k), n_random, seed + row.k)
        flips = judged(engine, judge, prompts, [clamp_set(saes, s, row.c) for s in controls], max_new_tokens,
                       batch_size, f"random controls K={row.k} c={row.c:g}", checkpoint,
                       [f"random k={row.k} c={row.c:g} #{i}" for i in range(len(controls))])
        row.random_flips = [sum(x == COMPLIED for x in lab) / len(prompts) for lab in flips]
        row.random_flip = sum(row.random_flips) / len(row.random_flips)

    for row in order:
        if row.degenerate_rate > max_degenerate:
            row.eligible = False
            continue
        run_controls(row)
        row.eligible = row.random_flip <= max_random_flip
        if row.eligible:
            return rows, row, True
    tested = [r for r in rows if r.random_flip is not None]
    if not tested:  # every row failed the degenerate bound: the most compliant one still gets its controls
        run_controls(order[0])
        tested = [order[0]]
    best = max(tested, key=lambda r: r.complied_rate - r.random_flip)
    return rows, best, False


def val_refused(engine: InterventionEngine, judge: Judge, prompts: Sequence[str], max_new_tokens: int,
                batch_size: int) -> list[str]:
    """The prompts the unclamped model refuses (the ones a clamp can flip)."""
    (labels,) = judged(engine, judge, prompts, [[]], max_new_tokens, batch_size, "unclamped")
    refused = [p for p, lab in zip(prompts, labels, strict=True) if lab == REFUSED]
    if not refused:
        raise DataError(f"the model refuses none of the {len(prompts)} prompts, so no clamp can flip any: is it a "
                        "refusing chat model, and is the judge right for it?")
    return refused
