"""Stages 2-4 as the pipeline sees them: ``search`` (candidates, K* and c, the greedy minimal set, feature cards),
``search_table`` (the held-out comparison), ``interactions`` (the factorization machine, K sweep) and ``dormant``
(hydra features). Settings in :mod:`.config` and :mod:`.config`; the work in :mod:`.runner`,
:mod:`.interactions` and :mod:`.dormant`. Torch-free: runners import the work lazily."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from refusal_sae.errors import ConfigError
from refusal_sae.pipeline.protocol import CheckContext, NotRun, PlanRow, Stage
from refusal_sae.search.config import (
    DormantConfig,
    InteractionsConfig,
    SearchConfig,
    SearchTableConfig,
    heldout_settings,
    table_judged_same,
)

# --- feature search -----------------------------------------------------------------------------------------------
SEARCH_SPLITS = ("harmful_train", "harmless_train", "harmful_val")
CARD_SPLITS = ("harmful_train", "harmless_train")  # the feature cards' corpus (saes.config.TRAIN_DATASETS)


def _check_search(ctx: CheckContext, cfg: SearchConfig) -> None:
    from refusal_sae.scoring.judge import get_judge

    cfg.validate(ctx.sae_layers())
    get_judge(cfg.judge)


def _plan_search(ctx: CheckContext, cfg: SearchConfig) -> list[PlanRow]:
    layers = cfg.layers or ctx.sae_layers()
    n_layers = len(layers) if layers else None
    n_attr = ctx.size("harmful_train", cfg.n_attribution)
    n_harmless = ctx.size("harmless_train", cfg.n_harmless)
    n_val = ctx.size("harmful_val", cfg.n_val)
    grid = len(cfg.top_k) * len(cfg.clamps)
    k_max = max(cfg.top_k)
    chains = cfg.greedy_seeds + len(cfg.greedy_taus) - 1
    rounds = -(-k_max // cfg.greedy_block) + k_max  # block pass, then single features (upper bound)
    cards = sum(ctx.size(d, cfg.n_card_prompts) for d in CARD_SPLITS)
    where = f"{n_layers if n_layers is not None else '?'} SAE layers"
    ks = ",".join(map(str, cfg.top_k))
    cs = ",".join(f"{c:g}" for c in cfg.clamps)
    # LA-IG: ig_steps interpolated forward + backward passes (about 3 forwards each) and the clean / patched runs
    return [
        PlanRow("search", f"candidates: {cfg.k_per_layer}/layer × {where}, LA-IG {cfg.ig_steps} steps",
                n_attr + n_harmless, n_attr * (3 * cfg.ig_steps + 2) + n_attr + n_harmless),
        PlanRow("search", f"K* × c grid: K {ks} × c {cs}, {cfg.n_random} random sets per cell", n_val,
                n_val * (1 + grid + cfg.n_random), n_val * (1 + grid + cfg.n_random) * cfg.max_new_tokens),
        PlanRow("search", f"greedy minimal set: {chains} chains, ≤{rounds} rounds; judged on {n_val}", n_attr,
                n_attr * (1 + rounds * chains) + 3 * n_val, 3 * n_val * cfg.max_new_tokens),
        PlanRow("search", f"feature cards: {cards} corpus prompts + their responses", cards, 2 * cards, cards * 64)]


def _run_search(ctx, cfg: SearchConfig):
    from refusal_sae.search.runner import run_search_stage

    return run_search_stage(ctx.handle, ctx.saes(), ctx.run, cfg, ctx.data_dir)


def _sum_search(res) -> str:
    _, choice, greedy, _ = res
    feats = ", ".join(f"L{L}:{f}" for L, f in greedy.minimal.items[:6]) + (" …" if len(greedy.minimal) > 6 else "")
    return (f"K* {choice.k}, c {choice.c:g}{'' if choice.met else ' (rule not met)'}; minimal set {len(greedy.minimal)} "
            f"of {len(greedy.start)}: {feats}")


SEARCH = Stage(
    "search", SearchConfig, _run_search, _plan_search, _check_search, requires=lambda cfg: ("direction",),
    datasets=lambda cfg: SEARCH_SPLITS, uses_saes=True, summary=_sum_search, report=("search", "cards"),
    results={"search_candidates": "refusal_sae.search.result:CandidatesResult",
             "search_choice": "refusal_sae.search.result:ChoiceResult",
             "search_greedy": "refusal_sae.search.result:GreedyResult",
             "search_cards": "refusal_sae.search.result:FeatureCards"},
    doc="SAE features that carry refusal: decoder-cosine candidates ranked by LA-IG, K* and c chosen on harmful_val "
        "against random sets, greedy minimal set, feature cards")


def _check_table(ctx: CheckContext, cfg: SearchTableConfig) -> None:
    search = ctx.config.stage_configs.get("search")
    for d in cfg.datasets:
        if search is not None and d in SEARCH_SPLITS:
            raise ConfigError(f"datasets: {d} is a split the search fits or selects on; the table must be held out "
                              "(e.g. jailbreakbench, harmbench_test)")


def _plan_table(ctx: CheckContext, cfg: SearchTableConfig) -> list[PlanRow]:
    search = ctx.config.stage_configs["search"]
    n = sum(ctx.size(d, cfg.n) for d in cfg.datasets)
    h = ctx.size("harmless_test", cfg.n_harmless)
    # unclamped, 7 rows, per-prompt sets, 2 × n_random random controls; harmless: clean + 8 clamped, KL
    gens = n * (1 + 7 + 1 + 2 * search.n_random) + h * 9
    return [PlanRow("search_table", f"{n} held-out × 8 rows + {2 * search.n_random} random; cost on {h} harmless_test",
                    n + h,
                    gens + n * (3 * search.ig_steps + 2) + 8 * h, gens * search.max_new_tokens)]


def _run_table(ctx, cfg: SearchTableConfig):
    from refusal_sae.search.runner import run_table_stage

    return run_table_stage(ctx.handle, ctx.saes(), ctx.run, cfg.datasets, cfg.n_harmless, ctx.data_dir, n=cfg.n)


def _sum_table(res) -> str:
    rows = {r.name: r for r in res.rows}
    show = [n for n in ("direction ablation (AS)", "ours, global", "greedy minimal set", "random (K*)") if n in rows]
    return f"{res.n_refused} refused held-out prompts; complied: " + ", ".join(
        f"{n} {rows[n].complied}/{rows[n].n}" for n in show)


SEARCH_TABLE = Stage(
    "search_table", SearchTableConfig, _run_table, _plan_table, _check_table, requires=lambda cfg: ("search",),
    datasets=lambda cfg: (*cfg.datasets, "harmless_test"), uses_saes=True, summary=_sum_table, report=("search",),
    results={"search_table": "refusal_sae.search.table:SearchTable"},
    doc="the search's held-out comparison table: ours vs direction ablation, baselines and random controls (Wilson "
        "CIs, capability cost, McNemar)")


# --- stages 3-4: interactions, dormant --------------------------------------------------------------------------
# Both read the search's results (search/candidates, choice, greedy) and the held-out prompts the unclamped model
# refuses (search/heldout: judged once, by whichever runs first, or taken from search_table when it judged the same
# prompts the same way). Their settings: refusal_sae.search.config; docs/interactions.md.
FM_SPLITS = ("harmful_train", "harmless_train", "harmful_val", "harmless_val", "harmless_test")
HELDOUT_USERS = ("interactions", "dormant")


def _unless_empty(run: Callable[[], Any]) -> Any:
    from refusal_sae.search.interactions import EmptyMinimalSetError

    try:
        return run()
    except EmptyMinimalSetError as e:
        return NotRun(str(e))


def _n_heldout(ctx: CheckContext, cfg: InteractionsConfig | DormantConfig) -> int:
    return sum(ctx.size(d, cfg.n_heldout) for d in cfg.datasets)


def _check_heldout_shared(ctx: CheckContext, name: str, cfg: InteractionsConfig | DormantConfig) -> None:
    """Both stages share search/heldout: with different held-out settings each would replace the other's, and a
    resumed run would judge the held-out prompts again every time."""
    other = next((s for s in HELDOUT_USERS if s != name and s in ctx.config.stages), None)
    if other is None:
        return
    mine, theirs = heldout_settings(cfg), heldout_settings(ctx.config.stage_configs[other])
    if mine != theirs:
        diff = ", ".join(f"{k} {mine.get(k)!r} vs {theirs.get(k)!r}" for k in sorted(set(mine) | set(theirs))
                         if mine.get(k) != theirs.get(k))
        raise ConfigError(f"{name} and {other} share the held-out prompts the model refuses (search/heldout), but "
                          f"their settings differ ({diff}); set datasets, n_heldout, seed, judge and max_new_tokens "
                          "alike in both sections")


def _plan_heldout(ctx: CheckContext, name: str, cfg: InteractionsConfig | DormantConfig) -> list[PlanRow]:
    """The held-out judging, counted once: in the first of the two stages, unless search_table's judgements fit."""
    if next(s for s in ctx.config.stages if s in HELDOUT_USERS) != name:
        return []
    n = _n_heldout(ctx, cfg)
    table = ctx.config.stage_configs.get("search_table") if "search_table" in ctx.config.stages else None
    search = ctx.config.stage_configs["search"]
    if table is not None and table_judged_same(heldout_settings(cfg), {"datasets": table.datasets, "n": table.n},
                                               {"seed": search.seed, "judge": search.judge,
                                                "max_new_tokens": search.max_new_tokens}):
        return [PlanRow(name, f"held-out refusals: {n} prompts, search_table's judgements reused", n, 0)]
    return [PlanRow(name, f"held-out refusals: which of {n} prompts the model refuses, judged", n, n,
                    n * cfg.max_new_tokens)]


def _check_interactions(ctx: CheckContext, cfg: InteractionsConfig) -> None:
    from refusal_sae.scoring.judge import get_judge

    search = ctx.config.stage_configs["search"]
    cfg.validate(max(search.top_k) + cfg.pool_size)  # the minimal set is at most K*: the pool at most this
    get_judge(cfg.judge)
    _check_heldout_shared(ctx, "interactions", cfg)


def _sweep_ks(cfg: InteractionsConfig, pool_max: int) -> tuple[str, int]:
    """The K values as text and how many (an upper bound when they follow the minimal set's size)."""
    if cfg.k_values is not None:
        return "K " + ",".join(map(str, cfg.k_values)), len(cfg.k_values)
    n = max(1, pool_max - 1).bit_length() + 1
    return f"≤{n} K (minimal size doubled, pool)", n


def _plan_interactions(ctx: CheckContext, cfg: InteractionsConfig) -> list[PlanRow]:
    search = ctx.config.stage_configs["search"]
    held = _n_heldout(ctx, cfg)
    train = ctx.size("harmful_train", cfg.n_train) + ctx.size("harmless_train", cfg.n_train)
    val = ctx.size("harmful_val", cfg.n_val) + ctx.size("harmless_val", cfg.n_val)
    test = held + ctx.size("harmless_test", cfg.n_test_harmless)  # at most: the held-out prompts the model refuses
    rows = train + val + test
    ks, n_k = _sweep_ks(cfg, max(search.top_k) + cfg.pool_size)
    n = min(cfg.n_sweep, held)
    sets = 1 + n_k * (2 + cfg.n_random)  # the minimal set; per K: FM, probe, random draws (identical sets once)
    # rows: codes unclamped and clamped, refusal scores unclamped and clamped
    return [*_plan_heldout(ctx, "interactions", cfg),
            PlanRow("interactions", f"FM rows: {train} train, {val} val, ≤{test} test prompts × (unclamped, clamped)",
                    rows, 4 * rows),
            PlanRow("interactions", f"FM vs probe; K sweep: {ks} × FM, probe, {cfg.n_random} random", n, n * sets,
                    n * sets * cfg.max_new_tokens)]


def _run_interactions(ctx, cfg: InteractionsConfig):
    from refusal_sae.search.interactions import run_interactions_stage

    return _unless_empty(lambda: run_interactions_stage(ctx.handle, ctx.saes(), ctx.run, cfg, ctx.data_dir))


def _sum_interactions(res) -> str:
    data, model, sweep = res
    fm, probe = model.metrics["FM"]["test"], model.metrics["linear probe"]["test"]
    rows = {(r.k, r.ranking): r for r in sweep.rows}
    per_k = "; ".join(f"K {k}: complied FM {rows[k, 'FM'].complied}, probe {rows[k, 'linear probe'].complied}, random "
                      f"{rows[k, 'random'].complied / max(rows[k, 'random'].n, 1) * len(sweep.prompts):.1f} of "
                      f"{len(sweep.prompts)}" for k in sweep.ks[:3])
    return (f"pool {len(data.pool)}; held-out AUC FM {fm.auc.value:.2f} vs probe {probe.auc.value:.2f}; {per_k}"
            + (" …" if len(sweep.ks) > 3 else ""))


INTERACTIONS = Stage(
    "interactions", InteractionsConfig, _run_interactions, _plan_interactions, _check_interactions,
    requires=lambda cfg: ("search",), datasets=lambda cfg: (*FM_SPLITS, *cfg.datasets), uses_saes=True,
    summary=_sum_interactions, report=("interactions",),
    results={"refused_prompts": "refusal_sae.search.interactions:RefusedPrompts",
             "interactions_data": "refusal_sae.search.interactions:InteractionData",
             "interactions_fm": "refusal_sae.search.interactions:InteractionModel",
             "interactions_ksweep": "refusal_sae.search.interactions:KSweepResult"},
    doc="feature interactions: a factorization machine vs a linear probe over the features left active by the minimal "
        "set's clamp, top pairs, and the K sweep (FM vs probe vs random sets, held out)")


def _check_dormant(ctx: CheckContext, cfg: DormantConfig) -> None:
    from refusal_sae.scoring.judge import get_judge

    cfg.validate()
    get_judge(cfg.judge)
    _check_heldout_shared(ctx, "dormant", cfg)


def _plan_dormant(ctx: CheckContext, cfg: DormantConfig) -> list[PlanRow]:
    s = ctx.config.stage_configs["search"]
    n = min(cfg.n_prompts, _n_heldout(ctx, cfg))
    k = max(s.top_k)  # the found sets hold at most K* features
    sets, members = len(cfg.sets), len(cfg.sets) * k
    # per set: judged once and its members' activity read twice; on the prompts it flips (≤ n) the whole set and every
    # removal scored, and each removal (at most) judged
    silent = PlanRow("dormant", f"critical-but-silent: {'/'.join(cfg.sets)} set on {n} held-out refused", n,
                     n * (3 * sets) + n * (sets + members) + n * members, n * (sets + members) * cfg.max_new_tokens)
    newly = PlanRow("dormant", f"newly active: minimal set + {cfg.n_random} random clamp(s), by position", n,
                    2 * n * (1 + cfg.n_random))
    rows = [*_plan_heldout(ctx, "dormant", cfg), silent, newly]
    if cfg.max_rounds:
        n_attr = ctx.size("harmful_train", cfg.n_attribution or s.n_attribution)
        n_val = ctx.size("harmful_val", cfg.n_val or s.n_val)
        ig = cfg.ig_steps or s.ig_steps
        greedy = -(-k // s.greedy_block) + k  # block pass, then single features (upper bound)
        judged = (cfg.max_rounds + 1) * (1 + cfg.n_random) * n_val
        rows.append(PlanRow("dormant", f"≤{cfg.max_rounds} round(s): LA-IG {ig} steps on {n_attr}, greedy, judged on "
                                       f"≤{n_val} harmful_val", n_attr + n_val,
                            n_val + (cfg.max_rounds + 1) * (n_attr + n_val) + judged
                            + cfg.max_rounds * n_attr * (3 * ig + 2 + 1 + greedy * s.greedy_seeds),
                            (n_val + judged) * cfg.max_new_tokens))
    return rows


def _run_dormant(ctx, cfg: DormantConfig):
    from refusal_sae.search.dormant import run_dormant_stage

    return _unless_empty(lambda: run_dormant_stage(ctx.handle, ctx.saes(), ctx.run, cfg, ctx.data_dir))


def _sum_dormant(res) -> str:
    silent, newly, rounds = res
    crit = ", ".join(f"{s.set_name} {s.silent_critical} of {s.silent_pairs} silent (active {s.active_critical} of "
                     f"{s.active_pairs})" for s in silent.summaries)
    rnd = sum(r.pairs for r in newly.random) / max(1, len(newly.random))
    out = f"critical: {crit}; newly active pairs {newly.minimal.pairs} (random {rnd:.0f})"
    if rounds is not None:
        out += "; complied by round " + ", ".join(f"{r.complied}/{r.val_n}" for r in rounds.rows)
    return out


DORMANT = Stage(
    "dormant", DormantConfig, _run_dormant, _plan_dormant, _check_dormant, requires=lambda cfg: ("search",),
    datasets=lambda cfg: (*cfg.datasets, *(("harmful_train", "harmful_val") if cfg.max_rounds else ())),
    uses_saes=True, summary=_sum_dormant, report=("dormant",),
    results={"dormant_silent": "refusal_sae.search.dormant:SilentResult",
             "dormant_newly_active": "refusal_sae.search.dormant:NewlyActiveResult",
             "dormant_rounds": "refusal_sae.search.dormant:RoundsResult"},
    doc="dormant features: critical-but-silent members of the found sets, features the clamp wakes (by position), "
        "rounds of re-search")


