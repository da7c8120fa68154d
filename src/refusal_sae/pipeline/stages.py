"""The stage registry: what ``refusal-sae run`` can run, in one table.

A stage is one :class:`Stage` entry: its config type (the YAML section of the same name), a runner
``(context, cfg) -> result``, checks against the model's facts before any work, a ``plan`` for ``--dry-run``, the
stages it needs before it, and the datasets it reads. Adding a stage (interactions, dormant features, analyses) is
one :func:`register_stage` call (the feature search below is two: ``search`` and ``search_table``; ``interactions``
and ``dormant`` follow them); see docs/run.md,
"Adding a stage".

Import is torch-free: runners import the heavy modules when they run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from refusal_sae.analysis.configs import JailbreaksConfig, ProbeConfig, UpstreamConfig
from refusal_sae.analysis.harden_config import HardenConfig
from refusal_sae.direction.config import CalibrationConfig, DirectionConfig
from refusal_sae.errors import ConfigError
from refusal_sae.saes.stage import SaeMetricsConfig
from refusal_sae.scoring.config import EvalConfig
from refusal_sae.search.config import SearchConfig
from refusal_sae.search.interactions_config import DormantConfig, InteractionsConfig, heldout_settings, table_judged_same

DIRECTION_SPLITS = ("harmful_train", "harmless_train", "harmful_val", "harmless_val")
DISCOVERY = 32 * 12  # refusal-token discovery: 32 greedy generations of 12 tokens


# --- the pipeline's own section types -------------------------------------------------------------------------
@dataclass
class HarmVsRefusalConfig:
    """Harm (t_inst) vs refusal direction per layer (uses the direction section's prompts)."""

    layers: tuple[int, ...] | None = None  # None: every layer

    def __post_init__(self) -> None:
        if self.layers is not None:
            self.layers = tuple(self.layers)
            if not self.layers:
                raise ConfigError("layers is empty (omit it for every layer)")


@dataclass
class EvalStep(EvalConfig):
    """One evaluation of the ``eval`` stage: an :class:`EvalConfig` whose activation-addition ``coeff`` may be
    ``calibrated`` (the coefficient chosen by the ``calibrate_actadd`` stage)."""

    coeff: float | Literal["calibrated"] = 1.0

    def resolve(self, calibrated: float | None = None) -> EvalConfig:
        from dataclasses import fields

        values = {f.name: getattr(self, f.name) for f in fields(EvalConfig)}
        if values["coeff"] == "calibrated":
            if calibrated is None:
                raise ConfigError("coeff: calibrated needs the calibrate_actadd stage")
            values["coeff"] = calibrated
        return EvalConfig(**values)

    def label(self) -> str:
        tag = "" if self.intervention == "none" else f" {self.intervention}"
        if self.intervention == "actadd":
            tag += f" ×{self.coeff}" if self.coeff == "calibrated" else f" ×{self.coeff:g}"
        return f"{self.dataset}{tag}"


# --- contexts -----------------------------------------------------------------------------------------------------
@dataclass
class CheckContext:
    """What the checks and the plan see: the whole config, the model's facts (fields ``None`` when unknown
    offline), the data folder and the size of every dataset the config names."""

    config: Any  # PipelineConfig
    facts: Any  # ModelFacts
    data_dir: Path | None
    dataset_sizes: dict[str, int] = field(default_factory=dict)
    sae_facts: Any = None  # SaeFacts, when a listed stage uses SAEs

    def size(self, dataset: str, n: int | None) -> int:
        total = self.dataset_sizes.get(dataset, 0)
        return total if n is None else min(n, total)


@dataclass
class PlanRow:
    stage: str
    what: str
    prompts: int | None  # prompts read (None: unknown offline)
    forwards: int | None  # prompt-level forward passes, interventions included
    generated: int = 0  # greedy tokens generated (upper bound: generation stops at end of turn)


@dataclass(frozen=True)
class Stage:
    name: str
    config_type: Any  # a dataclass, or list[dataclass] for a stage run once per item
    run: Callable[[Any, Any], Any]  # (RunContext, cfg) -> StageResult (or a list of them)
    plan: Callable[[CheckContext, Any], list[PlanRow]]
    check: Callable[[CheckContext, Any], None] = lambda ctx, cfg: None
    requires: Callable[[Any], Sequence[str]] = lambda cfg: ()  # stages that must come before it in `stages`
    datasets: Callable[[Any], Sequence[str]] = lambda cfg: ()  # datasets it reads (checked to exist)
    uses_saes: bool = False
    default: Callable[[], Any] = dict  # the raw section used when the config has none
    summary: Callable[[Any], str] = lambda result: ""
    doc: str = ""

    def default_section(self):
        return self.default()


STAGES: dict[str, Stage] = {}


def register_stage(stage: Stage) -> Stage:
    """Add a stage; ``stages:`` lists it by name and its settings live in the section of that name."""
    if stage.name in STAGES:
        raise ValueError(f"stage {stage.name!r} is already registered")
    STAGES[stage.name] = stage
    return stage


def default_stages() -> list[str]:
    """Every registered stage, in registration order (each after the stages it needs)."""
    return list(STAGES)


# --- direction ----------------------------------------------------------------------------------------------------
def _candidates(ctx: CheckContext, cfg: DirectionConfig) -> int | None:
    f, s = ctx.facts, cfg.selection
    if f.n_layers is None:
        return None
    layers = list(s.layers) if s.layers is not None else list(range(f.n_layers))
    layers = [L for L in layers if L < int(f.n_layers * (1 - s.prune_layer_fraction))]  # as select.py prunes
    if s.positions is None and f.n_post_inst is None:
        return None
    return len(layers) * (len(s.positions) if s.positions is not None else f.n_post_inst)


def _check_direction(ctx: CheckContext, cfg: DirectionConfig) -> None:
    harm = ctx.config.stage_configs.get("harm_vs_refusal")
    harm_layers = tuple(harm.layers or ()) if harm is not None and "harm_vs_refusal" in ctx.config.stages else ()
    f = ctx.facts
    if f.n_layers is not None:
        cfg.validate(f.n_layers, f.n_post_inst if f.n_post_inst is not None else 10**6, harm_layers)


def _plan_direction(ctx: CheckContext, cfg: DirectionConfig) -> list[PlanRow]:
    n_tr = ctx.size("harmful_train", cfg.n_train) + ctx.size("harmless_train", cfg.n_train)
    n_val = ctx.size("harmful_val", cfg.n_val) + ctx.size("harmless_val", cfg.n_val)
    cands = _candidates(ctx, cfg)
    scoring = None if cands is None else cands * (n_val + n_val // 2) + n_val // 2 + n_val
    what = f"{cands if cands is not None else '?'} candidates (layer × position) scored on {n_val} validation prompts"
    return [PlanRow("direction", f"difference in means on {n_tr} training prompts", n_tr, n_tr, DISCOVERY),
            PlanRow("direction", what, n_val, scoring)]


def _run_direction(ctx, cfg: DirectionConfig):
    from refusal_sae.direction.stage import run_direction_stage

    return run_direction_stage(ctx.handle, ctx.run, cfg, ctx.data_dir)


def _sum_direction(res) -> str:
    c = res.chosen
    return f"position {c.pos}, layer {c.layer}: bypass {c.bypass:.3f}, induce {c.induce:.3f}, KL {c.kl:.4f}"


register_stage(Stage(
    "direction", DirectionConfig, _run_direction, _plan_direction, _check_direction,
    datasets=lambda cfg: DIRECTION_SPLITS, summary=_sum_direction,
    doc="refusal direction: difference-in-means candidates selected by bypass / induce / KL (Arditi et al.)"))


# --- harm vs refusal ----------------------------------------------------------------------------------------------
def _harm_layers(ctx, cfg: HarmVsRefusalConfig) -> list[int] | None:
    n = ctx.facts.n_layers if isinstance(ctx, CheckContext) else ctx.handle.n_layers
    return list(cfg.layers) if cfg.layers is not None else (None if n is None else list(range(n)))


def _plan_harm(ctx: CheckContext, cfg: HarmVsRefusalConfig) -> list[PlanRow]:
    d = ctx.config.stage_configs["direction"]
    n_val = ctx.size("harmful_val", d.n_val) + ctx.size("harmless_val", d.n_val)
    layers = _harm_layers(ctx, cfg)
    fw = None if layers is None else n_val + 2 * n_val * len(layers)
    return [PlanRow("harm_vs_refusal", f"{len(layers) if layers else '?'} layers, add / ablate each direction",
                    n_val, fw)]


def _run_harm(ctx, cfg: HarmVsRefusalConfig):
    from refusal_sae.direction.stage import run_harm_vs_refusal_stage

    return run_harm_vs_refusal_stage(ctx.handle, ctx.run, ctx.config.section("direction"), _harm_layers(ctx, cfg),
                                     ctx.data_dir)


def _sum_harm(res) -> str:
    best = max(res.rows, key=lambda r: abs(r.cosine), default=None)
    return "" if best is None else f"{len(res.rows)} layers; largest |cosine| {best.cosine:.2f} at layer {best.layer}"


register_stage(Stage(
    "harm_vs_refusal", HarmVsRefusalConfig, _run_harm, _plan_harm, requires=lambda cfg: ("direction",),
    datasets=lambda cfg: DIRECTION_SPLITS, summary=_sum_harm,
    doc="the t_inst harm direction vs the refusal direction per layer: cosine, and each added / ablated"))


# --- SAE metrics --------------------------------------------------------------------------------------------------
def _check_saes(ctx: CheckContext, cfg: SaeMetricsConfig) -> None:
    from refusal_sae.data.registry import is_test_split

    for d in cfg.datasets:
        if is_test_split(d):
            raise ConfigError(f"sae_metrics.datasets: {d} is a held-out test split; SAEs are measured on train / "
                              "validation splits only")
    check_sae_facts(ctx)


def check_sae_facts(ctx: CheckContext) -> None:
    """SAE widths against d_model and their hook layers against the model (where both are known)."""
    sf, f = ctx.sae_facts, ctx.facts
    if sf is None:
        return
    for e in sf.entries:
        if f.d_model is not None and e["d_in"] is not None and e["d_in"] != f.d_model:
            raise ConfigError(f"SAE {e['id']} ({sf.source}) has d_in {e['d_in']} but model {f.name} has d_model "
                              f"{f.d_model}")
        if f.n_layers is not None and e["layer"] is not None and not 0 <= e["layer"] < f.n_layers:
            raise ConfigError(f"SAE {e['id']} ({sf.source}) reads layer {e['layer']}, but model {f.name} has layers "
                              f"0-{f.n_layers - 1}")


def _plan_saes(ctx: CheckContext, cfg: SaeMetricsConfig) -> list[PlanRow]:
    n = sum(ctx.size(d, cfg.n_prompts) for d in cfg.datasets)
    n_saes = len(ctx.sae_facts.entries) if ctx.sae_facts is not None else 0
    ce = n if cfg.ce_batches is None else min(n, cfg.ce_batches * cfg.batch_size)
    return [PlanRow("sae_metrics", f"{n_saes} SAEs on {n} prompts + their greedy responses", n,
                    n + n + 2 * n_saes * ce, n * cfg.max_new_tokens)]


def _run_saes(ctx, cfg: SaeMetricsConfig):
    from refusal_sae.saes.stage import run_sae_metrics_stage

    return run_sae_metrics_stage(ctx.handle, ctx.run, ctx.saes(), cfg, ctx.data_dir)


def _sum_saes(res) -> str:
    def f(x):
        return "-" if x is None else f"{x:.3f}"

    return "; ".join(f"L{r.layer} FVU {f(r.fvu)} rec {f(r.loss_recovered)}" for r in res.rows[:4]) + (
        f"; … ({len(res.rows)} SAEs)" if len(res.rows) > 4 else "")


register_stage(Stage(
    "sae_metrics", SaeMetricsConfig, _run_saes, _plan_saes, _check_saes, datasets=lambda cfg: cfg.datasets,
    uses_saes=True, summary=_sum_saes,
    doc="SAE quality per layer on held-out prompts + responses: FVU, L0, dead latents, loss recovered"))


# --- activation-addition calibration ------------------------------------------------------------------------------
def _check_calibration(ctx: CheckContext, cfg: CalibrationConfig) -> None:
    from refusal_sae.scoring.judge import get_judge

    cfg.validate(ctx.data_dir)
    get_judge(cfg.judge)


def _plan_calibration(ctx: CheckContext, cfg: CalibrationConfig) -> list[PlanRow]:
    n = ctx.size(cfg.dataset, cfg.n)
    k = len(cfg.coeffs)
    return [PlanRow("calibrate_actadd", f"{k} coefficients × {n} {cfg.dataset} prompts, judged", n * k, n * k,
                    n * k * cfg.max_new_tokens + DISCOVERY * k)]


def _run_calibration(ctx, cfg: CalibrationConfig):
    from refusal_sae.direction.calibrate import run_actadd_calibration

    return run_actadd_calibration(ctx.handle, ctx.run, cfg, ctx.data_dir)


def _sum_calibration(res) -> str:
    rates = ", ".join(f"×{c:g}: {r:.2f}" for c, r in zip(res.coeffs, res.refusal_rates, strict=True))
    return f"{rates}; chosen ×{res.chosen:g}" + ("" if res.met else f" (target {res.target:.2f} not met)")


register_stage(Stage(
    "calibrate_actadd", CalibrationConfig, _run_calibration, _plan_calibration, _check_calibration,
    requires=lambda cfg: ("direction",), datasets=lambda cfg: (cfg.dataset,), summary=_sum_calibration,
    doc="the smallest activation-addition coefficient that makes the target share of harmless prompts refused"))


# --- eval ---------------------------------------------------------------------------------------------------------
def _check_eval(ctx: CheckContext, cfg: list[EvalStep]) -> None:
    from refusal_sae.scoring.judge import get_judge

    if not cfg:
        raise ConfigError("eval: the list of evaluations is empty")
    for i, e in enumerate(cfg):
        try:
            e.resolve(1.0).validate(ctx.facts.n_layers)
            get_judge(e.judge)
        except ConfigError as err:
            raise ConfigError(f"eval[{i}] ({e.label()}): {err}") from None


def _requires_eval(cfg: list[EvalStep]) -> tuple[str, ...]:
    need = []
    if any(e.intervention != "none" for e in cfg):
        need.append("direction")
    if any(e.coeff == "calibrated" for e in cfg):
        need.append("calibrate_actadd")
    return tuple(need)


def _plan_eval(ctx: CheckContext, cfg: list[EvalStep]) -> list[PlanRow]:
    rows = []
    for e in cfg:
        n = ctx.size(e.dataset, e.n)
        rows.append(PlanRow("eval", f"{e.label()}: {n} prompts, judged ({e.judge})", n, n,
                            n * e.max_new_tokens + DISCOVERY))
    return rows


def _run_eval(ctx, cfg: list[EvalStep]):
    from refusal_sae.direction.result import DirectionResult
    from refusal_sae.scoring.evaluation import run_eval_stage
    from refusal_sae.scoring.judge import get_judge

    direction = DirectionResult.from_run(ctx.run.root) if "direction" in _requires_eval(cfg) else None
    calibrated = None
    if any(e.coeff == "calibrated" for e in cfg):
        from refusal_sae.direction.calibrate import ActAddCalibration

        calibrated = ctx.run.require(ActAddCalibration, "refusal-sae calibrate-actadd").chosen
    judges: dict[str, Any] = {}
    out = []
    for e in cfg:
        judge = judges.setdefault(e.judge, get_judge(e.judge))
        out.append(run_eval_stage(ctx.handle, ctx.run, e.resolve(calibrated), ctx.data_dir,
                                  None if e.intervention == "none" else direction, judge))
    return out


def _sum_eval(results) -> str:
    return "; ".join(f"{r.dataset}: refused {r.counts['refused']}/{r.n}" for r in results)


def _default_evals() -> list[dict]:
    return [{"dataset": "jailbreakbench"}, {"dataset": "jailbreakbench", "intervention": "ablate"},
            {"dataset": "harmless_test", "n": 100, "intervention": "actadd", "coeff": "calibrated"}]


register_stage(Stage(
    "eval", list[EvalStep], _run_eval, _plan_eval, _check_eval, requires=_requires_eval,
    datasets=lambda cfg: [e.dataset for e in cfg], default=_default_evals, summary=_sum_eval,
    doc="judged greedy generations on prompt sets, each optionally under a direction intervention"))


# --- feature search -----------------------------------------------------------------------------------------------
SEARCH_SPLITS = ("harmful_train", "harmless_train", "harmful_val")
CARD_SPLITS = ("harmful_train", "harmless_train")  # the feature cards' corpus (saes.config.TRAIN_DATASETS)


def _sae_layers(ctx: CheckContext) -> tuple[int, ...] | None:
    """The SAEs' layers when every one is known (folders' cfg.json, release ids), else ``None``."""
    sf = ctx.sae_facts
    if sf is None or not sf.entries or any(e["layer"] is None for e in sf.entries):
        return None
    return tuple(sorted({e["layer"] for e in sf.entries}))


def _check_search(ctx: CheckContext, cfg: SearchConfig) -> None:
    from refusal_sae.scoring.judge import get_judge

    cfg.validate(_sae_layers(ctx))
    get_judge(cfg.judge)


def _plan_search(ctx: CheckContext, cfg: SearchConfig) -> list[PlanRow]:
    layers = cfg.layers or _sae_layers(ctx)
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
    from refusal_sae.search.stage import run_search_stage

    return run_search_stage(ctx.handle, ctx.saes(), ctx.run, cfg, ctx.data_dir)


def _sum_search(res) -> str:
    _, choice, greedy, _ = res
    feats = ", ".join(f"L{L}:{f}" for L, f in greedy.minimal.items[:6]) + (" …" if len(greedy.minimal) > 6 else "")
    return (f"K* {choice.k}, c {choice.c:g}{'' if choice.met else ' (rule not met)'}; minimal set {len(greedy.minimal)} "
            f"of {len(greedy.start)}: {feats}")


register_stage(Stage(
    "search", SearchConfig, _run_search, _plan_search, _check_search, requires=lambda cfg: ("direction",),
    datasets=lambda cfg: SEARCH_SPLITS, uses_saes=True, summary=_sum_search,
    doc="SAE features that carry refusal: decoder-cosine candidates ranked by LA-IG, K* and c chosen on harmful_val "
        "against random sets, greedy minimal set, feature cards"))


@dataclass
class SearchTableConfig:
    """The feature search's held-out comparison table (``refusal_sae.search.table``): the only search step that reads
    test splits, after every choice was made on training and validation splits."""

    datasets: tuple[str, ...] = ("jailbreakbench", "harmbench_test")  # harmful held-out sets
    n: int | None = None  # a seeded sample of each (None: every prompt)
    n_harmless: int = 64  # harmless_test prompts for the capability cost

    def __post_init__(self) -> None:
        self.datasets = tuple(self.datasets)
        if not self.datasets:
            raise ConfigError("datasets is empty: name the held-out harmful sets, e.g. [jailbreakbench]")
        if self.n is not None and self.n < 1:
            raise ConfigError(f"n must be positive, got {self.n}")
        if self.n_harmless < 1:
            raise ConfigError(f"n_harmless must be positive, got {self.n_harmless}")


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
    from refusal_sae.search.stage import run_table_stage

    return run_table_stage(ctx.handle, ctx.saes(), ctx.run, cfg.datasets, cfg.n_harmless, ctx.data_dir, n=cfg.n)


def _sum_table(res) -> str:
    rows = {r.name: r for r in res.rows}
    show = [n for n in ("direction ablation (AS)", "ours, global", "greedy minimal set", "random (K*)") if n in rows]
    return f"{res.n_refused} refused held-out prompts; complied: " + ", ".join(
        f"{n} {rows[n].complied}/{rows[n].n}" for n in show)


register_stage(Stage(
    "search_table", SearchTableConfig, _run_table, _plan_table, _check_table, requires=lambda cfg: ("search",),
    datasets=lambda cfg: (*cfg.datasets, "harmless_test"), uses_saes=True, summary=_sum_table,
    doc="the search's held-out comparison table: ours vs direction ablation, baselines and random controls (Wilson "
        "CIs, capability cost, McNemar)"))


# --- stages 3-4: interactions, dormant --------------------------------------------------------------------------
# Both read the search's results (search/candidates, choice, greedy) and the held-out prompts the unclamped model
# refuses (search/heldout: judged once, by whichever runs first, or taken from search_table when it judged the same
# prompts the same way). Their settings: refusal_sae.search.interactions_config; docs/interactions.md.
FM_SPLITS = ("harmful_train", "harmless_train", "harmful_val", "harmless_val", "harmless_test")
HELDOUT_USERS = ("interactions", "dormant")


@dataclass
class NotRun:
    """What the runner returns when the search left nothing to work on (an empty minimal set): no result is written,
    the run goes on, and the stage's line says why."""

    reason: str


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
    if isinstance(res, NotRun):
        return f"no result: {res.reason}"
    data, model, sweep = res
    fm, probe = model.metrics["FM"]["test"], model.metrics["linear probe"]["test"]
    rows = {(r.k, r.ranking): r for r in sweep.rows}
    per_k = "; ".join(f"K {k}: complied FM {rows[k, 'FM'].complied}, probe {rows[k, 'linear probe'].complied}, random "
                      f"{rows[k, 'random'].complied / max(rows[k, 'random'].n, 1) * len(sweep.prompts):.1f} of "
                      f"{len(sweep.prompts)}" for k in sweep.ks[:3])
    return (f"pool {len(data.pool)}; held-out AUC FM {fm.auc.value:.2f} vs probe {probe.auc.value:.2f}; {per_k}"
            + (" …" if len(sweep.ks) > 3 else ""))


register_stage(Stage(
    "interactions", InteractionsConfig, _run_interactions, _plan_interactions, _check_interactions,
    requires=lambda cfg: ("search",), datasets=lambda cfg: (*FM_SPLITS, *cfg.datasets), uses_saes=True,
    summary=_sum_interactions,
    doc="feature interactions: a factorization machine vs a linear probe over the features left active by the minimal "
        "set's clamp, top pairs, and the K sweep (FM vs probe vs random sets, held out)"))


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
    if isinstance(res, NotRun):
        return f"no result: {res.reason}"
    silent, newly, rounds = res
    crit = ", ".join(f"{s.set_name} {s.silent_critical} of {s.silent_pairs} silent (active {s.active_critical} of "
                     f"{s.active_pairs})" for s in silent.summaries)
    rnd = sum(r.pairs for r in newly.random) / max(1, len(newly.random))
    out = f"critical: {crit}; newly active pairs {newly.minimal.pairs} (random {rnd:.0f})"
    if rounds is not None:
        out += "; complied by round " + ", ".join(f"{r.complied}/{r.val_n}" for r in rounds.rows)
    return out


register_stage(Stage(
    "dormant", DormantConfig, _run_dormant, _plan_dormant, _check_dormant, requires=lambda cfg: ("search",),
    datasets=lambda cfg: (*cfg.datasets, *(("harmful_train", "harmful_val") if cfg.max_rounds else ())),
    uses_saes=True, summary=_sum_dormant,
    doc="dormant features: critical-but-silent members of the found sets, features the clamp wakes (by position), "
        "rounds of re-search"))
# --- end of stages 3-4 ------------------------------------------------------------------------------------------


# --- stage 5: analyses (jailbreaks, upstream, probes, harden) -----------------------------------------------------

PROBE_SPLITS = ("harmful_train", "harmless_train", "harmful_val", "harmless_val", "harmless_test")
HARDEN_SPLITS = ("harmful_train", "harmless_train", "harmful_val", "harmless_val", "xstest_safe", "harmless_test")


def _n_families(families: Sequence[str] | None) -> int:
    from refusal_sae.data.jailbreaks import family_names

    return len(families) if families is not None else len(family_names())


def _jailbreak_pairs(ctx: CheckContext) -> tuple[int, int]:
    """(plain instructions, wrapped prompts of them) of the config's jailbreak table (wrap mode; 0, 0 otherwise)."""
    jb = ctx.config.stage_configs.get("jailbreaks")
    if jb is None or jb.dataset is not None:
        return 0, 0
    n = min(jb.n_instructions, sum(ctx.size(d, None) for d in jb.datasets))
    return n, n * _n_families(jb.families)


def _check_table_source(ctx: CheckContext, folder: str) -> None:
    """A reader of the jailbreak table (upstream, probes) must read the one this config's ``jailbreaks`` stage writes."""
    jb = ctx.config.stage_configs.get("jailbreaks")
    if jb is not None and "jailbreaks" in ctx.config.stages and jb.stage != folder:
        raise ConfigError(f"jailbreaks: reads the jailbreak table {folder}, but the jailbreaks stage writes {jb.stage}; "
                          f"set jailbreaks: {jb.stage}")


def _check_jailbreaks(ctx: CheckContext, cfg: JailbreaksConfig) -> None:
    from refusal_sae.analysis.jailbreaks import prepare

    prepare(cfg, ctx.data_dir)  # settings, families, prompt files (the command's own check)


def _plan_jailbreaks(ctx: CheckContext, cfg: JailbreaksConfig) -> list[PlanRow]:
    if cfg.dataset is not None:
        n = ctx.size(cfg.dataset, cfg.n)
        return [PlanRow("jailbreaks", f"{n} prompts of {Path(cfg.dataset).name} (+ their plain instructions), judged",
                        n, n, n * cfg.max_new_tokens)]
    total = sum(ctx.size(d, None) for d in cfg.datasets)
    plain = min(total, max(cfg.n_instructions, cfg.batch_size))  # one chunk; more when too few are refused
    fams = _n_families(cfg.families)
    wrapped = min(cfg.n_instructions, total) * (fams + int(cfg.neutral_control))
    what = f"{plain} plain held-out; ≤{cfg.n_instructions} refused × {fams} families" + (
        " + control" if cfg.neutral_control else "") + ", judged"
    return [PlanRow("jailbreaks", what, plain + wrapped, plain + wrapped, (plain + wrapped) * cfg.max_new_tokens)]


def _run_jailbreaks(ctx, cfg: JailbreaksConfig):
    from refusal_sae.analysis.jailbreaks import run_jailbreaks_stage

    return run_jailbreaks_stage(ctx.handle, ctx.run, cfg, ctx.data_dir)


def _sum_jailbreaks(res) -> str:
    def nr(r) -> str:
        return f"{r.family} {r.n - r.refused}/{r.n}"

    top = sorted(res.table, key=lambda r: -(r.n - r.refused) / max(r.n, 1))[:3]
    c = res.control
    ctl = f"; neutral control {c.n - c.refused}/{c.n}" if c is not None else ""
    return (f"{res.n_instructions or len(res.rows)} {'refused instructions' if res.mode == 'wrap' else 'prompts'}; "
            f"not refused: {', '.join(map(nr, top))}{ctl}")


register_stage(Stage(
    "jailbreaks", JailbreaksConfig, _run_jailbreaks, _plan_jailbreaks, _check_jailbreaks,
    datasets=lambda cfg: (cfg.dataset,) if cfg.dataset is not None else cfg.datasets, summary=_sum_jailbreaks,
    doc="which jailbreak families make the model stop refusing, paired against a neutral wrapper (Wilson CIs, "
        "McNemar)"))


def _check_upstream(ctx: CheckContext, cfg: UpstreamConfig) -> None:
    cfg.validate()
    _check_table_source(ctx, cfg.jailbreaks)
    search = ctx.config.stage_configs.get("search")
    layers = (search.layers or _sae_layers(ctx)) if search is not None else None
    if cfg.k is not None and layers and cfg.k > search.k_per_layer * len(layers):
        raise ConfigError(f"k = {cfg.k} is larger than the search's candidate pool ({search.k_per_layer} per layer × "
                          f"{len(layers)} layers)")


def _plan_upstream(ctx: CheckContext, cfg: UpstreamConfig) -> list[PlanRow]:
    n_tr, n_va = ctx.size("harmful_train", cfg.n_train), ctx.size("harmful_val", cfg.n_val)
    plain, pairs = _jailbreak_pairs(ctx)
    if cfg.max_instructions is not None and plain:
        pairs, plain = pairs * min(plain, cfg.max_instructions) // plain, min(plain, cfg.max_instructions)
    ig = (n_tr + n_va + plain) * (3 * cfg.ig_steps + 2)  # LA-IG: interpolated forward + backward, clean / patched
    return [PlanRow("upstream", f"refusal features: LA-IG {cfg.ig_steps} steps, {n_tr}+{n_va} train/val, "
                                f"{len(cfg.thresholds)} X", n_tr + n_va,
                    n_tr + n_va + ig, (n_tr + n_va) * cfg.max_new_tokens),
            PlanRow("upstream", f"{plain} plain → {pairs} wrapped: drops, clamp + {cfg.n_random} random, tokens",
                    plain + pairs, plain * (2 + cfg.n_random) + 4 * pairs)]


def _run_upstream(ctx, cfg: UpstreamConfig):
    from refusal_sae.analysis.upstream import run_upstream_stage

    return run_upstream_stage(ctx.handle, ctx.saes(), ctx.run, cfg, ctx.data_dir)


def _sum_upstream(res) -> str:
    all_pairs = next((r for r in res.table if r.group == "all pairs"), None)

    def f(x) -> str:
        return "-" if x is None or x != x else f"{x:.2f}"

    drops = "" if all_pairs is None else (f"; all {all_pairs.n_pairs} pairs: refusal-feature drop {f(all_pairs.refusal_drop)}, "
                                          f"upstream clamped {f(all_pairs.ablation_drop)} vs random "
                                          f"{f(all_pairs.random_drop)}")
    return f"{len(res.refusal_features)} refusal features (in ≥ {res.threshold:.0%} of per-prompt sets){drops}"


register_stage(Stage(
    "upstream", UpstreamConfig, _run_upstream, _plan_upstream, _check_upstream,
    requires=lambda cfg: ("direction", "search", "jailbreaks"), datasets=lambda cfg: ("harmful_train", "harmful_val"),
    uses_saes=True, summary=_sum_upstream,
    doc="upstream harm features → downstream refusal features: drops when a jailbreak works vs fails, the upstream "
        "clamp vs random, suppressing tokens"))


def _requires_probes(cfg: ProbeConfig) -> tuple[str, ...]:
    need = ["search"]
    if cfg.ood_dataset is None:
        need.append("jailbreaks")  # the OOD test: the table's wrapped prompts
    if "shared" in cfg.feature_sets:
        need.append("upstream")  # the shared refusal features
    return tuple(need)


def _check_probes(ctx: CheckContext, cfg: ProbeConfig) -> None:
    from refusal_sae.data.registry import is_test_split

    cfg.validate()
    _check_table_source(ctx, cfg.jailbreaks)
    jb = ctx.config.stage_configs.get("jailbreaks")
    if jb is not None and "jailbreaks" in ctx.config.stages and jb.dataset is None \
            and not any(is_test_split(d) for d in jb.datasets):
        raise ConfigError(f"the jailbreak table wraps {list(jb.datasets)}, none a held-out test split; the probes are "
                          "tested on held-out prompts only (e.g. jailbreakbench, harmbench_test)")


def _plan_probes(ctx: CheckContext, cfg: ProbeConfig) -> list[PlanRow]:
    n_tr = ctx.size("harmful_train", cfg.n_train) + ctx.size("harmless_train", cfg.n_train)
    n_va = ctx.size("harmful_val", cfg.n_val) + ctx.size("harmless_val", cfg.n_val)
    n_te = ctx.size("harmless_test", cfg.n_test)
    plain, pairs = _jailbreak_pairs(ctx)
    ood = ctx.size(cfg.ood_dataset, cfg.n_ood) if cfg.ood_dataset else pairs
    labelled = n_tr + n_va + n_te + (ood if cfg.ood_dataset else 0)
    acts = n_tr + n_va + plain + n_te + ood + (0 if cfg.ood_dataset else plain)
    sets = len(cfg.feature_sets)
    return [PlanRow("probes", f"labels of {labelled}, activations of {acts}; {sets} sets, {sets}×{cfg.n_random} "
                              "random, dense", labelled + plain + ood,
                    labelled + acts, labelled * cfg.max_new_tokens)]


def _run_probes(ctx, cfg: ProbeConfig):
    from refusal_sae.analysis.probes import run_probe_stage

    return run_probe_stage(ctx.handle, ctx.saes(), ctx.run, cfg, ctx.data_dir)


def _sum_probes(res) -> str:
    def acc(test: str) -> str:
        rows = {r.probe: r for r in res.rows if r.test == test}
        return ", ".join(f"{p} {r.accuracy:.2f}" for p, r in rows.items() if not p.startswith("random (")
                         or p == f"random ({next(iter(res.feature_sets), '')} size)")

    return f"accuracy in distribution: {acc('in_distribution')}; OOD: {acc('ood')}"


register_stage(Stage(
    "probes", ProbeConfig, _run_probes, _plan_probes, _check_probes, requires=_requires_probes,
    datasets=lambda cfg: PROBE_SPLITS + ((cfg.ood_dataset, "jailbreakbench", "harmbench_test") if cfg.ood_dataset
                                         else ()),
    uses_saes=True, summary=_sum_probes,
    doc="probes of 'will it refuse' on refusal features vs random features vs the dense residual, in and out of "
        "distribution"))


def _check_harden(ctx: CheckContext, cfg: HardenConfig) -> None:
    from refusal_sae.scoring.judge import get_judge

    cfg.validate(_sae_layers(ctx))
    get_judge(cfg.judge)


def _plan_harden(ctx: CheckContext, cfg: HardenConfig) -> list[PlanRow]:
    n_jb = min(cfg.n_jailbreak, sum(ctx.size(d, None) for d in cfg.jailbreak_datasets))
    per = n_jb * (2 if cfg.attack != "none" else 1) + ctx.size("xstest_safe", cfg.n_xstest)
    n_h = ctx.size("harmless_test", cfg.n_harmless)
    per += n_h
    points = 1 + len(cfg.multipliers) + len(cfg.actadd_coeffs) + len(cfg.random_multipliers) * cfg.n_random
    calib = ctx.size("harmful_train", cfg.n_calib)
    gate = 2 * ctx.size("harmful_train", cfg.n_gate) + ctx.size("harmless_train", cfg.n_gate) \
        + 2 * ctx.size("harmful_val", cfg.n_gate) + ctx.size("harmless_val", cfg.n_gate)
    return [PlanRow("harden", f"targets on {calib} harmful_train; gate on {gate} train/val prompts", calib + gate,
                    2 * calib + gate, calib * cfg.max_new_tokens),
            PlanRow("harden", f"{points} points × {per} held-out (+{len(cfg.multipliers)} conditional); Δloss on "
                              f"{n_h}", per,
                    points * per + points * n_h + per, points * per * cfg.max_new_tokens)]


def _run_harden(ctx, cfg: HardenConfig):
    from refusal_sae.analysis.harden import run_harden_stage

    return run_harden_stage(ctx.handle, ctx.saes(), ctx.run, cfg, ctx.data_dir)


def _sum_harden(res) -> str:
    def show(p) -> str:
        att = f"attack {p.attack.k}/{p.attack.n}, " if p.attack is not None else ""
        return f"{p.name}: jailbreak {p.jailbreak.k}/{p.jailbreak.n}, {att}XSTest refused {p.xstest_refused.k}/" \
               f"{p.xstest_refused.n}, Δloss {p.loss_increase:.3f}"

    pick = [p for p in res.points if p.method == "none"]
    for method in ("steer", "actadd"):
        curve = res.curve(method)
        pick += curve[-1:]
    return "; ".join(map(show, pick))


register_stage(Stage(
    "harden", HardenConfig, _run_harden, _plan_harden, _check_harden, requires=lambda cfg: ("direction", "search"),
    datasets=lambda cfg: HARDEN_SPLITS + tuple(cfg.jailbreak_datasets), uses_saes=True, summary=_sum_harden,
    doc="hardening refusal by steering the refusal features up (and gated on a harm feature) vs actadd: attack "
        "success vs over-refusal vs loss increase"))
