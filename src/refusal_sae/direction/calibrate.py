"""Calibrate the activation-addition coefficient of the refusal direction on a validation split.

Each coefficient is one evaluation (greedy generations under ``ActAdd``, judged), kept in the run directory like
any ``eval``; the calibration result names the smallest coefficient whose refusal rate reaches the target.
"""

from __future__ import annotations

from dataclasses import dataclass

from refusal_sae.direction.config import CalibrationConfig
from refusal_sae.direction.result import DirectionResult
from refusal_sae.models.handle import ModelHandle
from refusal_sae.runs import RunDir, StageResult
from refusal_sae.scoring.config import EvalConfig
from refusal_sae.scoring.evaluation import run_eval_stage
from refusal_sae.scoring.judge import REFUSED, get_judge


@dataclass
class ActAddCalibration(StageResult):
    kind = "actadd_calibration"

    dataset: str
    n: int
    target: float
    coeffs: list[float]
    refusal_rates: list[float]
    chosen: float  # the smallest coefficient reaching the target; the largest tried when none does
    met: bool
    layer: int


def choose_coefficient(coeffs: list[float], rates: list[float], target: float) -> tuple[float, bool]:
    ok = [c for c, r in zip(coeffs, rates, strict=True) if r >= target]
    return (min(ok), True) if ok else (max(coeffs), False)


def run_actadd_calibration(handle: ModelHandle, run: RunDir, cfg: CalibrationConfig, data_dir=None) -> ActAddCalibration:
    """Calibrate on ``cfg.dataset`` with the run's refusal direction (``direction/``), into ``actadd_calibration/``."""
    cfg.validate(data_dir)
    direction = DirectionResult.from_run(run.root)
    judge = get_judge(cfg.judge)
    evals = [EvalConfig(cfg.dataset, cfg.n, cfg.seed, cfg.max_new_tokens, cfg.batch_size, cfg.judge, "actadd", c)
             for c in cfg.coeffs]
    for e in evals:
        e.validate(handle.n_layers)

    def compute() -> ActAddCalibration:
        results = [run_eval_stage(handle, run, e, data_dir, direction, judge) for e in evals]
        rates = [r.rate(REFUSED) for r in results]
        chosen, met = choose_coefficient(list(cfg.coeffs), rates, cfg.target)
        return ActAddCalibration(results[0].dataset, results[0].n, cfg.target, list(cfg.coeffs), rates, chosen, met,
                                 direction.layer)

    identity = cfg.to_dict() | {"model_revision": handle.revision, "direction_layer": direction.layer,
                                "direction_config_hash": run.manifest().get("stages", {}).get("direction", {}).get("config_hash")}
    return run.run(ActAddCalibration, identity, compute)
