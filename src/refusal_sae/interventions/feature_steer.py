"""Feature steering: raise chosen SAE features to per-feature target values, with the SAE error term kept.

At the SAE's hook point: ``x' = x + (f' − f) W_dec`` with ``f = encode(x)`` and, for each chosen feature ``j`` with
target ``t_j``,

- ``mode="floor"``: ``f'_j = max(f_j, t_j)`` (a feature already above its target is left alone), or
- ``mode="set"``: ``f'_j = t_j`` (natural variation removed);

every other feature, the biases and the reconstruction error are unchanged. This is the steering of O'Brien et al.
("Steering Language Model Refusal with Sparse Autoencoders") generalised to several features with a value each:
a feature is clamped to a multiple of its typical activation on refused prompts. :class:`FeatureClamp` cannot do it:
its ``set`` mode writes one value for all its features. ``last_positions=None`` steers every position, generated
tokens included, so greedy generation under the hooks keeps steering each new token.

Conditional steering (steer only prompts where a harm feature fires) is a per-prompt choice of intervention set, see
:mod:`refusal_sae.analysis.harden`; the edit itself is unconditional.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from refusal_sae.errors import ConfigError
from refusal_sae.interventions.feature_clamp import FeatureClamp, add_code_change, sae_edit_hooks
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import HookFn

STEER_MODES = ("floor", "set")


@dataclass(frozen=True, eq=False)
class FeatureSteer:
    sae: object  # a sae_lens SAE (encode / cfg / W_dec)
    feature_ids: tuple[int, ...]
    targets: tuple[float, ...]  # one target code value per feature
    mode: str = "floor"  # floor: f' = max(f, target) | set: f' = target
    last_positions: int | None = None  # None: every position (generated tokens included)
    hook: str | None = None  # default: the SAE's own hook point

    def __post_init__(self):
        if self.mode not in STEER_MODES:
            raise ConfigError(f"unknown steering mode {self.mode!r}; expected one of {STEER_MODES}")
        if len(self.targets) != len(self.feature_ids):
            raise ConfigError(f"{len(self.targets)} targets for {len(self.feature_ids)} features")
        if len(set(self.feature_ids)) != len(self.feature_ids):
            raise ConfigError(f"repeated feature ids in {self.feature_ids}")
        bad = [t for t in self.targets if not math.isfinite(t) or t < 0]
        if bad:
            raise ConfigError(f"steering targets must be finite and non-negative (SAE codes are), got {bad}")
        # the same checks as a clamp: ids in range, no per-token normalisation state
        FeatureClamp(self.sae, self.feature_ids, "zero", 0.0, self.last_positions, self.hook)

    def codes_key(self) -> tuple:
        """Edits with equal keys encode the same activations the same way (shared with clamps on the same SAE)."""
        return (id(self.sae), self.last_positions)

    def encode(self, act: torch.Tensor) -> torch.Tensor:
        """SAE codes of the positions this edit touches."""
        x = act if self.last_positions is None else act[:, -self.last_positions :]
        return self.sae.encode(x.to(self.sae.W_dec.dtype))

    def new_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """The chosen features' codes after steering, ``[..., n_features]``."""
        f = codes[..., list(self.feature_ids)]
        t = torch.tensor(self.targets, dtype=f.dtype, device=f.device)
        return torch.maximum(f, t) if self.mode == "floor" else t.expand_as(f)

    def apply(self, act: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``act`` with the chosen features steered, given ``codes = self.encode(act)``: ``x + (f' − f) W_dec`` over
        the chosen rows only (biases and reconstruction error cancel, as in :class:`FeatureClamp`)."""
        sae, ids, k = self.sae, list(self.feature_ids), self.last_positions
        df = self.new_codes(codes) - codes[..., ids]
        return add_code_change(sae, ids, df, act, k)

    def hooks(self, handle: ModelHandle) -> list[tuple[str, HookFn]]:
        return sae_edit_hooks(self, handle)
