"""Shared CLI pieces: the typer app, consoles, common options and small parsers.

Heavy imports (torch, transformers) happen inside commands, so ``--help`` answers at once.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Dissect why chat LLMs refuse harmful requests, with refusal directions and SAEs.")
err = Console(stderr=True)
out = Console()

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="HF id, local HF dir, .gguf file, or embedded name (default: smollm2-135m-refusing).")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", envvar="REFUSAL_SAE_DATA_DIR", help="Folder holding the prompt datasets (default: ../shared/datasets when present).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, ...")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]
TrustOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Allow model repos to run their own code (off by default).")]
OfflineOpt = Annotated[bool, typer.Option("--offline", envvar="HF_HUB_OFFLINE", help="Never touch the hub: hub ids must be in the local HF cache.")]
RunDirOpt = Annotated[Optional[Path], typer.Option("--run-dir", help="Run directory (default: runs/<model>).")]


@app.callback()


def _root() -> None:
    """Dissect why chat LLMs refuse harmful requests, with refusal directions and SAEs."""


def command_line() -> str:
    return "refusal-sae " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def int_list(text: str | None) -> tuple[int, ...] | None:
    """'0,3,5-9' → (0, 3, 5, 6, 7, 8, 9); '3-24:3' → every third from 3 to 24; negatives allowed ('-2,-1')."""
    from refusal_sae.errors import ConfigError

    if not text:
        return None
    vals: list[int] = []
    try:
        for part in text.split(","):
            part, _, step = part.strip().partition(":")
            a, sep, b = part[1:].partition("-")
            if sep:
                vals += list(range(int(part[0] + a), int(b) + 1, int(step or 1)))
            else:
                vals.append(int(part))
    except ValueError:
        raise ConfigError(f"cannot parse {text!r} as a list of integers like '0,3,5-9'") from None
    return tuple(vals)


def load_handle(model, device, dtype, trust_remote_code, offline):
    from refusal_sae.models import load_model

    return load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                      local_files_only=offline)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_")[-80:]


def default_run_dir(model: str | None) -> Path:
    from refusal_sae.models import DEFAULT_MODEL

    return Path("runs") / slug(model or DEFAULT_MODEL)


def intervention_hooks(handle, intervention: str, run_dir: Path | None, coeff: float,
                       ablate_layers: tuple[int, ...] | None = None):
    from refusal_sae.errors import ConfigError
    from refusal_sae.interventions import ActAdd, DirectionAblation

    if intervention == "none":
        return []
    if intervention not in ("ablate", "actadd"):
        raise ConfigError(f"unknown intervention {intervention!r}; expected none, ablate or actadd")
    d = load_direction(run_dir or default_run_dir(handle.name))
    if intervention == "ablate":
        return DirectionAblation(d.direction, layers=ablate_layers).hooks(handle)
    return ActAdd(d.direction, d.layer, coeff).hooks(handle)


def load_direction(run_dir: Path):
    from refusal_sae.direction.stage import DirectionResult
    from refusal_sae.errors import ConfigError

    stage = Path(run_dir) / "direction"
    if not (stage / "result.json").is_file():
        raise ConfigError(f"no refusal direction in {stage}; run `refusal-sae direction --run-dir {run_dir}` first")
    return DirectionResult.load(stage)


