"""Run directories and the persistence scheme every stage uses (atomic writes, config-hashed results, manifest).

Import is torch-free; tensors are written with safetensors only inside :meth:`StageResult.save`.
"""

from refusal_sae.runs.io import (
    atomic_path,
    completed,
    config_hash,
    file_sha256,
    mark_complete,
    read_json,
    save_tensors_atomic,
    slug,
    write_json_atomic,
    write_jsonl_atomic,
)
from refusal_sae.runs.result import Float, StageResult
from refusal_sae.runs.rundir import MANIFEST, RunDir

__all__ = ["MANIFEST", "Float", "RunDir", "StageResult", "atomic_path", "completed", "config_hash", "file_sha256",
           "mark_complete", "read_json", "save_tensors_atomic", "slug", "write_json_atomic", "write_jsonl_atomic"]
