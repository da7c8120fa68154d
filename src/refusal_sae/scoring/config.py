"""Settings of an evaluation (torch-free: the CLI reads its defaults here and checks them before any work)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

from refusal_sae.errors import ConfigError
from refusal_sae.interventions.spec import check_intervention


@dataclass
class EvalConfig:
    """Greedy generations of a model on a prompt set, judged refused / complied / degenerate, optionally under one
    of the run's direction interventions."""

    dataset: str = "jailbreakbench"  # registry name or a .json / .jsonl / .csv file
    n: int | None = None  # a seeded sample of n prompts (None: all)
    seed: int = 0  # sampling seed
    max_new_tokens: int = 64  # greedy tokens generated per prompt
    batch_size: int = 32  # prompts per forward batch
    judge: str = "default"  # judge of the generations: default (the tuned encoder judge) | tuned[:PARAMS] | learned |
    #   heuristic | substring | harmbench[:MODEL] | harmbench-mistral[:MODEL] | llamaguard[:MODEL] |
    #   classifier:MODEL
    intervention: str = "none"  # none | ablate | actadd (the run's refusal direction)
    coeff: float = 1.0  # activation-addition coefficient
    ablate_layers: tuple[int, ...] | None = None  # restrict the ablation to these layers (None: every layer)

    def __post_init__(self) -> None:
        if self.ablate_layers is not None:
            self.ablate_layers = tuple(self.ablate_layers)

    def validate(self, n_layers: int | None = None) -> None:
        """Cheap checks, before data or model are loaded (and the layers once the model is known)."""
        if self.n is not None and self.n < 1:
            raise ConfigError(f"--n must be a positive number of prompts, got {self.n}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError(f"max_new_tokens and batch_size must be positive, got {self.max_new_tokens} and "
                              f"{self.batch_size}")
        check_intervention(self.intervention, self.ablate_layers, n_layers)

    @property
    def tag(self) -> str:
        """How the intervention shows in file and stage names."""
        if self.intervention == "none":
            return ""
        tag = f"__{self.intervention}"
        if self.intervention == "actadd" and self.coeff != 1.0:
            tag += f"-coeff{self.coeff:g}"
        if self.ablate_layers is not None:
            tag += "-layers" + ",".join(map(str, self.ablate_layers))
        return tag

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EvalStep(EvalConfig):
    """One evaluation of the pipeline's ``eval`` stage: an :class:`EvalConfig` whose activation-addition ``coeff`` may
    be ``calibrated`` (the coefficient chosen by the ``calibrate_actadd`` stage)."""

    coeff: float | Literal["calibrated"] = 1.0

    def resolve(self, calibrated: float | None = None) -> EvalConfig:
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
