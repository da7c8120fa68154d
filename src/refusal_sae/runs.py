"""Run directories: one folder per stage with ``result.json`` (+ tensors); a stage whose result exists with
the same config hash is skipped, so interrupted pipelines resume where they stopped."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)


@dataclass
class RunDir:
    root: Path

    def stage(self, name: str) -> Path:
        p = Path(self.root) / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def is_complete(self, name: str, config: dict) -> bool:
        f = Path(self.root) / name / "result.json"
        if not f.is_file():
            return False
        try:
            return json.loads(f.read_text()).get("config_hash") == config_hash(config)
        except json.JSONDecodeError:
            return False

    def finish(self, name: str, config: dict, result: dict) -> Path:
        """Write ``result.json`` last: tensors written before it are part of a complete stage only once it exists."""
        path = self.stage(name) / "result.json"
        write_json_atomic(path, {"config": config, "config_hash": config_hash(config), **result})
        return path

    def load(self, name: str) -> dict:
        return json.loads((Path(self.root) / name / "result.json").read_text())
