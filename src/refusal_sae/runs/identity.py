"""Which settings a result depends on, declared on the config's fields.

A stage whose work is split into sub-results (the search: ``candidates`` → ``choice`` → ``greedy`` → ``cards``) keys
each by the settings that can change it, so changing a later setting never recomputes an earlier result. The
fields say which: ``field(default=..., metadata=part_of("choice", "greedy"))``; a field without the marker belongs to
every sub-result, and ``part_of()`` (no names) to none (e.g. a batch size). :func:`settings_of` reads them.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def part_of(*results: str, only_when_changed: bool = False) -> dict[str, Any]:
    """Field metadata: the field joins the identity of these sub-results (``only_when_changed``: only when it differs
    from its default, so results made before the field existed keep their hash)."""
    return {"identity": results, "identity_when_changed": only_when_changed}


def settings_of(cfg: Any, result: str) -> dict[str, Any]:
    """The settings of ``cfg`` (a config dataclass) that ``result`` depends on, in field order."""
    out = {}
    for f in dataclasses.fields(cfg):
        results = f.metadata.get("identity")
        if results is not None and result not in results:
            continue
        value = getattr(cfg, f.name)
        if f.metadata.get("identity_when_changed") and value == f.default:
            continue
        out[f.name] = value
    return out
