"""`eval`, `compare` and `datasets`: refusal rates of a model on a prompt set, and paired comparisons of two runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from refusal_sae.cli.common import (
    DataDirOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelOpt,
    OfflineOpt,
    RunDirOpt,
    TrustOpt,
    app,
    default_run_dir,
    int_list,
    intervention_hooks,
    load_direction,
    load_handle,
    out,
    slug,
)


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
    ablate_layers: Annotated[Optional[str], typer.Option(
        help="Restrict --intervention ablate to these layers, e.g. '16-29' (default: every layer, as the paper does).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Refused / complied / degenerate rates (95% Wilson CIs) of a model on a prompt set."""
    from rich.table import Table

    from refusal_sae.data import load_dataset
    from refusal_sae.errors import ConfigError
    from refusal_sae.scoring import EvalConfig, discover_refusal_tokens, evaluate, get_judge

    judge_obj = get_judge(judge)  # cheap checks first, before data and the slow model load
    layers = int_list(ablate_layers)
    if layers is not None and intervention != "ablate":
        raise ConfigError(f"--ablate-layers applies to --intervention ablate only, not {intervention!r}")
    if intervention != "none":
        load_direction(run_dir or default_run_dir(model))
    prompts = load_dataset(dataset, data_dir, n=n, seed=seed)
    handle = load_handle(model, device, dtype, trust_remote_code, offline)
    tokens = discover_refusal_tokens(handle, load_dataset("harmful_train", data_dir).sample(32, seed).instructions)
    hooks = intervention_hooks(handle, intervention, run_dir, coeff, layers)
    with handle.hooks(hooks):
        result = evaluate(handle, prompts, judge_obj, tokens, EvalConfig(max_new_tokens, batch_size))
    tag = "" if intervention == "none" else f"__{intervention}"
    if layers is not None:  # only with --intervention ablate (checked above)
        tag += f"-layers{ablate_layers}"
    path = out_file or Path("runs/eval") / f"{slug(handle.name)}__{slug(prompts.name)}{tag}.jsonl"
    result.write_jsonl(path)
    summary = result.summary() | {"jsonl": str(path), "max_new_tokens": max_new_tokens, "seed": seed,
                                  "intervention": intervention, "ablate_layers": ablate_layers}
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


@app.command("compare")
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="`eval` JSONLs as pairs A B [A2 B2 ...]: each pair covers the same prompts (pairs are pooled).")],
    label: Annotated[str, typer.Option(help="Judgement to compare: complied | refused | degenerate.")] = "complied",
    show: Annotated[int, typer.Option(help="List up to this many discordant prompts of each side.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Paired comparison of two conditions on the same prompts: counts, discordant prompts, McNemar exact p."""
    from refusal_sae.errors import ConfigError
    from refusal_sae.scoring.compare import compare_files

    if len(runs) % 2:
        raise ConfigError(f"give eval files in pairs (A B [A2 B2 ...]), got {len(runs)}")
    c = compare_files(list(zip(runs[::2], runs[1::2], strict=True)), label)
    out.print(f"{label}: A {c.count_a}/{c.n} = {c.count_a / c.n:.3f}, B {c.count_b}/{c.n} = {c.count_b / c.n:.3f}; "
              f"only A {c.only_a}, only B {c.only_b}; McNemar exact p = {c.p_value:.3g}", soft_wrap=True)
    for side, prompts in (("only A", c.only_a_prompts), ("only B", c.only_b_prompts)):
        for text in prompts[:show]:
            out.print(f"  {side}: {text[:100]}", markup=False, soft_wrap=True)
    if as_json:
        print(json.dumps(c.as_dict() | {"runs": [str(r) for r in runs]}))


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
