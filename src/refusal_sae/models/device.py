"""``--device`` and ``--dtype`` checked before any work.

Left to torch, a device this machine lacks fails only when the model is moved to it, after it was built (``cuda``
without CUDA: an AssertionError; ``tpu``: a RuntimeError listing torch's internal device types; ``cuda:3`` on a
two-GPU machine: an error in the first forward pass). The spelling is checked without torch (``--help`` and
config parsing stay fast); whether the device exists here needs torch and is asked only for devices other than
``auto`` and ``cpu``. Half precision on the CPU is allowed: torch runs it (slowly).
"""

from __future__ import annotations

import re

from refusal_sae.errors import ConfigError

# dtype names the options accept → torch attribute names
DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")  # what a model can run on here; torch's other types (meta, ipu, ...) cannot
_DEVICE = re.compile(r"^(?P<type>[a-z]+)(?::(?P<index>\d+))?$")


def check_dtype(dtype: str, where: str = "dtype") -> None:
    if dtype != "auto" and dtype not in DTYPES:
        raise ConfigError(f"{where}: unknown dtype {dtype!r}; expected auto or one of {', '.join(sorted(DTYPES))}")


def parse_device(device: str, where: str = "device") -> tuple[str, int | None]:
    """``(type, index)`` of a device name (``auto``: ``("auto", None)``); a ConfigError for names torch cannot use."""
    if device == "auto":
        return "auto", None
    m = _DEVICE.match(device.strip().lower())
    if m is None or m["type"] not in DEVICE_TYPES:
        raise ConfigError(f"{where}: unknown device {device!r}; expected auto, cpu, cuda, cuda:N, mps or xpu")
    return m["type"], None if m["index"] is None else int(m["index"])


def device_unavailable(device: str, where: str = "device") -> str | None:
    """Why ``device`` cannot be used on this machine, or ``None`` when it can (``auto`` always can)."""
    kind, index = parse_device(device, where)
    if kind in ("auto", "cpu"):
        return None
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            return f"{where} {device}: CUDA is not available on this machine ({why}); use --device cpu or auto"
        count = torch.cuda.device_count()
        if index is not None and index >= count:
            return f"{where} {device}: this machine has {count} CUDA device{'s' * (count != 1)} (cuda:0-cuda:{count - 1})"
        return None
    if kind == "mps":
        ok = torch.backends.mps.is_available()
    else:
        ok = hasattr(torch, "xpu") and torch.xpu.is_available()
    return None if ok else f"{where} {device}: {kind} is not available on this machine; use --device cpu or auto"


def check_device(device: str, dtype: str = "auto", where: str = "") -> None:
    """A ConfigError when ``device`` is misspelt or absent from this machine, or ``dtype`` is unknown."""
    check_dtype(dtype, f"{where}dtype")
    problem = device_unavailable(device, f"{where}device")
    if problem:
        raise ConfigError(problem)
