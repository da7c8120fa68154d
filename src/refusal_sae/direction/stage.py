"""Stage 1 as the pipeline sees it: the ``direction``, ``harm_vs_refusal`` and ``calibrate_actadd`` stages (settings
in :mod:`.config`, the work in :mod:`.runner` and :mod:`.calibrate`). Torch-free: runners import the work lazily."""

from __future__ import annotations

from refusal_sae.direction.config import CalibrationConfig, DirectionConfig, HarmVsRefusalConfig
from refusal_sae.pipeline.protocol import DISCOVERY, CheckContext, PlanRow, Stage

DIRECTION_SPLITS = ("harmful_train", "harmless_train", "harmful_val", "harmless_val")


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
    harm = ctx.listed("harm_vs_refusal")
    f = ctx.facts
    if f.n_layers is not None:
        cfg.validate(f.n_layers, f.n_post_inst if f.n_post_inst is not None else 10**6,
                     tuple(harm.layers or ()) if harm is not None else ())


def _plan_direction(ctx: CheckContext, cfg: DirectionConfig) -> list[PlanRow]:
    n_tr = ctx.size("harmful_train", cfg.n_train) + ctx.size("harmless_train", cfg.n_train)
    n_val = ctx.size("harmful_val", cfg.n_val) + ctx.size("harmless_val", cfg.n_val)
    cands = _candidates(ctx, cfg)
    scoring = None if cands is None else cands * (n_val + n_val // 2) + n_val // 2 + n_val
    what = f"{cands if cands is not None else '?'} candidates (layer × position) scored on {n_val} validation prompts"
    return [PlanRow("direction", f"difference in means on {n_tr} training prompts", n_tr, n_tr, DISCOVERY),
            PlanRow("direction", what, n_val, scoring)]


def _run_direction(ctx, cfg: DirectionConfig):
    from refusal_sae.direction.runner import run_direction_stage

    return run_direction_stage(ctx.handle, ctx.run, cfg, ctx.data_dir)


def _sum_direction(res) -> str:
    c = res.chosen
    return f"position {c.pos}, layer {c.layer}: bypass {c.bypass:.3f}, induce {c.induce:.3f}, KL {c.kl:.4f}"


DIRECTION = Stage(
    "direction", DirectionConfig, _run_direction, _plan_direction, _check_direction,
    datasets=lambda cfg: DIRECTION_SPLITS, summary=_sum_direction, report=("direction",),
    results={"direction": "refusal_sae.direction.result:DirectionResult"},
    doc="refusal direction: difference-in-means candidates selected by bypass / induce / KL (Arditi et al.)")


# --- harm vs refusal ----------------------------------------------------------------------------------------------
def harm_layers(n_layers: int | None, cfg: HarmVsRefusalConfig) -> list[int] | None:
    return list(cfg.layers) if cfg.layers is not None else (None if n_layers is None else list(range(n_layers)))


def _plan_harm(ctx: CheckContext, cfg: HarmVsRefusalConfig) -> list[PlanRow]:
    d = ctx.config.stage_configs["direction"]
    n_val = ctx.size("harmful_val", d.n_val) + ctx.size("harmless_val", d.n_val)
    layers = harm_layers(ctx.facts.n_layers, cfg)
    fw = None if layers is None else n_val + 2 * n_val * len(layers)
    return [PlanRow("harm_vs_refusal", f"{len(layers) if layers else '?'} layers, add / ablate each direction",
                    n_val, fw)]


def _run_harm(ctx, cfg: HarmVsRefusalConfig):
    from refusal_sae.direction.runner import run_harm_vs_refusal_stage

    return run_harm_vs_refusal_stage(ctx.handle, ctx.run, ctx.config.section("direction"),
                                     harm_layers(ctx.handle.n_layers, cfg), ctx.data_dir)


def _sum_harm(res) -> str:
    best = max(res.rows, key=lambda r: abs(r.cosine), default=None)
    return "" if best is None else f"{len(res.rows)} layers; largest |cosine| {best.cosine:.2f} at layer {best.layer}"


HARM_VS_REFUSAL = Stage(
    "harm_vs_refusal", HarmVsRefusalConfig, _run_harm, _plan_harm, requires=lambda cfg: ("direction",),
    datasets=lambda cfg: DIRECTION_SPLITS, summary=_sum_harm, report=("direction",),
    results={"harm_vs_refusal": "refusal_sae.direction.result:HarmVsRefusalResult"},
    doc="the t_inst harm direction vs the refusal direction per layer: cosine, and each added / ablated")


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


CALIBRATE_ACTADD = Stage(
    "calibrate_actadd", CalibrationConfig, _run_calibration, _plan_calibration, _check_calibration,
    requires=lambda cfg: ("direction",), datasets=lambda cfg: (cfg.dataset,), summary=_sum_calibration,
    report=("calibration",),
    results={"actadd_calibration": "refusal_sae.direction.calibrate:ActAddCalibration"},
    doc="the smallest activation-addition coefficient that makes the target share of harmless prompts refused")
