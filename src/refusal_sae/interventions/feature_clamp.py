"""SAE feature interventions with the SAE error term kept, so only the chosen features change.

At the SAE's hook point: ``x' = x − decode(f) + decode(f')`` where ``f = encode(x)`` and ``f'`` is ``f`` with
the chosen features zeroed, scaled or set. Equivalently ``x' = decode(f') + (x − decode(f))``: the
reconstruction error stays, so features the SAE does not capture are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from refusal_sae.errors import ConfigError, MismatchError
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import HookFn, parse_hook_point

CLAMP_MODES = ("zero", "scale", "set")


def sae_hook_name(sae) -> str:
    meta = getattr(sae.cfg, "metadata", None)
    name = getattr(meta, "hook_name", None) if meta is not None else None
    if not name:
        raise ConfigError("this SAE has no hook name in its config (cfg.metadata.hook_name)")
    return name


@dataclass(frozen=True, eq=False)
class FeatureClamp:
    sae: object  # a sae_lens SAE (encode / decode / cfg)
    feature_ids: tuple[int, ...]
    mode: str = "zero"  # zero | scale (multiply by value) | set (to value)
    value: float = 0.0
    last_positions: int | None = None  # None: every position (generated tokens included)
    hook: str | None = None  # default: the SAE's own hook point

    def __post_init__(self):
        if self.mode not in CLAMP_MODES:
            raise ConfigError(f"unknown clamp mode {self.mode!r}; expected one of {CLAMP_MODES}")
        d_sae = self.sae.cfg.d_sae
        bad = [i for i in self.feature_ids if not 0 <= i < d_sae]
        if bad:
            raise ConfigError(f"feature ids {bad} out of range for an SAE of width {d_sae}")

    def _edit(self, f: torch.Tensor) -> torch.Tensor:
        ids = list(self.feature_ids)
        g = f.clone()
        if self.mode == "zero":
            g[..., ids] = 0.0
        elif self.mode == "scale":
            g[..., ids] = f[..., ids] * self.value
        else:
            g[..., ids] = self.value
        return g

    def hooks(self, handle: ModelHandle) -> list[tuple[str, HookFn]]:
        name = self.hook or sae_hook_name(self.sae)
        parse_hook_point(name, handle.n_layers)
        if self.sae.cfg.d_in != handle.d_model:
            raise MismatchError(f"SAE d_in {self.sae.cfg.d_in} does not match model d_model {handle.d_model}")
        sae, k = self.sae, self.last_positions

        def fn(act: torch.Tensor) -> torch.Tensor:
            x = act if k is None else act[:, -k:]
            dtype = x.dtype
            xs = x.to(sae.W_dec.dtype)
            f = sae.encode(xs)
            new = (xs - sae.decode(f) + sae.decode(self._edit(f))).to(dtype)
            if k is None:
                return new
            out = act.clone()
            out[:, -k:] = new
            return out

        return [(name, fn)]
