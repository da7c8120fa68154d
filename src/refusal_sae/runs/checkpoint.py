"""``Checkpoint``: the finished items of one long unit of work, kept on disk as they are made, so an interrupted unit
resumes at the next item instead of from zero (the search's K × c grid and its random controls: one judged
intervention set per item).

One marker JSON (:func:`~refusal_sae.runs.io.mark_complete`: the unit's config and its hash, then the items),
rewritten atomically after each item; items saved for another config are ignored. The caller removes it once the
unit's result is saved. Items must be JSON values (labels, counts), never tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refusal_sae.runs.io import completed, mark_complete


class Checkpoint:
    def __init__(self, path: str | Path | None, config: dict) -> None:
        self.path = Path(path) if path is not None else None
        self.config = config
        done = completed(self.path, config) if self.path is not None else None
        self.items: dict[str, Any] = dict((done or {}).get("items", {}))
        self.resumed = len(self.items)  # items found from an interrupted run

    def get(self, key: str) -> Any | None:
        return self.items.get(key)

    def put(self, key: str, value: Any) -> None:
        self.items[key] = value
        if self.path is not None:
            mark_complete(self.path, self.config, {"items": self.items})

    def clear(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
