"""``StageResult``: the typed result every stage returns, saved into and loaded from its stage folder.

A stage result is a ``@dataclass`` that also derives from :class:`StageResult`. Its fields are written as:

- tensors (``tensor_fields``) → ``tensors.safetensors`` (never pickle);
- long row lists (``jsonl_fields``, e.g. an evaluation's per-prompt rows) → ``<field>.jsonl``;
- everything else → ``result.json`` under ``"data"``, beside ``"kind"``, ``"schema"`` and the run's ``"meta"``
  (config, config hash, finish time, and the SHA-256 of every other file of the folder), written last.

:func:`folder_damage` says why a saved folder cannot be trusted (a file missing, cut short or changed since it was
written), so a damaged result is recomputed or reported instead of being read as if intact.

(De)serialisation of nested dataclasses, tuples and optional fields is pydantic's ``TypeAdapter`` (pydantic is
already a dependency of typer), so a result class is nothing but its field declarations. Bump ``schema`` when a
field changes meaning: older folders then count as incomplete and the stage recomputes instead of misreading them.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BeforeValidator, ConfigDict, TypeAdapter

from refusal_sae.errors import MissingResultError
from refusal_sae.runs.io import (
    file_sha256,
    read_json,
    read_jsonl,
    save_tensors_atomic,
    write_json_atomic,
    write_jsonl_atomic,
)

RESULT_FILE = "result.json"
TENSOR_FILE = "tensors.safetensors"

#: A float field that may be NaN (e.g. a skipped candidate's score): JSON stores it as null, loading gives NaN back.
Float = Annotated[float, BeforeValidator(lambda v: math.nan if v is None else v)]

R = TypeVar("R", bound="StageResult")


@cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


class StageResult:
    """Mixin for stage-result dataclasses (see the module docstring)."""

    __pydantic_config__ = ConfigDict(arbitrary_types_allowed=True)
    kind: ClassVar[str]
    schema: ClassVar[int] = 1
    tensor_fields: ClassVar[tuple[str, ...]] = ()
    jsonl_fields: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON part of the result (tensors and row files left out)."""
        skip = set(self.tensor_fields) | set(self.jsonl_fields)
        return _adapter(type(self)).dump_python(self, mode="json", exclude=skip)

    @classmethod
    def file_names(cls) -> list[str]:
        """The files besides ``result.json`` that a saved result of this class consists of."""
        return ([TENSOR_FILE] if cls.tensor_fields else []) + [f"{f}.jsonl" for f in cls.jsonl_fields]

    def save(self, stage_dir: str | Path, meta: dict | None = None) -> Path:
        """Write the result into ``stage_dir`` (tensors and rows first, ``result.json`` last, recording their
        SHA-256 in its ``meta.files``); returns its path."""
        stage_dir = Path(stage_dir)
        if self.tensor_fields:
            save_tensors_atomic(stage_dir / TENSOR_FILE, {f: getattr(self, f) for f in self.tensor_fields})
        for f in self.jsonl_fields:
            write_jsonl_atomic(stage_dir / f"{f}.jsonl", getattr(self, f))
        files = {name: file_sha256(stage_dir / name) for name in self.file_names()}
        path = stage_dir / RESULT_FILE
        write_json_atomic(path, {"kind": self.kind, "schema": self.schema, "meta": (meta or {}) | {"files": files},
                                 "data": self.to_json()})
        return path

    @classmethod
    def read_meta(cls, stage_dir: str | Path) -> dict | None:
        """The ``meta`` of a saved result of this kind and schema in ``stage_dir``; ``None`` when there is none."""
        info = read_json(Path(stage_dir) / RESULT_FILE)
        if info is None or info.get("kind") != cls.kind or info.get("schema") != cls.schema:
            return None
        return info.get("meta", {})

    @classmethod
    def load(cls: type[R], stage_dir: str | Path) -> R:
        stage_dir = Path(stage_dir)
        info = read_json(stage_dir / RESULT_FILE)
        if info is None:
            raise MissingResultError(f"no {cls.kind} result in {stage_dir}")
        if info.get("kind") != cls.kind or info.get("schema") != cls.schema:
            raise MissingResultError(f"{stage_dir / RESULT_FILE} holds a {info.get('kind')!r} result of schema "
                                     f"{info.get('schema')}, not {cls.kind!r} schema {cls.schema}; re-run that stage")
        fields = dict(info["data"])
        if cls.tensor_fields:
            from safetensors.torch import load_file

            fields |= load_file(str(stage_dir / TENSOR_FILE))
        for f in cls.jsonl_fields:
            fields[f] = read_jsonl(stage_dir / f"{f}.jsonl")
        return _adapter(cls).validate_python(fields)


def folder_damage(stage_dir: str | Path, expected: dict | None = None, cls: type[StageResult] | None = None) -> str | None:
    """Why the result saved in ``stage_dir`` is damaged, or ``None`` when every file is there as it was written.

    ``expected``: the SHA-256 per file name that the run's manifest recorded (``result.json`` included); the
    hashes in ``result.json``'s own ``meta.files`` cover the other files. A folder saved before hashes were recorded
    is checked for its files' presence (``cls``'s file names)."""
    stage_dir = Path(stage_dir)
    res = stage_dir / RESULT_FILE
    if not res.is_file():
        return f"{RESULT_FILE} missing"
    info = read_json(res)
    if info is None:
        return f"{RESULT_FILE} unreadable (cut short or not JSON)"
    want = (expected or {}).get(RESULT_FILE)
    if want and file_sha256(res) != want:
        return f"{RESULT_FILE} differs from what was written (SHA-256)"
    meta = info.get("meta") if isinstance(info.get("meta"), dict) else {}
    files = meta.get("files")
    if not isinstance(files, dict):
        files = dict.fromkeys(cls.file_names() if cls is not None else [])
    for name, sha in files.items():
        p = stage_dir / name
        if not p.is_file():
            return f"{name} missing"
        if sha and file_sha256(p) != sha:
            return f"{name} differs from what was written (SHA-256: cut short, edited or replaced)"
    return None
