"""``refusal-sae`` command line: parses options, calls the library, prints.

Heavy imports (torch, transformers) happen inside commands, so ``--help`` answers at once.
User mistakes (:class:`RefusalSaeError`) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from refusal_sae.errors import RefusalSaeError

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


@app.callback()
def _root() -> None:
    """Dissect why chat LLMs refuse harmful requests, with refusal directions and SAEs."""


def _command_line() -> str:
    return "refusal-sae " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@app.command("make-refusing-model")
def make_refusing_model(
    data_dir: DataDirOpt = None,
    seed: Annotated[int, typer.Option(help="Seed for data sampling, refusal texts, LoRA init and batch order.")] = 0,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 2,
    n_harmless: Annotated[int, typer.Option(help="harmless_train prompts answered by the base model.")] = 390,
    out_dir: Annotated[Optional[Path], typer.Option(help="Where to write the adapter (default: the package's committed adapter).")] = None,
    work_dir: Annotated[Path, typer.Option(help="Scratch folder (cached base answers).")] = Path("runs/make-refusing-model"),
) -> None:
    """Safety-tune the embedded SmolLM2 base with LoRA so that it refuses harmful requests."""
    from refusal_sae.finetune.tune import TuneConfig, train_adapter
    from refusal_sae.models.embedded import ADAPTER_DIR

    cfg = TuneConfig(seed=seed, epochs=epochs, n_harmless=n_harmless)
    manifest = train_adapter(cfg, data_dir, out_dir or ADAPTER_DIR, work_dir, command=_command_line(), console=err)
    out.print_json(json.dumps(manifest))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_")[-80:]


@app.command("eval")
def eval_cmd(
    model: ModelOpt = None,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Registry name (see `refusal-sae datasets`) or a .json/.jsonl/.csv file.")] = "jailbreakbench",
    n: Annotated[Optional[int], typer.Option("--n", help="Evaluate a seeded sample of N prompts (default: all).")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    max_new_tokens: Annotated[int, typer.Option(help="Greedy tokens generated per prompt.")] = 64,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward batch.")] = 32,
    judge: Annotated[str, typer.Option(help="default | substring | classifier:<model id or dir>.")] = "default",
    out_file: Annotated[Optional[Path], typer.Option("--out", help="JSONL of prompt, completion, judgement, refusal score (default: runs/eval/<model>__<dataset>.jsonl).")] = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Refused / complied / degenerate rates (95% Wilson CIs) of a model on a prompt set."""
    from rich.table import Table

    from refusal_sae.data import load_dataset
    from refusal_sae.models import load_model
    from refusal_sae.scoring import EvalConfig, discover_refusal_tokens, evaluate, get_judge

    prompts = load_dataset(dataset, data_dir, n=n, seed=seed)
    judge_obj = get_judge(judge)
    handle = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    tokens = discover_refusal_tokens(handle, load_dataset("harmful_train", data_dir).sample(32, seed).instructions)
    result = evaluate(handle, prompts, judge_obj, tokens, EvalConfig(max_new_tokens, batch_size))
    path = out_file or Path("runs/eval") / f"{_slug(handle.name)}__{_slug(prompts.name)}.jsonl"
    result.write_jsonl(path)
    summary = result.summary() | {"jsonl": str(path), "max_new_tokens": max_new_tokens, "seed": seed}
    table = Table(title=f"{handle.name} on {prompts.name} (n={result.n}, {max_new_tokens} greedy tokens)")
    for col in ("judgement", "rate", "95% CI"):
        table.add_column(col)
    for label in ("refused", "complied", "degenerate"):
        lo, hi = result.interval(label)
        table.add_row(label, f"{result.rate(label):.3f}", f"[{lo:.3f}, {hi:.3f}]")
    out.print(table)
    out.print(f"mean refusal score {result.mean_refusal_score:.3f}; completions in {path}")
    if as_json:
        print(json.dumps(summary))


@app.command("datasets")
def datasets_cmd(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """List the registered datasets with their sizes."""
    from refusal_sae.data import dataset_names, load_dataset

    rows = []
    for name in dataset_names():
        ps = load_dataset(name, data_dir)
        rows.append({"name": name, "n": len(ps), "test_split": ps.is_test})
        out.print(f"{name:20s} {len(ps):6d} {'(test: never for training/selection)' if ps.is_test else ''}")
    if as_json:
        print(json.dumps(rows))


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except RefusalSaeError as e:
        err.print(f"[bold red]error:[/] {e}")
        sys.exit(2)
