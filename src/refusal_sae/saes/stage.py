"""The pipeline's ``sae_metrics`` stage: SAE quality per layer on held-out prompts + the model's responses (settings
:class:`~refusal_sae.saes.config.SaeMetricsConfig`, the work in :mod:`.runner`), and the checks of any stage's SAEs
against the model. Torch-free."""

from __future__ import annotations

from refusal_sae.errors import ConfigError
from refusal_sae.pipeline.protocol import CheckContext, PlanRow, Stage
from refusal_sae.saes.config import SaeMetricsConfig


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


def _check(ctx: CheckContext, cfg: SaeMetricsConfig) -> None:
    from refusal_sae.data.registry import is_test_split

    for d in cfg.datasets:
        if is_test_split(d):
            raise ConfigError(f"sae_metrics.datasets: {d} is a held-out test split; SAEs are measured on train / "
                              "validation splits only")
    check_sae_facts(ctx)


def _plan(ctx: CheckContext, cfg: SaeMetricsConfig) -> list[PlanRow]:
    n = sum(ctx.size(d, cfg.n_prompts) for d in cfg.datasets)
    n_saes = len(ctx.sae_facts.entries) if ctx.sae_facts is not None else 0
    ce = n if cfg.ce_batches is None else min(n, cfg.ce_batches * cfg.batch_size)
    return [PlanRow("sae_metrics", f"{n_saes} SAEs on {n} prompts + their greedy responses", n,
                    n + n + 2 * n_saes * ce, n * cfg.max_new_tokens)]


def _run(ctx, cfg: SaeMetricsConfig):
    from refusal_sae.saes.runner import run_sae_metrics_stage

    return run_sae_metrics_stage(ctx.handle, ctx.run, ctx.saes(), cfg, ctx.data_dir)


def _summary(res) -> str:
    def f(x):
        return "-" if x is None else f"{x:.3f}"

    return "; ".join(f"L{r.layer} FVU {f(r.fvu)} rec {f(r.loss_recovered)}" for r in res.rows[:4]) + (
        f"; … ({len(res.rows)} SAEs)" if len(res.rows) > 4 else "")


SAE_METRICS = Stage(
    "sae_metrics", SaeMetricsConfig, _run, _plan, _check, datasets=lambda cfg: cfg.datasets, uses_saes=True,
    summary=_summary, report=("sae-quality",),
    results={"sae_metrics": "refusal_sae.saes.runner:SaeMetricsResult"},
    doc="SAE quality per layer on held-out prompts + responses: FVU, L0, dead latents, loss recovered")
