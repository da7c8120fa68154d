"""Atomic file writes, config hashes and completion markers: the one persistence scheme of the package.

Every file is written to a temporary name beside its target and moved into place with ``os.replace``, so a
reader sees either the old file, the new file, or none, never half of one. A unit of work (a run stage, one
trained SAE, one tune candidate) is complete when its *marker* JSON exists and records the hash of the config
that produced it; anything written before the marker is part of that unit only once the marker exists.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from refusal_sae.errors import DataError


def config_hash(config: dict) -> str:
    """Stable 16-hex-digit hash of a JSON-able config (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def slug(text: str, max_len: int = 80) -> str:
    """A file-name-safe form of ``text`` (model ids, dataset paths), keeping its last ``max_len`` characters."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)).strip("_")[-max_len:]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _strict(obj):
    """NaN and infinities become ``null``: the files stay strict JSON that any reader (a browser, jq) accepts."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict(v) for v in obj]
    return obj


def write_json_atomic(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(_strict(obj), f, indent=2, default=str, allow_nan=False)
        f.write("\n")


def write_jsonl_atomic(path: str | Path, rows) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(_strict(row), ensure_ascii=False, default=str, allow_nan=False) + "\n")


def read_json(path: str | Path) -> dict | None:
    """The JSON object in ``path``, or ``None`` when it is missing or unreadable (an interrupted older writer)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def jsonl_objects(lines: Iterable[str], source: str | Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSONL file that is not ours (input data, labelled
    answers, another run's rows); a :class:`~refusal_sae.errors.DataError` naming ``source:line`` where a line is
    not a JSON object."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{source}:{n}: malformed JSON: {e.msg}") from None
        if not isinstance(row, dict):
            raise DataError(f"{source}:{n}: expected a JSON object")
        yield n, row


def save_tensors_atomic(path: str | Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))


def completed(marker: str | Path, config: dict) -> dict | None:
    """The marker's contents when it exists and was written for ``config`` (same hash), else ``None``."""
    info = read_json(marker)
    if info is None or info.get("config_hash") != config_hash(config):
        return None
    return info


def mark_complete(marker: str | Path, config: dict, payload: dict) -> dict:
    """Write the marker last: ``{"config", "config_hash", **payload}``."""
    info = {"config": config, "config_hash": config_hash(config), **payload}
    write_json_atomic(marker, info)
    return info


@cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, cached per (path, size, modification time): a file rewritten in the same process (an
    adapter or SAE retrained in place) is hashed again instead of reporting its old hash."""
    p = Path(path).resolve()
    st = p.stat()
    return _sha256(str(p), st.st_size, st.st_mtime_ns)
