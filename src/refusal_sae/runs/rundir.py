"""Run directories: one folder per stage holding its typed result, and a ``manifest.json`` describing the run.

A stage whose result exists with the same config hash (and the result's current schema) is complete and is
skipped, so an interrupted pipeline resumes where it stopped. The manifest records what a report needs to say
what produced the results: package version, git commit, model / adapter / SAE identities, and per stage its
config hash, seed, wall time and finish time.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TypeVar

from refusal_sae.errors import MissingResultError
from refusal_sae.runs.io import config_hash, file_sha256, read_json, write_json_atomic
from refusal_sae.runs.result import StageResult

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
R = TypeVar("R", bound=StageResult)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@cache
def git_commit() -> dict | None:
    """Commit (and whether the tree has local changes) of the source checkout this package runs from, if any."""
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


@dataclass
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # --- stages ------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """The stage folder ``name`` (created on demand)."""
        p = self.root / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def load(self, cls: type[R], name: str | None = None, config: dict | None = None) -> R | None:
        """The stage's result, or ``None`` when it is missing, of an older schema, or (given ``config``) made with
        another config."""
        folder = self.root / (name or cls.kind)
        meta = cls.read_meta(folder)
        if meta is None or (config is not None and meta.get("config_hash") != config_hash(config)):
            return None
        return cls.load(folder)

    def require(self, cls: type[R], command: str, name: str | None = None, what: str | None = None) -> R:
        """The stage's result, or a clear error naming the command that makes it."""
        result = self.load(cls, name)
        if result is None:
            raise MissingResultError(f"no {what or (name or cls.kind) + ' result'} in {self.root}; run `{command}` first")
        return result

    def save(self, result: StageResult, config: dict, name: str | None = None, wall_s: float | None = None) -> Path:
        """Write ``result`` with its config (``result.json`` last) and record the stage in the manifest."""
        name = name or result.kind
        meta = {"config": config, "config_hash": config_hash(config), "finished": _now(), "wall_s": wall_s}
        path = result.save(self.path(name), meta)
        entry = {"kind": result.kind, "schema": result.schema, "config_hash": meta["config_hash"],
                 "seed": config.get("seed"), "finished": meta["finished"], "wall_s": wall_s}
        self._update_manifest(stages={name: entry})
        return path

    def run(self, cls: type[R], config: dict, compute: Callable[[], R], name: str | None = None,
            force: bool = False) -> R:
        """The stage's result for ``config``: loaded when complete (unless ``force``), else computed and saved."""
        if not force:
            done = self.load(cls, name, config)
            if done is not None:
                return done
        t0 = time.perf_counter()
        result = compute()
        self.save(result, config, name, wall_s=round(time.perf_counter() - t0, 2))
        return result

    # --- manifest ----------------------------------------------------------------------------
    def manifest(self) -> dict:
        return read_json(self.root / MANIFEST) or {}

    def record_model(self, handle) -> None:
        """Record the loaded model's identity (name, exact weights, adapter) in the manifest."""
        self._update_manifest(model={"name": handle.name, "revision": handle.revision,
                                     "adapter": getattr(handle, "adapter", None), "n_layers": handle.n_layers,
                                     "d_model": handle.d_model, "dtype": str(handle.dtype).replace("torch.", "")})

    def record_saes(self, saes) -> None:
        """Record each SAE's source and, for local folders, the hash of its weights."""
        rows = {}
        for name in saes:
            src = Path(saes.sources[name])
            weights = src / "sae_weights.safetensors"
            rows[name] = {"source": str(src), "d_sae": int(saes[name].cfg.d_sae),
                          "sha256": file_sha256(weights) if weights.is_file() else None}
        self._update_manifest(saes=rows)

    def _update_manifest(self, stages: dict | None = None, **sections) -> None:
        from refusal_sae import __version__

        m = self.manifest()
        if not m:
            m = {"schema": MANIFEST_SCHEMA, "created": _now(), "stages": {}}
        m.update(package_version=__version__, git=git_commit(), updated=_now(), **sections)
        m.setdefault("stages", {}).update(stages or {})
        write_json_atomic(self.root / MANIFEST, m)
