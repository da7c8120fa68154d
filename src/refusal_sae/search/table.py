"""The comparison table of the first seed paper, held out: which clamps make the model comply with harmful prompts
it refuses, at what capability cost, against the direction ablation ceiling, the baselines and random controls.

Prompts: JailbreakBench + HarmBench test (held out from every fit and choice of the search) that the unclamped model
refuses (judged). Every row clamps at the search's chosen ``c`` (the direction row ablates instead); sizes are the
chosen ``K*`` unless the row says otherwise. For each row: complied / degenerate / refused with Wilson 95% CIs, the
number of features, and the capability cost on held-out harmless prompts: KL(clean ‖ clamped) of the next-token
distributions over the clean model's own greedy answers, and over-refusal (judged). Paired comparisons (McNemar
exact, the project's :mod:`refusal_sae.scoring.compare`) of ours against each baseline and against the ablation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from refusal_sae.direction.result import DirectionResult
from refusal_sae.errors import DataError
from refusal_sae.interventions.directional import DirectionAblation
from refusal_sae.interventions.engine import InterventionEngine
from refusal_sae.models.handle import ModelHandle
from refusal_sae.runs import StageResult
from refusal_sae.saes.loading import SaeSet
from refusal_sae.scoring.compare import PairedRow
from refusal_sae.scoring.judge import COMPLIED, DEGENERATE, REFUSED, Judge
from refusal_sae.scoring.stats import wilson_interval
from refusal_sae.search.attribution import la_ig
from refusal_sae.search.candidates import per_prompt_sets, prefilter_mask
from refusal_sae.search.featureset import FeatureSet, clamp_set, random_sets
from refusal_sae.search.result import CandidatesResult, ChoiceResult, GreedyResult


@dataclass
class TableRow:
    name: str
    what: str
    n_features: float  # per-prompt rows: the mean size
    n: int
    complied: int
    degenerate: int
    refused: int
    complied_ci: tuple[float, float]
    degenerate_ci: tuple[float, float]
    harmless_kl: float | None = None  # capability cost (None: not defined for per-prompt sets)
    harmless_refused: int | None = None
    harmless_n: int | None = None
    draws: list[float] = field(default_factory=list)  # random controls: complied rate of each draw


@dataclass
class SearchTable(StageResult):
    kind = "search_table"
    jsonl_fields = ("generations",)

    datasets: list[str]
    n_total: int
    n_refused: int  # the prompts the unclamped model refuses: the table's prompts
    k: int
    c: float
    rows: list[TableRow]
    paired: list[PairedRow]
    generations: list[dict] = field(default_factory=list)  # {row, instruction, completion, judgement}


def row_of(name: str, what: str, n_features: float, labels: Sequence[str]) -> TableRow:
    n = len(labels)
    c, d, r = (sum(x == lab for x in labels) for lab in (COMPLIED, DEGENERATE, REFUSED))
    return TableRow(name, what, n_features, n, c, d, r, wilson_interval(c, n), wilson_interval(d, n))


def build_table(handle: ModelHandle, saes: SaeSet, engine: InterventionEngine, judge: Judge, direction: DirectionResult,
                cands: CandidatesResult, choice: ChoiceResult, greedy: GreedyResult, prompts: Sequence[str],
                harmless: Sequence[str], datasets: Sequence[str], n_random: int, ig_steps: int, k_per_layer: int,
                seed: int, max_new_tokens: int = 64, batch_size: int = 32, progress: bool = True) -> SearchTable:
    k, c = choice.k, choice.c

    def gen(sets: Sequence[list], desc: str) -> list[list[str]]:
        return engine.generate(prompts, sets, max_new_tokens, batch_size, progress, desc)

    def judge_all(outs: list[list[str]], on: Sequence[str]) -> list[list[str]]:
        return [[j.label for j in judge.judge(on, o)] for o in outs]

    clean = prompts
    (unclamped,) = gen([[]], "unclamped")  # as choose.val_refused, keeping the answers for the report's before/after
    (unclamped_labels,) = judge_all([unclamped], clean)
    kept = [i for i, lab in enumerate(unclamped_labels) if lab == REFUSED]
    if not kept:
        raise DataError(f"the model refuses none of the {len(clean)} held-out prompts, so no clamp can flip any")
    prompts = [clean[i] for i in kept]
    alive = {L: torch.tensor(ids) for L, ids in cands.alive.items()}
    ours = cands.ours.take(k)
    feature_rows: list[tuple[str, str, FeatureSet | None]] = [
        ("direction ablation (AS)", "the refusal direction ablated at every layer (the ceiling)", None),
        ("CosSim", "global top K* by decoder cosine, all searched layers", cands.cossim.take(k)),
        ("ActDiff", "global top K* by harmful − harmless mean max activation", cands.actdiff.take(k)),
        ("AP", "global top K* by attribution over all features (no prefilter)", cands.ap.take(k)),
        ("ours, global", "cosine prefilter + LA-IG, one set for all prompts", ours),
        ("cosine prefilter alone", f"all {k_per_layer} per-layer cosine candidates, no attribution", cands.prefilter),
        ("greedy minimal set", "greedy filtering of ours, global", greedy.minimal),
    ]
    sets = [[DirectionAblation(direction.direction)] if fs is None else clamp_set(saes, fs, c)
            for _, _, fs in feature_rows]
    completions = gen(sets, "table rows")
    labels = judge_all(completions, prompts)
    rows = [row_of(name, what, len(fs) if fs is not None else 0, lab)
            for (name, what, fs), lab in zip(feature_rows, labels, strict=True)]
    generations = [{"row": "unclamped", "instruction": clean[i], "completion": unclamped[i], "judgement": REFUSED}
                   for i in kept]
    generations += [{"row": name, "instruction": p, "completion": o, "judgement": lab}
                    for (name, _, _), outs, labs in zip(feature_rows, completions, labels, strict=True)
                    for p, o, lab in zip(prompts, outs, labs, strict=True)]
    # ours, per prompt: each prompt's own top K* of its attributions within the prefilter
    mask = prefilter_mask(cands.cosines if cands.direction_source == "selected" else cands.cosines_per_layer,
                          k_per_layer)
    attr = la_ig(handle, saes, cands.layers, direction.direction, prompts, cands.refusal_tokens, ig_steps,
                 max(1, batch_size // 2), progress)
    own = per_prompt_sets(attr, cands.layers, k, mask)
    pp_out = engine.generate_per_prompt(prompts, [clamp_set(saes, s, c) for s in own], max_new_tokens, batch_size,
                                        progress, "ours, per prompt")
    (pp_labels,) = judge_all([pp_out], prompts)
    rows.insert(4, row_of("ours, per-prompt", "cosine prefilter + LA-IG, a set per prompt",
                          sum(map(len, own)) / len(own), pp_labels))
    generations += [{"row": "ours, per-prompt", "instruction": p, "completion": o, "judgement": lab}
                    for p, o, lab in zip(prompts, pp_out, pp_labels, strict=True)]
    # random controls: same per-layer sizes as ours (K*) and as the minimal set, same clamp, pooled over draws
    for like, label in ((ours, "K*"), (greedy.minimal, "minimal size")):
        draws = random_sets(alive, like, n_random, seed + len(like))
        draw_labels = judge_all(gen([clamp_set(saes, s, c) for s in draws], f"random ({label})"), prompts)
        pooled = [x for lab in draw_labels for x in lab]
        row = row_of(f"random ({label})", f"{n_random} random sets of the same per-layer sizes as {label}",
                     len(like), pooled)
        row.draws = [sum(x == COMPLIED for x in lab) / len(lab) for lab in draw_labels]
        rows.append(row)
    # capability cost on harmless prompts: KL over the clean model's own answers, and over-refusal
    (clean_answers,) = engine.generate(harmless, [[]], max_new_tokens, batch_size, progress, "harmless answers")
    cost_sets = {name: s for (name, _, _), s in zip(feature_rows, sets, strict=True)}
    cost_sets["random (K*)"] = clamp_set(saes, random_sets(alive, ours, 1, seed + k)[0], c)
    names = list(cost_sets)
    kls = engine.answer_kl(harmless, clean_answers, [cost_sets[n] for n in names]).tolist()
    harmless_labels = [[j.label for j in judge.judge(harmless, o)]
                       for o in engine.generate(harmless, [cost_sets[n] for n in names], max_new_tokens, batch_size,
                                                progress, "harmless under clamps")]
    for name, kl, lab in zip(names, kls, harmless_labels, strict=True):
        row = next(r for r in rows if r.name == name)
        row.harmless_kl, row.harmless_refused, row.harmless_n = kl, sum(x == REFUSED for x in lab), len(lab)
    # paired: ours (global and per prompt) against each baseline and the ablation, complied on the same prompts
    by_name = {name: lab for (name, _, _), lab in zip(feature_rows, labels, strict=True)}
    by_name["ours, per-prompt"] = pp_labels
    paired = []
    for a in ("ours, global", "ours, per-prompt"):
        for b in ("direction ablation (AS)", "CosSim", "ActDiff", "AP", "greedy minimal set"):
            paired.append(PairedRow.compare(a, b, prompts, by_name[a], by_name[b]))
    return SearchTable(list(datasets), len(clean), len(prompts), k, c, rows, paired, generations)
