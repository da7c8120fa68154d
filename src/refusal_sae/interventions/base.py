"""The contract every intervention satisfies, so one engine can run them all."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import HookFn


@runtime_checkable
class Intervention(Protocol):
    """Produces ``(hook name, fn)`` pairs. ``last_positions``: ``None`` when it may change any position,
    else ``k``: it only touches the last ``k`` prompt positions (e.g. the post-instruction tokens), which
    lets the engine reuse the clean keys/values of every earlier position."""

    last_positions: int | None

    def hooks(self, handle: ModelHandle) -> list[tuple[str, HookFn]]: ...


InterventionSet = Sequence[Intervention]


def suffix_length(sets: Sequence[InterventionSet]) -> int | None:
    """Largest ``last_positions`` over all interventions; ``None`` if any may touch every position."""
    ks = [iv.last_positions for s in sets for iv in s]
    if any(k is None for k in ks):
        return None
    return max(ks, default=1)
