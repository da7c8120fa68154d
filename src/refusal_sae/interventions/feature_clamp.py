"""SAE feature interventions with the SAE error term kept, so only the chosen features change.

At the SAE's hook point: ``x' = x − decode(f) + decode(f')`` where ``f = encode(x)`` and ``f'`` is ``f`` with
the chosen features zeroed, scaled or set. Equivalently ``x' = decode(f') + (x − decode(f))``: the
reconstruction error stays, so features the SAE does not capture are untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
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
        norm = getattr(self.sae.cfg, "normalize_activations", "none") or "none"
        if norm not in ("none", "expected_average_only_in"):
            # sae-lens rescales such SAEs' outputs per token with state kept between encode and decode
            raise ConfigError(f"SAEs with normalize_activations={norm!r} are not supported by feature clamps; "
                              "fold the normalisation into the weights first")

    def codes_key(self) -> tuple:
        """Clamps with equal keys encode the same activations the same way, so the engine can share codes."""
        return (id(self.sae), self.last_positions)

    def encode(self, act: torch.Tensor) -> torch.Tensor:
        """SAE codes of the positions this clamp edits."""
        x = act if self.last_positions is None else act[:, -self.last_positions :]
        return self.sae.encode(x.to(self.sae.W_dec.dtype))

    def apply(self, act: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``act`` with the chosen features edited, given ``codes = self.encode(act)``.

        ``x' = x − decode(f) + decode(f') = x + (f' − f) W_dec``: the biases and the reconstruction error cancel,
        so only the chosen rows of ``W_dec`` are needed (no full decode, and no rounding from a reconstruction).
        """
        ids = list(self.feature_ids)
        return add_code_change(self.sae, ids, self.code_change(codes[..., ids]), act, self.last_positions)

    def code_change(self, f: torch.Tensor) -> torch.Tensor:
        """``f' − f`` for the codes ``f`` of the chosen features: ``−f`` (zero), ``f·(value − 1)`` (scale) or
        ``value − f`` (set)."""
        if self.mode == "zero":
            return -f
        if self.mode == "scale":
            return f * (self.value - 1.0)
        return self.value - f

    def hooks(self, handle: ModelHandle) -> list[tuple[str, HookFn]]:
        return sae_edit_hooks(self, handle)


@dataclass(frozen=True, eq=False)
class FeatureClampFrom(FeatureClamp):
    """Clamp SAE features from a prompt position on: feature ``feature_ids[i]`` is edited on the last ``spans[i]``
    positions of the prompt (a prompt of ``n`` tokens clamped from position ``p`` has span ``n − p``) and on every
    generated token; earlier positions keep their activations. Spans count from the end, so the same edit is right
    for the prompt alone and inside a left-padded batch. The arithmetic and the kept error term are
    :class:`FeatureClamp`'s, and ``last_positions`` is the longest span, so the engine may share the clean prefix
    before it."""

    spans: tuple[int, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        if len(self.spans) != len(self.feature_ids) or not self.spans or min(self.spans) < 1:
            raise ValueError(f"need one positive span per feature, got {self.spans} for {self.feature_ids}")
        object.__setattr__(self, "last_positions", max(self.spans))

    @classmethod
    def from_positions(cls, sae, feature_ids: Sequence[int], positions: Sequence[int], n_tokens: int,
                       c: float) -> FeatureClampFrom:
        """Clamp ``feature_ids`` from ``positions`` (0-based, in a prompt of ``n_tokens``) on: ×``c`` (0: zero)."""
        spans = tuple(n_tokens - int(p) for p in positions)
        mode, value = ("zero", 0.0) if c == 0 else ("scale", float(c))
        return cls(sae, tuple(int(f) for f in feature_ids), mode, value, spans=spans)

    def apply(self, act: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``act`` with each feature edited on its own last positions (``codes = self.encode(act)`` covers the last
        ``last_positions`` positions, or all of them on a generation step that holds fewer)."""
        ids = list(self.feature_ids)
        df = self.code_change(codes[..., ids])
        width = df.shape[-2]
        from_end = torch.arange(width - 1, -1, -1, device=df.device)[:, None]  # position's distance from the end
        df = df * (from_end < torch.tensor(self.spans, device=df.device)[None, :]).to(df.dtype)
        return add_code_change(self.sae, ids, df, act, width)


def add_code_change(sae, ids: list[int], df: torch.Tensor, act: torch.Tensor, k: int | None) -> torch.Tensor:
    """``act + df @ W_dec[ids]`` (on the last ``k`` positions when given): a change of SAE codes written back into
    the stream with the SAE's biases and reconstruction error untouched (they cancel), so the error term is kept."""
    w = sae.W_dec[ids]
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):  # sae-lens act_times_W_dec semantics
        df = df / w.norm(dim=-1)
    delta = (df @ w).to(act.dtype)
    if k is None:
        return act + delta
    out = act.clone()
    out[:, -k:] += delta
    return out


def sae_edit_hooks(edit, handle: ModelHandle) -> list[tuple[str, HookFn]]:
    """The one hook of an SAE edit (``edit.sae``, ``edit.hook``, ``edit.encode`` / ``edit.apply``), checked against
    the model first."""
    name = edit.hook or sae_hook_name(edit.sae)
    parse_hook_point(name, handle.n_layers)
    if edit.sae.cfg.d_in != handle.d_model:
        raise MismatchError(f"SAE d_in {edit.sae.cfg.d_in} does not match model d_model {handle.d_model}")
    return [(name, lambda act: edit.apply(act, edit.encode(act)))]
