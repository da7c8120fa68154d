"""The contracts every intervention satisfies, so one engine can run them all."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import HookFn


@runtime_checkable
class Intervention(Protocol):
    """Produces ``(hook name, fn)`` pairs. ``last_positions``: ``None`` when it may change any position,
    else ``k``: it only touches the last ``k`` prompt positions (e.g. the post-instruction tokens), which
    lets the engine reuse the clean keys/values of every earlier position."""

    last_positions: int | None

    def hooks(self, handle: ModelHandle) -> list[tuple[str, HookFn]]: ...


@runtime_checkable
class SaeIntervention(Intervention, Protocol):
    """An edit of SAE codes at one hook point, with the SAE error term kept: ``x' = x + (f' − f) W_dec``.

    Split into ``encode`` and ``apply`` so that the engine can encode each prompt once per ``codes_key()`` (same
    SAE, same positions) and hand the shared codes to every intervention set that edits that SAE, instead of
    encoding once per set. Every feature edit of the package (clamps, steering) implements this protocol.
    """

    def codes_key(self) -> tuple: ...

    def encode(self, act: torch.Tensor) -> torch.Tensor: ...

    def apply(self, act: torch.Tensor, codes: torch.Tensor) -> torch.Tensor: ...


InterventionSet = Sequence[Intervention]


def set_hooks(handle: ModelHandle, interventions: InterventionSet) -> list[tuple[str, HookFn]]:
    """All hooks of one intervention set, in order (to attach with ``handle.hooks`` around generation)."""
    return [h for iv in interventions for h in iv.hooks(handle)]


def suffix_length(sets: Sequence[InterventionSet]) -> int | None:
    """Largest ``last_positions`` over all interventions; ``None`` if any may touch every position."""
    ks = [iv.last_positions for s in sets for iv in s]
    if any(k is None for k in ks):
        return None
    return max(ks, default=1)
