"""Run directories: one folder per stage holding its typed result, and a ``manifest.json`` describing the run.

A stage whose result exists with the same config hash (and the result's current schema) is complete and is
skipped, so an interrupted pipeline resumes where it stopped. The manifest records what a report needs to say
what produced the results: package version, git commit, model / adapter / SAE identities, and per stage its
config hash, seed, wall time, finish time and the SHA-256 of every file it wrote.

Damage is noticed, never read as a result: a stage folder whose files are missing, cut short or changed since they
were written (:func:`~refusal_sae.runs.result.folder_damage`, against the manifest's hashes) counts as incomplete —
``run`` recomputes it and says so in one line, ``require`` names it, the report marks it. An unreadable manifest is
rebuilt from the results that verify.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TypeVar

from refusal_sae.errors import MissingResultError
from refusal_sae.runs.io import config_hash, file_sha256, read_json, write_json_atomic
from refusal_sae.runs.result import RESULT_FILE, StageResult, folder_damage

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
SKIP_DIRS = ("responses", "saes")  # caches and trained weights inside a run directory, not stage results
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


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class ResultState:
    """What a stage folder holds: ``complete`` (intact, this config), ``missing``, ``stale`` (another config or an
    older schema) or ``damaged`` (``reason`` says which file and how)."""

    status: str
    reason: str | None = None


@dataclass
class RunDir:
    root: Path
    log: Callable[[str], None] = field(default=_stderr, repr=False)  # one-line notices (repairs): stderr by default
    readonly: bool = False  # a dry run: say what would be repaired, write nothing

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # --- stages ------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """The stage folder ``name`` (created on demand)."""
        p = self.root / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def entry(self, name: str) -> dict | None:
        """The manifest's record of stage folder ``name`` (``None`` when it has none)."""
        e = self.manifest().get("stages", {}).get(name)
        return e if isinstance(e, dict) else None

    def state(self, cls: type[R], name: str | None = None, config: dict | None = None) -> ResultState:
        """Whether the stage folder holds an intact result of ``cls`` (for ``config``, when given)."""
        name = name or cls.kind
        folder = self.root / name
        entry = self.entry(name)
        if not folder.is_dir() or (not (folder / RESULT_FILE).is_file() and entry is None):
            return ResultState("missing")  # never written, or removed whole (a user's way to force a recompute)
        damage = folder_damage(folder, (entry or {}).get("files"), cls)
        if damage is not None:
            return ResultState("damaged", damage)
        meta = cls.read_meta(folder)
        if meta is None:
            return ResultState("stale", f"not a {cls.kind} result of schema {cls.schema}")
        if config is not None and meta.get("config_hash") != config_hash(config):
            return ResultState("stale", "made with another config")
        return ResultState("complete")

    def _read(self, cls: type[R], name: str, config: dict | None) -> tuple[R | None, ResultState]:
        state = self.state(cls, name, config)
        if state.status != "complete":
            return None, state
        try:
            return cls.load(self.root / name), state
        except (OSError, ValueError, KeyError, TypeError, MissingResultError) as e:  # a file that hashes right
            # but does not parse: only a folder written before hashes were recorded gets here
            return None, ResultState("damaged", " ".join(str(e).split())[:200])

    def load(self, cls: type[R], name: str | None = None, config: dict | None = None) -> R | None:
        """The stage's result, or ``None`` when it is missing, damaged, of an older schema, or (given ``config``)
        made with another config."""
        return self._read(cls, name or cls.kind, config)[0]

    def require(self, cls: type[R], command: str, name: str | None = None, what: str | None = None) -> R:
        """The stage's result, or a clear error naming the command that makes it (or remakes a damaged one)."""
        result, state = self._read(cls, name or cls.kind, None)
        if result is None:
            what = what or (name or cls.kind) + " result"
            if state.status == "damaged":
                raise MissingResultError(f"the {what} in {self.root / (name or cls.kind)} is damaged ({state.reason}); "
                                         f"run `{command}` to recompute it")
            raise MissingResultError(f"no {what} in {self.root}; run `{command}` first")
        return result

    def save(self, result: StageResult, config: dict, name: str | None = None, wall_s: float | None = None) -> Path:
        """Write ``result`` with its config (``result.json`` last) and record the stage in the manifest."""
        name = name or result.kind
        meta = {"config": config, "config_hash": config_hash(config), "finished": _now(), "wall_s": wall_s}
        path = result.save(self.path(name), meta)
        self._update_manifest(stages={name: _entry(path.parent)})
        return path

    def run(self, cls: type[R], config: dict, compute: Callable[[], R], name: str | None = None,
            force: bool = False) -> R:
        """The stage's result for ``config``: loaded when complete (unless ``force``), else computed and saved; a
        damaged folder is recomputed with a one-line notice."""
        if not force:
            done, state = self._read(cls, name or cls.kind, config)
            if done is not None:
                return done
            if state.status == "damaged":
                self.log(f"{name or cls.kind}: damaged ({state.reason}): recomputing")
        t0 = time.perf_counter()
        result = compute()
        self.save(result, config, name, wall_s=round(time.perf_counter() - t0, 2))
        return result

    # --- manifest ----------------------------------------------------------------------------
    def manifest(self) -> dict:
        """The run's manifest (``{}`` when there is none); an unreadable one is rebuilt from the results that verify,
        with a one-line notice."""
        path = self.root / MANIFEST
        m = read_json(path)
        if m is None and path.exists():
            return self._rebuild_manifest()
        return m or {}

    def results(self) -> list[tuple[str, dict | None, str | None]]:
        """``(folder, manifest entry, damage)`` of every stage result in the run directory: each folder with a
        ``result.json`` and each folder the manifest lists (damage ``None``: intact)."""
        stages = self.manifest().get("stages", {})
        names = {p.parent.relative_to(self.root).as_posix() for p in self.root.rglob(RESULT_FILE)
                 if p.parent != self.root} if self.root.is_dir() else set()
        names = {n for n in names if n.split("/")[0] not in SKIP_DIRS} | {n for n in stages if (self.root / n).is_dir()}
        out = []
        for n in sorted(names):
            e = stages.get(n) if isinstance(stages.get(n), dict) else None
            out.append((n, e, folder_damage(self.root / n, (e or {}).get("files"))))
        return out

    def _rebuild_manifest(self) -> dict:
        intact, damaged = {}, []
        for p in sorted(self.root.rglob(RESULT_FILE)):
            name = p.parent.relative_to(self.root).as_posix()
            if p.parent == self.root or name.split("/")[0] in SKIP_DIRS:
                continue
            if folder_damage(p.parent) is None:
                intact[name] = _entry(p.parent)
            else:
                damaged.append(name)
        m = {"schema": MANIFEST_SCHEMA, "created": _now(), "rebuilt": _now(), "stages": intact}
        if not self.readonly:
            write_json_atomic(self.root / MANIFEST, m)
        self.log(f"{self.root / MANIFEST}: unreadable; {'`run` rebuilds it' if self.readonly else 'rebuilt'} from "
                 f"the {len(intact)} results that verify"
                 + (f" ({len(damaged)} damaged left out: {', '.join(damaged)})" if damaged else ""))
        return m

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


def _entry(folder: Path) -> dict:
    """The manifest's record of a saved stage folder: from its ``result.json``, plus that file's own hash."""
    info = read_json(folder / RESULT_FILE) or {}
    meta = info.get("meta") or {}
    files = dict(meta.get("files") or {}) | {RESULT_FILE: file_sha256(folder / RESULT_FILE)}
    return {"kind": info.get("kind"), "schema": info.get("schema"), "config_hash": meta.get("config_hash"),
            "seed": (meta.get("config") or {}).get("seed"), "finished": meta.get("finished"),
            "wall_s": meta.get("wall_s"), "files": files}
