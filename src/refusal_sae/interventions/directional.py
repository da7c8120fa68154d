"""Directional interventions (Arditi et al. 2024) as small value objects that produce hooks.

- :class:`DirectionAblation` projects a unit direction out of the residual stream at every layer and
  position (``resid_pre`` of each block and the outputs of attention and MLP), generated tokens included.
- :class:`ActAdd` adds ``coeff * vector`` to ``resid_pre`` of one layer at every position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from refusal_sae.errors import ConfigError, MismatchError
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import HookFn, hook_name
from refusal_sae.ops import unit


def check_dim(handle: ModelHandle, v: torch.Tensor, what: str) -> None:
    if v.shape != (handle.d_model,):
        raise MismatchError(f"{what} has shape {tuple(v.shape)}, model d_model is {handle.d_model}")


def projection_remover(direction: torch.Tensor) -> HookFn:
    r = unit(direction)

    def fn(act: torch.Tensor) -> torch.Tensor:
        d = r.to(act.dtype).to(act.device)
        return act - (act @ d).unsqueeze(-1) * d

    return fn


def adder(vector: torch.Tensor, coeff: float) -> HookFn:
    def fn(act: torch.Tensor) -> torch.Tensor:
        return act + coeff * vector.to(act.dtype).to(act.device)

    return fn


@dataclass(frozen=True)
class DirectionAblation:
    direction: torch.Tensor
    layers: tuple[int, ...] | None = None  # None: every layer
    last_positions: int | None = None  # ablation acts at every position

    def hooks(self, handle: ModelHandle) -> list[tuple[str, HookFn]]:
        check_dim(handle, self.direction, "ablation direction")
        layers = range(handle.n_layers) if self.layers is None else self.layers
        bad = [L for L in layers if not 0 <= L < handle.n_layers]
        if bad or not layers:
            raise ConfigError(f"ablation layers {bad or 'none'} out of range, model has {handle.n_layers} layers")
        fn = projection_remover(self.direction.float())
        return [(hook_name(L, k), fn) for L in layers for k in ("resid_pre", "attn_out", "mlp_out")]


@dataclass(frozen=True)
class ActAdd:
    vector: torch.Tensor
    layer: int
    coeff: float = 1.0
    last_positions: int | None = None  # None: every position; k: only the last k prompt positions

    def _fn(self) -> HookFn:
        add = adder(self.vector.float(), self.coeff)
        if self.last_positions is None:
            return add
        k = self.last_positions

        def fn(act: torch.Tensor) -> torch.Tensor:
            act = act.clone()
            act[:, -k:] = add(act[:, -k:])
            return act

        return fn

    def hooks(self, handle: ModelHandle) -> list[tuple[str, HookFn]]:
        check_dim(handle, self.vector, "activation-addition vector")
        if not 0 <= self.layer < handle.n_layers:
            raise ConfigError(f"layer {self.layer} out of range, model has {handle.n_layers} layers")
        return [(hook_name(self.layer, "resid_pre"), self._fn())]
