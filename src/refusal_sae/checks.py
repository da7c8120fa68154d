"""Checks of the files a command reads and the places it writes, made before any work (torch-free).

Weights files: sae-lens and peft open them only after the model is built, and a damaged one then fails with a
traceback from the safetensors reader (after ~30 s of model building, for an adapter). Output places: a run
directory that is an existing file, or under a folder without write permission, failed at the first write, after the
model had loaded. Text files a user passes (eval rows, labelled answers): a binary one raised a UnicodeDecodeError
traceback. Nothing here creates anything: a failed check leaves no empty folder behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from refusal_sae.errors import ConfigError, DataError, ModelLoadError


def check_safetensors(path: str | Path, what: str) -> None:
    """``path`` is a complete safetensors file: its 8-byte header length, its JSON header, and data offsets that cover
    the file exactly. The tensors are not read.

    Not hand-written: safetensors' own ``safe_open`` makes exactly these checks on a memory map (no tensor is read,
    so a multi-gigabyte file costs nothing) and rejects truncated, padded and garbage files with a
    ``SafetensorError``; framework ``numpy`` keeps torch out of it."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{what}: weights file not found: {path}")
    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except (SafetensorError, OSError) as e:
        reason = str(e).removeprefix("Error while deserializing header: ")
        raise ModelLoadError(f"{what}: {path} is not a valid safetensors file ({reason}; the file has "
                             f"{path.stat().st_size:,} bytes): cut short, or not a weights file; save or download it "
                             "again") from None


def check_adapter_dir(adapter: str | Path) -> Path:
    """The LoRA adapter folder, its files checked before any model is built (peft reads them after)."""
    path = Path(adapter).expanduser()
    weights = path / "adapter_model.safetensors"
    if not weights.is_file() and (path / "adapter_model.bin").is_file():
        # peft would unpickle it, and a pickle can run any code: only safetensors weights are read
        raise ModelLoadError(f"adapter {path} holds adapter_model.bin, a pickle, which is never loaded (unpickling runs "
                             "code); save it as adapter_model.safetensors (peft: save_pretrained(..., "
                             "safe_serialization=True))")
    if not weights.is_file() or not (path / "adapter_config.json").is_file():
        raise ModelLoadError(f"{path} is not a LoRA adapter directory (adapter_config.json + adapter_model.safetensors, "
                             "as `refusal-sae make-refusing-model` or peft's save_pretrained write)")
    try:
        json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"adapter {path}: adapter_config.json is not readable JSON ({e})") from None
    check_safetensors(weights, f"adapter {path}")
    return path


def read_user_text(path: Path, what: str) -> str:
    """The UTF-8 text of a user's file; a binary or otherwise undecodable one is one DataError naming the byte."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text file (byte {e.start} is 0x{e.object[e.start]:02x}); expected "
                        f"{what}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _check_creatable(folder: Path, what: str, shown: Path) -> None:
    """``folder`` exists as a writable directory or can be made: its nearest existing ancestor is a directory this
    process may write in (errors name ``shown``, the setting's value)."""
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise ConfigError(f"{what} {shown} cannot be created: {base} is a file, not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {shown} cannot be written: no permission to write in {base}")


def check_output_dir(path: str | Path, what: str) -> None:
    """``path`` is a directory this process may write in, or can be created as one."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise ConfigError(f"{what} {path} is an existing file, not a directory; choose another {what}")
    _check_creatable(path, what, path)


def check_output_file(path: str | Path, what: str) -> None:
    """``path`` can be written: not a directory, and its folder writable or creatable (files are replaced through a
    temporary file beside them, so the folder's permission is what counts)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory; give a file name, e.g. {path / 'report.html'}")
    _check_creatable(path.absolute().parent, what, path)


def outside_cwd(path: str | Path) -> Path | None:
    """The absolute ``path`` when it lies outside the working directory, else ``None``."""
    full = Path(path).resolve()
    return None if full.is_relative_to(Path.cwd().resolve()) else full
