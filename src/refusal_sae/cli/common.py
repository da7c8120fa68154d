"""Shared CLI pieces: the typer app, consoles, the model options every command shares, small parsers.

Heavy imports (torch, transformers) happen inside commands, so ``--help`` answers at once. Commands only parse
options, call the library, and print.
"""

from __future__ import annotations

import functools
import inspect
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional, get_type_hints

import typer
from rich.console import Console

from refusal_sae.models.options import ModelSpec

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Dissect why chat LLMs refuse harmful requests, with refusal directions and SAEs.")
err = Console(stderr=True)
out = Console(soft_wrap=True)  # long result lines stay one line each (pipes, logs)

DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", envvar="REFUSAL_SAE_DATA_DIR", help="Folder holding the prompt datasets (default: ../shared/datasets when present).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, ...")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]
RunDirOpt = Annotated[Optional[Path], typer.Option("--run-dir", help="Run directory (default: runs/<model>[+<adapter>]).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Recompute even when the run directory holds a result for the same config.")]

# SAE options of the commands that read SAEs (see `sae_set`)
SaesOpt = Annotated[Optional[Path], typer.Option("--saes", help="Folder of SAEs saved by sae-lens (default: <run-dir>/saes, else the embedded model's committed SAEs).")]
ReleaseOpt = Annotated[Optional[str], typer.Option("--sae-release", help="sae-lens release, e.g. gemma-scope-2b-pt-res-canonical.")]
IdsOpt = Annotated[Optional[str], typer.Option("--sae-ids", help="Comma-separated SAE ids of --sae-release.")]

# The options of ModelSpec, as every model-loading command spells them (see `model_options`).
_MODEL_OPTIONS: list[tuple[str, object, object]] = [
    ("model", Annotated[Optional[str], typer.Option("--model", "-m", help="HF id, local HF dir, .gguf file, or embedded name (default: smollm2-135m-refusing; smollm2-135m is the untuned base).")], None),
    ("adapter", Annotated[Optional[str], typer.Option("--adapter", help="LoRA adapter directory merged into the model (for the embedded names: instead of the committed safety adapter).")], None),
    ("device", DeviceOpt, "auto"),
    ("dtype", Annotated[str, typer.Option("--dtype", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16.")], "auto"),
    ("trust_remote_code", Annotated[bool, typer.Option("--trust-remote-code", help="Allow model repos to run their own code (off by default).")], False),
    ("offline", Annotated[bool, typer.Option("--offline", envvar="HF_HUB_OFFLINE", help="Never touch the hub: hub ids must be in the local HF cache.")], False),
]


def model_options(fn):
    """Give a command the shared model options (``--model``, ``--adapter``, ``--device``, ``--dtype``,
    ``--trust-remote-code``, ``--offline``), handed to it as one :class:`ModelSpec` argument named ``spec``.

    Typer has no option groups, so the wrapper's signature is the command's own (minus ``spec``) plus these
    options; they are declared once here instead of in every command."""
    hints = get_type_hints(fn, include_extras=True)
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in inspect.signature(fn).parameters.values() if p.name != "spec"]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
             for name, ann, default in _MODEL_OPTIONS]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        spec = ModelSpec(**{name: kwargs.pop(name) for name, _, _ in _MODEL_OPTIONS})
        spec.check()  # device, dtype and adapter files, before the command does any work
        return fn(*args, spec=spec, **kwargs)

    wrapper.__signature__ = inspect.Signature([*own, *extra])
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *extra]}
    return wrapper


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


def float_list(text: str) -> tuple[float, ...]:
    """'0,-1,-3' → (0.0, -1.0, -3.0)."""
    from refusal_sae.errors import ConfigError

    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"cannot parse {text!r} as a list of numbers like '0,-1,-3'") from None
    if not vals:
        raise ConfigError("empty list of numbers")
    return vals


def names(text: str | None) -> tuple[str, ...] | None:
    """'a, b,c' → ('a', 'b', 'c'); ``None`` stays ``None``."""
    return None if text is None else tuple(x.strip() for x in text.split(",") if x.strip())


def run_dir_for(spec: ModelSpec, run_dir: Path | None):
    """The run directory: ``--run-dir`` (checked to be a directory this process can write, or make), else
    ``runs/<model>[+<adapter>]``."""
    from refusal_sae.runs import RunDir

    if run_dir is not None:
        from refusal_sae.checks import check_output_dir

        check_output_dir(run_dir, "--run-dir")
    return RunDir(run_dir or spec.default_run_dir())
