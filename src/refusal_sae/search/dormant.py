"""Stage 4 (Prakash et al., "Beyond I'm Sorry, I Can't"): refusal features that stay silent ("hydra" features).

1. **Critical-but-silent.** On held-out prompts the model refuses (the K sweep's seeded sample), each found set
   (``global``: the search's top K*; ``minimal``: the greedy minimal set) is clamped at the search's ``c`` and the
   answers judged. On every prompt a set flips to complied, each member's removal from the set is scored (refusal
   score, all removals of all flipped prompts in stacked engine passes); removals that bring the score above the
   threshold are then judged on greedy answers (``screen = "score"``; ``"none"`` judges every removal). A member is
   *critical* on a prompt when the answer without it is judged refused again, and *silent* when its SAE code is zero
   at every position of the unclamped prompt. A silent member can matter because the clamp acts at every layer and
   on the generated tokens: the earlier layers' clamps can wake it (``woken``: it fires at some prompt position under
   the rest of the clamp), or it fires only while answering. Active members go through the same test: their counts
   are the comparison.
2. **Newly active.** Features (all of the searched layers' SAEs) zero at every position of the unclamped prompt
   that fire under the minimal set's clamp, counted by position kind (:data:`~refusal_sae.search.clamped.KINDS`:
   first/BOS token, template before the instruction, instruction, post-instruction), beside random sets of the same
   per-layer sizes under the same clamp.
3. **Rounds.** With the current set clamped, candidates are found again (LA-IG where the clean run is the clamped
   model and the patch still ablates the refusal direction, restricted to the decoder-cosine prefilter minus the
   set) and filtered greedily (the set stays clamped while the new candidates are pruned); the new minimal features
   join the set. Rounds stop when the mean refusal score on the training prompts falls by less than ``min_drop``, no
   feature is added, or ``max_rounds`` is reached. Each round: features added, refusal scores, judged compliance on
   the validation prompts the model refuses, beside random sets of the same per-layer sizes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from refusal_sae.data import load_dataset
from refusal_sae.interventions.base import set_hooks
from refusal_sae.interventions.engine import EngineConfig, InterventionEngine
from refusal_sae.interventions.feature_clamp import FeatureClamp
from refusal_sae.models.handle import ModelHandle
from refusal_sae.runs import RunDir, StageResult, config_hash
from refusal_sae.runs.identity import settings_of
from refusal_sae.saes.loading import SaeSet
from refusal_sae.scoring.judge import COMPLIED, REFUSED, Judge, get_judge
from refusal_sae.scoring.stats import wilson_interval
from refusal_sae.search.attribution import la_ig
from refusal_sae.search.candidates import prefilter_mask, ranked
from refusal_sae.search.choose import counts, val_refused
from refusal_sae.search.clamped import KINDS, iter_codes, position_kinds
from refusal_sae.search.config import DormantConfig
from refusal_sae.search.featureset import FeatureSet, clamp_set, random_sets
from refusal_sae.search.greedy import greedy_filter, intersect
from refusal_sae.search.interactions import HELDOUT_STAGE, SearchContext, heldout_refused, sample_prompts

SILENT = "search/dormant/silent"
NEWLY = "search/dormant/newly_active"
ROUNDS = "search/dormant/rounds"


# --- which members fire ------------------------------------------------------------------------------------------------
@torch.no_grad()
def member_activity(handle: ModelHandle, saes: Mapping[int, object], prompts: Sequence[str], members: FeatureSet,
                    clamp: FeatureSet | None = None, c: float = 0.0, batch_size: int = 32, progress: bool = False,
                    desc: str = "member activity") -> torch.Tensor:
    """``[P, n_members]`` bool: the member fires at some real prompt position (under ``clamp`` at ``c``: read
    before its own layer's edit, so it shows what the earlier layers' clamps do to it)."""
    layers = sorted(members.by_layer())
    out = torch.zeros(len(prompts), len(members), dtype=torch.bool)
    for idx, batch, codes in iter_codes(handle, saes, layers, prompts, clamp, c, batch_size, progress, desc):
        real = position_kinds(batch) >= 0
        for m, (L, f) in enumerate(members):
            out[idx, m] = ((codes[L][..., f] > 0) & real).any(1)
    return out


# --- 1. critical-but-silent ------------------------------------------------------------------------------------------------
@dataclass
class RemovalTest:
    set_name: str
    prompt: int  # index into SilentResult.prompts
    feature: tuple[int, int]
    silent: bool  # zero at every position of the unclamped prompt
    woken: bool  # fires at a prompt position under the set's clamp (earlier layers clamped)
    score_with: float  # refusal score with the whole set clamped
    score_without: float  # … with this member left out
    judged: str | None  # judged answer without it (None: not judged, screened out by the score)

    @property
    def critical(self) -> bool:
        return self.judged == REFUSED


@dataclass
class SilentSummary:
    set_name: str
    size: int
    n_prompts: int
    n_flipped: int  # prompts the whole set flips to complied (judged)
    flipped_ci: tuple[float, float]
    silent_pairs: int  # (flipped prompt, silent member) pairs
    active_pairs: int
    silent_critical_by_score: int  # removal brings the refusal score above the threshold
    active_critical_by_score: int
    silent_critical: int  # removal judged refused again
    active_critical: int
    silent_critical_woken: int  # … of which fire under the rest of the clamp at a prompt position
    critical_silent_per_prompt: list[int]  # per flipped prompt
    prompts_with_critical_silent: int
    features: list[dict]  # distinct critical-but-silent features: {feature, prompts}
    judged_pairs: int  # removals judged (after the screen)


@dataclass
class SilentResult(StageResult):
    """``search/dormant/silent``: per set and flipped prompt, every member's removal test."""

    kind = "dormant_silent"

    c: float
    screen: str
    label_threshold: float
    prompts: list[str]
    sets: dict[str, FeatureSet]
    summaries: list[SilentSummary]
    tests: list[RemovalTest] = field(default_factory=list)


def removal_tests(engine: InterventionEngine, judge: Judge, saes: Mapping[int, object], prompts: Sequence[str],
                  name: str, fs: FeatureSet, c: float, silent: torch.Tensor, woken: torch.Tensor,
                  refusal_tokens: Sequence[int], screen: str, threshold: float, max_new_tokens: int, batch_size: int,
                  progress: bool = True) -> list[RemovalTest]:
    """Every member's removal on every prompt of ``prompts`` (those ``fs`` flips): scored, then judged where the
    screen lets it through. ``silent`` / ``woken``: ``[P, n_members]``."""
    sets = [clamp_set(saes, fs, c)] + [clamp_set(saes, fs.without([m]), c) if len(fs) > 1 else [] for m in fs]
    scores = engine.score(prompts, sets, refusal_tokens).float()  # [1 + n_members, P]
    tests = [RemovalTest(name, p, m, bool(silent[p, j]), bool(woken[p, j]), float(scores[0, p]),
                         float(scores[1 + j, p]), None)
             for p in range(len(prompts)) for j, m in enumerate(fs)]
    todo = [t for t in tests if screen == "none" or t.score_without > threshold]
    if todo:
        outs = engine.generate_per_prompt([prompts[t.prompt] for t in todo],
                                          [sets[1 + fs.items.index(t.feature)] for t in todo], max_new_tokens,
                                          batch_size, progress, f"{name}: removals judged")
        for t, j in zip(todo, judge.judge([prompts[t.prompt] for t in todo], outs), strict=True):
            t.judged = j.label
    return tests


def summarize_silent(name: str, fs: FeatureSet, n_prompts: int, flipped: list[int], tests: Sequence[RemovalTest],
                     threshold: float) -> SilentSummary:
    sil = [t for t in tests if t.silent]
    act = [t for t in tests if not t.silent]
    crit = [t for t in sil if t.critical]
    per_prompt = Counter(t.prompt for t in crit)
    feats = Counter(t.feature for t in crit)
    return SilentSummary(
        set_name=name, size=len(fs), n_prompts=n_prompts, n_flipped=len(flipped),
        flipped_ci=wilson_interval(len(flipped), n_prompts), silent_pairs=len(sil), active_pairs=len(act),
        silent_critical_by_score=sum(t.score_without > threshold for t in sil),
        active_critical_by_score=sum(t.score_without > threshold for t in act),
        silent_critical=len(crit), active_critical=sum(t.critical for t in act),
        silent_critical_woken=sum(t.woken for t in crit),
        critical_silent_per_prompt=[per_prompt.get(p, 0) for p in range(len(flipped))],
        prompts_with_critical_silent=len(per_prompt),
        features=[{"feature": list(f), "prompts": n} for f, n in feats.most_common()],
        judged_pairs=sum(t.judged is not None for t in tests))


def critical_silent(handle: ModelHandle, saes: Mapping[int, object], engine: InterventionEngine, judge: Judge,
                    ctx: SearchContext, cfg: DormantConfig, prompts: Sequence[str], progress: bool = True
                    ) -> SilentResult:
    c = ctx.c
    named = {"global": ctx.greedy.start, "minimal": ctx.minimal}  # start: the top K* the greedy filter pruned
    sets = {n: named[n] for n in cfg.sets}
    summaries, tests = [], []
    for name, fs in sets.items():
        (outs,) = engine.generate(prompts, [clamp_set(saes, fs, c)], cfg.max_new_tokens, cfg.batch_size, progress,
                                  f"{name} set clamped")
        labs = [j.label for j in judge.judge(prompts, outs)]
        flipped = [i for i, lab in enumerate(labs) if lab == COMPLIED]
        on = [prompts[i] for i in flipped]
        own: list[RemovalTest] = []
        if on:
            silent = ~member_activity(handle, saes, on, fs, None, c, cfg.batch_size, progress, f"{name}: unclamped")
            woken = member_activity(handle, saes, on, fs, fs, c, cfg.batch_size, progress, f"{name}: clamped")
            own = removal_tests(engine, judge, saes, on, name, fs, c, silent, woken, ctx.cands.refusal_tokens,
                                cfg.screen, cfg.label_threshold, cfg.max_new_tokens, cfg.batch_size, progress)
        summaries.append(summarize_silent(name, fs, len(prompts), flipped, own, cfg.label_threshold))
        for t in own:  # from an index into the flipped prompts to one into the result's prompt list
            t.prompt = flipped[t.prompt]
        tests += own
    return SilentResult(c, cfg.screen, cfg.label_threshold, list(prompts), sets, summaries, tests)


# --- 2. newly active ------------------------------------------------------------------------------------------------------
@dataclass
class NewlyActive:
    """Features zero at every position of the unclamped prompt that fire under a clamp."""

    clamp: str  # "minimal set" or "random i"
    size: int
    events: dict[str, int]  # position kind → (prompt, feature, position) firings
    pairs: int  # distinct (prompt, feature) newly active
    pairs_by_first_kind: dict[str, int]  # position kind where each pair first fires
    per_layer: dict[int, int]  # layer → pairs
    silenced_pairs: int  # the reverse: active unclamped, zero at every position under the clamp


@dataclass
class NewlyActiveResult(StageResult):
    """``search/dormant/newly_active``: the minimal set's clamp and random same-size clamps, on held-out prompts."""

    kind = "dormant_newly_active"

    c: float
    kinds: list[str]
    n_prompts: int
    positions: dict[str, int]  # position kind → positions of that kind over the prompts
    minimal: NewlyActive
    random: list[NewlyActive]
    top_features: list[dict]  # the minimal set's most often newly active features: {feature, prompts, kinds}


@torch.no_grad()
def newly_active(handle: ModelHandle, saes: Mapping[int, object], layers: Sequence[int], prompts: Sequence[str],
                 clamp: FeatureSet, c: float, name: str, batch_size: int = 32, progress: bool = False,
                 top: int = 0) -> tuple[NewlyActive, dict[str, int], list[dict]]:
    """Newly active features under ``clamp`` (its own members excluded), the positions per kind, and (``top`` > 0)
    the most often newly active features."""
    layers = list(layers)
    events = dict.fromkeys(KINDS, 0)
    first = dict.fromkeys(KINDS, 0)
    positions = dict.fromkeys(KINDS, 0)
    per_layer = dict.fromkeys(layers, 0)
    pairs = silenced = 0
    feat_prompts: Counter = Counter()
    feat_kinds: dict[tuple[int, int], Counter] = {}
    own = clamp.by_layer()
    clean_it = iter_codes(handle, saes, layers, prompts, None, c, batch_size, progress, f"{name}: unclamped")
    clamp_it = iter_codes(handle, saes, layers, prompts, clamp, c, batch_size, progress, f"{name}: clamped")
    for (idx, batch, clean), (idx2, _, clamped) in zip(clean_it, clamp_it, strict=True):
        assert idx == idx2
        kinds = position_kinds(batch)
        real = kinds >= 0
        for k, kind in enumerate(KINDS):
            positions[kind] += int((kinds == k).sum())
        for L in layers:
            on_clean = (clean[L] > 0) & real[..., None]
            on_clamp = (clamped[L] > 0) & real[..., None]
            before, after = on_clean.any(1), on_clamp.any(1)  # [B, d]
            new = on_clamp & ~before[:, None, :]
            if L in own:
                new[..., list(own[L])] = False
                after[..., list(own[L])] = False
                before = before.clone()
                before[..., list(own[L])] = False
            fired = new.any(1)
            pairs += int(fired.sum())
            per_layer[L] += int(fired.sum())
            silenced += int((before & ~after).sum())
            for k, kind in enumerate(KINDS):
                events[kind] += int(new[kinds == k].sum())
            if fired.any():
                b_idx, f_idx = fired.nonzero(as_tuple=True)
                first_pos = new.float().argmax(1)[b_idx, f_idx]  # first position each pair fires at
                for kk in kinds[b_idx, first_pos].tolist():
                    first[KINDS[kk]] += 1
                if top:
                    for b, f in zip(b_idx.tolist(), f_idx.tolist(), strict=True):
                        feat_prompts[(L, f)] += 1
                        ks = kinds[b][new[b, :, f]].tolist()
                        feat_kinds.setdefault((L, f), Counter()).update(KINDS[x] for x in ks)
    tops = [{"feature": list(f), "prompts": n, "kinds": dict(feat_kinds[f])} for f, n in feat_prompts.most_common(top)]
    return NewlyActive(name, len(clamp), events, pairs, first, per_layer, silenced), positions, tops


def newly_active_stage(handle: ModelHandle, saes: Mapping[int, object], ctx: SearchContext, cfg: DormantConfig,
                       prompts: Sequence[str], progress: bool = True) -> NewlyActiveResult:
    layers = ctx.layers
    mine, positions, tops = newly_active(handle, saes, layers, prompts, ctx.minimal, ctx.c, "minimal set",
                                         cfg.batch_size, progress, top=20)
    alive = {L: torch.tensor(ids) for L, ids in ctx.cands.alive.items()}
    draws = random_sets(alive, ctx.minimal, cfg.n_random, cfg.seed + len(ctx.minimal))
    rand = [newly_active(handle, saes, layers, prompts, d, ctx.c, f"random {i + 1}", cfg.batch_size, progress)[0]
            for i, d in enumerate(draws)]
    return NewlyActiveResult(ctx.c, list(KINDS), len(prompts), positions, mine, rand, tops)


# --- 3. rounds ---------------------------------------------------------------------------------------------------------------
class WithBase:
    """An engine whose every scored set also clamps ``base`` (at the same ``c``): greedy filtering of new
    candidates while the current set stays clamped, with :func:`~refusal_sae.search.greedy.greedy_filter` as is."""

    def __init__(self, engine: InterventionEngine, saes: Mapping[int, object], layers: Sequence[int], base: FeatureSet,
                 c: float):
        self.engine, self.saes, self.base, self.c = engine, saes, base, c
        self.layer_of = {id(saes[L]): L for L in layers}

    def merged(self, clamps: Sequence[FeatureClamp]) -> list:
        extra = FeatureSet.of((self.layer_of[id(cl.sae)], f) for cl in clamps for f in cl.feature_ids)
        return clamp_set(self.saes, FeatureSet(self.base.items + extra.without(self.base.items).items), self.c)

    def score(self, prompts, sets, refusal_tokens):
        return self.engine.score(prompts, [self.merged(s) for s in sets], refusal_tokens)


@dataclass
class RoundRow:
    round: int
    added: FeatureSet  # round 0: the minimal set itself
    size: int  # features clamped after this round
    candidates: int  # candidates the greedy filter started from (0 for round 0)
    train_score: float  # mean refusal score on the training prompts with the set clamped
    train_flipped: float  # share of them with refusal score < 0
    val_score: float
    val_n: int
    complied: int
    degenerate: int
    refused: int
    complied_ci: tuple[float, float]
    random_complied: list[float]  # random sets of the same per-layer sizes: complied share of each


@dataclass
class DormantRound(StageResult):
    """``search/dormant/rounds/r<i>``: one round (resumable per round)."""

    kind = "dormant_round"

    row: RoundRow
    set: FeatureSet  # the whole set after the round


@dataclass
class RoundsResult(StageResult):
    """``search/dormant/rounds``: every round and why they stopped."""

    kind = "dormant_rounds"

    c: float
    n_train: int
    val_prompts: list[str]
    rows: list[RoundRow]
    final: FeatureSet  # the set after the last round that lowered the score by at least min_drop
    stopped: str


def round_scores(engine: InterventionEngine, saes, fs: FeatureSet, c: float, train: Sequence[str], val: Sequence[str],
                 tokens: Sequence[int]) -> tuple[float, float, float]:
    s_train = engine.score(train, [clamp_set(saes, fs, c)], tokens)[0].float()
    s_val = engine.score(val, [clamp_set(saes, fs, c)], tokens)[0].float()
    return float(s_train.mean()), float((s_train < 0).float().mean()), float(s_val.mean())


def evaluate_round(engine: InterventionEngine, judge: Judge, saes, ctx: SearchContext, cfg: DormantConfig, r: int,
                   fs: FeatureSet, added: FeatureSet, n_candidates: int, train: Sequence[str], val: Sequence[str],
                   progress: bool = True) -> RoundRow:
    c = ctx.c
    tr, fl, va = round_scores(engine, saes, fs, c, train, val, ctx.cands.refusal_tokens)
    alive = {L: torch.tensor(ids) for L, ids in ctx.cands.alive.items()}
    draws = random_sets(alive, fs, cfg.n_random, cfg.seed + 1000 * r + len(fs))
    outs = engine.generate(val, [clamp_set(saes, s, c) for s in [fs, *draws]], cfg.max_new_tokens, cfg.batch_size,
                           progress, f"round {r}: validation")
    labs = [[j.label for j in judge.judge(val, o)] for o in outs]
    comp, deg, ref = counts(labs[0])
    rand = [sum(x == COMPLIED for x in lab) / len(val) for lab in labs[1:]]
    return RoundRow(r, added, len(fs), n_candidates, tr, fl, va, len(val), comp, deg, ref,
                    wilson_interval(comp, len(val)), rand)


def search_round(handle: ModelHandle, saes: SaeSet, engine: InterventionEngine, ctx: SearchContext, cfg: DormantConfig,
                 current: FeatureSet, train: Sequence[str], progress: bool = True) -> tuple[FeatureSet, int]:
    """New minimal features on top of ``current`` (clamped): LA-IG candidates on the clamped model, greedy filtered
    with ``current`` kept clamped. Returns the added features and the number of candidates."""
    s = ctx.cfg
    layers, c = ctx.layers, ctx.c
    hooks = set_hooks(handle, clamp_set(saes, current, c))
    with handle.hooks(hooks):  # the clean run (and every run of the attribution) is the clamped model
        attr = la_ig(handle, saes, layers, ctx.direction.direction, train, ctx.cands.refusal_tokens,
                     cfg.ig_steps or s.ig_steps, max(1, s.batch_size // 2), progress).mean(0)
    cos = ctx.cands.cosines if ctx.cands.direction_source == "selected" else ctx.cands.cosines_per_layer
    mask = prefilter_mask(cos, s.k_per_layer)
    for L, f in current:
        mask[layers.index(L), f] = False
    cands = ranked(attr, layers, ctx.choice.k, mask)
    if not len(cands):
        return FeatureSet(()), 0
    chains = [(seed, s.greedy_tau) for seed in range(s.seed, s.seed + s.greedy_seeds)]
    traces = greedy_filter(WithBase(engine, saes, layers, current, c), saes, train, ctx.cands.refusal_tokens, cands, c,
                           chains, s.greedy_block, progress)
    return intersect(traces), len(cands)


def run_rounds(handle: ModelHandle, saes: SaeSet, run: RunDir, engine: InterventionEngine, judge: Judge,
               ctx: SearchContext, cfg: DormantConfig, ident: dict, data_dir=None, progress: bool = True
               ) -> RoundsResult:
    s = ctx.cfg
    ident = {k: v for k, v in ident.items() if k not in ("max_rounds", "min_drop")}  # a round does not depend on them:
    # a rerun with more rounds (or another stopping rule) reuses the rounds already done
    train = load_dataset("harmful_train", data_dir).sample(cfg.n_attribution or s.n_attribution, s.seed).instructions
    val_all = load_dataset("harmful_val", data_dir).sample(cfg.n_val or s.n_val, s.seed).instructions
    val = run.run(_ValRefused, ident | {"val": val_all},
                  lambda: _ValRefused(val_refused(engine, judge, val_all, cfg.max_new_tokens, cfg.batch_size)),
                  name=f"{ROUNDS}/val_refused").prompts
    current = ctx.minimal
    rows: list[RoundRow] = []
    stopped = f"max_rounds ({cfg.max_rounds}) reached"
    for r in range(cfg.max_rounds + 1):
        start = current

        def compute(r: int = r, start: FeatureSet = start) -> DormantRound:
            if r == 0:
                return DormantRound(evaluate_round(engine, judge, saes, ctx, cfg, 0, start, start, 0, train, val,
                                                   progress), start)
            added, n_cands = search_round(handle, saes, engine, ctx, cfg, start, train, progress)
            new = FeatureSet(start.items + added.items)
            return DormantRound(evaluate_round(engine, judge, saes, ctx, cfg, r, new, added, n_cands, train, val,
                                               progress), new)

        done = run.run(DormantRound, ident | {"round": r, "start": [list(x) for x in start]}, compute,
                       name=f"{ROUNDS}/r{r}")
        rows.append(done.row)
        current = done.set
        if r == 0:
            continue
        if not len(done.row.added):
            stopped = f"round {r} added no feature"
            break
        if rows[-2].train_score - done.row.train_score < cfg.min_drop:
            stopped = (f"round {r} lowered the mean refusal score by {rows[-2].train_score - done.row.train_score:.3f} "
                       f"< min_drop {cfg.min_drop:g}")
            break
    final = current if len(rows) < 2 or not stopped.startswith(f"round {rows[-1].round} lowered") else \
        FeatureSet(current.items[: rows[-2].size])
    return RoundsResult(ctx.c, len(train), list(val), rows, final, stopped)


@dataclass
class _ValRefused(StageResult):
    kind = "dormant_val_refused"

    prompts: list[str]


# --- the stage -----------------------------------------------------------------------------------------------------------------


def run_dormant_stage(handle: ModelHandle, saes: SaeSet, run: RunDir, cfg: DormantConfig, data_dir=None,
                      progress: bool = True) -> tuple[SilentResult, NewlyActiveResult, RoundsResult | None]:
    """Stage 4 in ``run`` (``search/dormant/{silent,newly_active,rounds}``), each skipped when complete."""
    cfg.validate()
    saes.validate(handle)
    ctx = SearchContext.load(run)
    ctx.check_saes(saes)
    judge = get_judge(cfg.judge)
    run.record_model(handle)
    engine = InterventionEngine(handle, EngineConfig(prompt_batch_size=cfg.batch_size))
    base = ctx.identity(handle, saes) | {"global": [list(x) for x in ctx.greedy.start]}
    heldout = heldout_refused(handle, run, engine, judge, cfg.datasets, cfg.judge, cfg.max_new_tokens, cfg.batch_size,
                              data_dir, cfg.n_heldout, cfg.seed)
    prompts = sample_prompts(heldout.refused, cfg.n_prompts, cfg.seed)
    held = {"heldout": config_hash({"p": prompts})}
    steps = tqdm(total=3 if cfg.max_rounds else 2, desc="dormant", unit="part", disable=not progress)
    silent = run.run(SilentResult, base | held | settings_of(cfg, "silent"),
                     lambda: critical_silent(handle, saes, engine, judge, ctx, cfg, prompts, progress), name=SILENT)
    steps.update(1)
    newly = run.run(NewlyActiveResult, base | held | settings_of(cfg, "newly"),
                    lambda: newly_active_stage(handle, saes, ctx, cfg, prompts, progress), name=NEWLY)
    steps.update(1)
    rounds = None
    if cfg.max_rounds:
        ident = base | settings_of(cfg, "rounds")
        rounds = run.run(RoundsResult, ident,
                         lambda: run_rounds(handle, saes, run, engine, judge, ctx, cfg, ident, data_dir, progress),
                         name=ROUNDS)
        steps.update(1)
    steps.close()
    return silent, newly, rounds


__all__ = ["HELDOUT_STAGE", "DormantRound", "NewlyActiveResult", "RoundsResult", "SilentResult", "run_dormant_stage"]
