"""The pipeline's ``eval`` stage: judged greedy generations on prompt sets, each optionally under a direction
intervention (settings :class:`~refusal_sae.scoring.config.EvalStep`, the work in :mod:`.evaluation`). Torch-free."""

from __future__ import annotations

from typing import Any

from refusal_sae.errors import ConfigError
from refusal_sae.pipeline.protocol import DISCOVERY, CheckContext, PlanRow, Stage
from refusal_sae.scoring.config import EvalStep


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


EVAL = Stage(
    "eval", list[EvalStep], _run_eval, _plan_eval, _check_eval, requires=_requires_eval,
    datasets=lambda cfg: [e.dataset for e in cfg], default=_default_evals, summary=_sum_eval, report=("evals",),
    results={"eval": "refusal_sae.scoring.evaluation:EvalResult"},
    doc="judged greedy generations on prompt sets, each optionally under a direction intervention")
