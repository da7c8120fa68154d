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
OfflineOpt = Annotated[bool, typer.Option("--offline", envvar="HF_HUB_OFFLINE", help="Never touch the hub: hub ids must be in the local HF cache.")]
RunDirOpt = Annotated[Optional[Path], typer.Option("--run-dir", help="Run directory (default: runs/<model>).")]


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


def _int_list(text: str | None) -> tuple[int, ...] | None:
    """'0,3,5-9' → (0, 3, 5, 6, 7, 8, 9); negative numbers allowed ('-2,-1')."""
    from refusal_sae.errors import ConfigError

    if not text:
        return None
    vals: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            a, sep, b = part[1:].partition("-")
            if sep:
                vals += list(range(int(part[0] + a), int(b) + 1))
            else:
                vals.append(int(part))
    except ValueError:
        raise ConfigError(f"cannot parse {text!r} as a list of integers like '0,3,5-9'") from None
    return tuple(vals)


def _load(model, device, dtype, trust_remote_code, offline):
    from refusal_sae.models import load_model

    return load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                      local_files_only=offline)


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
    offline: OfflineOpt = False,
    intervention: Annotated[str, typer.Option(help="none | ablate (the run's refusal direction, every layer) | actadd (add it at its layer).")] = "none",
    run_dir: RunDirOpt = None,
    coeff: Annotated[float, typer.Option(help="Coefficient of --intervention actadd.")] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Refused / complied / degenerate rates (95% Wilson CIs) of a model on a prompt set."""
    from rich.table import Table

    from refusal_sae.data import load_dataset
    from refusal_sae.scoring import EvalConfig, discover_refusal_tokens, evaluate, get_judge

    prompts = load_dataset(dataset, data_dir, n=n, seed=seed)
    judge_obj = get_judge(judge)
    if intervention != "none":  # fail before the slow model load
        _load_direction(run_dir or _default_run_dir(model))
    handle = _load(model, device, dtype, trust_remote_code, offline)
    tokens = discover_refusal_tokens(handle, load_dataset("harmful_train", data_dir).sample(32, seed).instructions)
    hooks = _intervention_hooks(handle, intervention, run_dir, coeff)
    with handle.hooks(hooks):
        result = evaluate(handle, prompts, judge_obj, tokens, EvalConfig(max_new_tokens, batch_size))
    tag = "" if intervention == "none" else f"__{intervention}"
    path = out_file or Path("runs/eval") / f"{_slug(handle.name)}__{_slug(prompts.name)}{tag}.jsonl"
    result.write_jsonl(path)
    summary = result.summary() | {"jsonl": str(path), "max_new_tokens": max_new_tokens, "seed": seed,
                                  "intervention": intervention}
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


def _default_run_dir(model: str | None) -> Path:
    from refusal_sae.models import DEFAULT_MODEL

    return Path("runs") / _slug(model or DEFAULT_MODEL)


def _intervention_hooks(handle, intervention: str, run_dir: Path | None, coeff: float):
    from refusal_sae.errors import ConfigError
    from refusal_sae.interventions import ActAdd, DirectionAblation

    if intervention == "none":
        return []
    if intervention not in ("ablate", "actadd"):
        raise ConfigError(f"unknown intervention {intervention!r}; expected none, ablate or actadd")
    d = _load_direction(run_dir or _default_run_dir(handle.name))
    if intervention == "ablate":
        return DirectionAblation(d.direction).hooks(handle)
    return ActAdd(d.direction, d.layer, coeff).hooks(handle)


def _load_direction(run_dir: Path):
    from refusal_sae.direction.stage import DirectionResult
    from refusal_sae.errors import ConfigError

    stage = Path(run_dir) / "direction"
    if not (stage / "result.json").is_file():
        raise ConfigError(f"no refusal direction in {stage}; run `refusal-sae direction --run-dir {run_dir}` first")
    return DirectionResult.load(stage)


@app.command("direction")
def direction_cmd(
    model: ModelOpt = None,
    run_dir: RunDirOpt = None,
    n_train: Annotated[int, typer.Option(help="Prompts per class from harmful_train / harmless_train.")] = 128,
    n_val: Annotated[int, typer.Option(help="Prompts per class from harmful_val / harmless_val for selection.")] = 32,
    layers: Annotated[Optional[str], typer.Option(help="Candidate layers, e.g. '4-20' or '6,10,14' (default: all).")] = None,
    positions: Annotated[Optional[str], typer.Option(help="Post-instruction positions, e.g. '-1' or '-3,-2,-1' (default: all).")] = None,
    max_kl: Annotated[float, typer.Option(help="Discard candidates whose ablation moves harmless outputs more (KL).")] = 0.1,
    min_induce: Annotated[float, typer.Option(help="Discard candidates whose addition induces less refusal.")] = 0.0,
    prune_layer_fraction: Annotated[float, typer.Option(help="Discard candidates in this last fraction of layers.")] = 0.2,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward batch.")] = 32,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
    offline: OfflineOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Refusal direction by difference in means, selected by bypass / induce / KL (Arditi et al.)."""
    from refusal_sae.direction.select import SelectionConfig
    from refusal_sae.direction.stage import DirectionConfig, run_direction_stage
    from refusal_sae.runs import RunDir

    sel = SelectionConfig(prune_layer_fraction, max_kl, min_induce, _int_list(layers), _int_list(positions), batch_size)
    cfg = DirectionConfig(n_train, n_val, seed, sel)
    handle = _load(model, device, dtype, trust_remote_code, offline)
    run = RunDir(run_dir or _default_run_dir(model))
    res = run_direction_stage(handle, run, cfg, data_dir)
    c = res.info["chosen"]
    out.print(f"chosen: position {c['pos']}, layer {c['layer']}: bypass {c['bypass']:.3f}, induce {c['induce']:.3f}, "
              f"KL {c['kl']:.4f}  → {run.root / 'direction'}")
    kept = sorted((s for s in res.info["candidates"] if s["kept"]), key=lambda s: s["bypass"])[:5]
    for s in kept:
        out.print(f"  pos {s['pos']:3d} layer {s['layer']:3d}  bypass {s['bypass']:7.3f}  induce {s['induce']:7.3f}  KL {s['kl']:.4f}")
    if as_json:
        print(json.dumps({"model": handle.name, "run_dir": str(run.root), **c,
                          "harm_refusal_cosine_by_layer": res.info["harm_refusal_cosine_by_layer"]}))


@app.command("orthogonalize")
def orthogonalize_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Where to write the edited HF model directory.")],
    model: ModelOpt = None,
    run_dir: RunDirOpt = None,
    allow_approximate: Annotated[bool, typer.Option(help="Allow families with post-norms (Gemma-2/3), where the edit is approximate.")] = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
    offline: OfflineOpt = False,
) -> None:
    """Bake the run's refusal-direction ablation into the weights and export an HF model directory."""
    from refusal_sae.interventions import export_model, orthogonalize_

    handle = _load(model, device, dtype, trust_remote_code, offline)
    d = _load_direction(run_dir or _default_run_dir(model))
    orthogonalize_(handle, d.direction, allow_approximate)
    path = export_model(handle, out_dir)
    out.print(f"orthogonalised model written to {path} (load it with --model {path})")


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
