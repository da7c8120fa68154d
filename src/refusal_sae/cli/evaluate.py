"""`eval`, `compare` and `datasets`: refusal rates of a model on a prompt set, and paired comparisons of two runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from refusal_sae.cli.common import DataDirOpt, ForceOpt, JsonOpt, RunDirOpt, app, int_list, model_options, out, run_dir_for
from refusal_sae.models.options import ModelSpec
from refusal_sae.scoring.config import EvalConfig

E = EvalConfig  # defaults live in the torch-free config


@app.command("eval")
@model_options
def eval_cmd(
    spec: ModelSpec,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Registry name (see `refusal-sae datasets`) or a .json/.jsonl/.csv file.")] = E.dataset,
    n: Annotated[Optional[int], typer.Option("--n", help="Evaluate a seeded sample of N prompts (default: all).")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = E.seed,
    max_new_tokens: Annotated[int, typer.Option(help="Greedy tokens generated per prompt.")] = E.max_new_tokens,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward batch.")] = E.batch_size,
    judge: Annotated[str, typer.Option(help="Judge of the generations: default (the tuned encoder judge) | tuned[:PARAMS] | learned | heuristic | substring | harmbench[:MODEL] | harmbench-mistral[:MODEL] | llamaguard[:MODEL] | classifier:MODEL.")] = E.judge,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Also write the per-prompt JSONL (prompt, completion, judgement, refusal score) here; it is always kept in the run directory.")] = None,
    data_dir: DataDirOpt = None,
    intervention: Annotated[str, typer.Option(help="none | ablate (the run's refusal direction, every layer) | actadd (add it at its layer).")] = E.intervention,
    run_dir: RunDirOpt = None,
    coeff: Annotated[float, typer.Option(help="Coefficient of --intervention actadd (see `refusal-sae calibrate-actadd`).")] = E.coeff,
    ablate_layers: Annotated[Optional[str], typer.Option(
        help="Restrict --intervention ablate to these layers, e.g. '16-29' (default: every layer, as the paper does).")] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Refused / complied / degenerate rates (95% Wilson CIs) of a model on a prompt set."""
    from rich.table import Table

    from refusal_sae.data import load_dataset
    from refusal_sae.direction.result import DirectionResult
    from refusal_sae.runs import write_jsonl_atomic
    from refusal_sae.scoring.evaluation import eval_stage_name, run_eval_stage
    from refusal_sae.scoring.judge import get_judge, loads_a_model

    cfg = EvalConfig(dataset, n, seed, max_new_tokens, batch_size, judge, intervention, coeff, int_list(ablate_layers))
    cfg.validate()  # cheap checks first, before data and the slow model load
    judge_obj = get_judge(judge, **({"local_files_only": True} if spec.offline and loads_a_model(judge) else {}))
    run = run_dir_for(spec, run_dir)
    direction = None if intervention == "none" else DirectionResult.from_run(run.root)
    prompts = load_dataset(dataset, data_dir, n=n, seed=seed)  # a missing or malformed dataset fails here
    handle = spec.load()
    result = run_eval_stage(handle, run, cfg, data_dir, direction, judge_obj, force=force)
    if out_file is not None:
        write_jsonl_atomic(out_file, result.rows)
    path = out_file or run.root / eval_stage_name(handle, prompts, cfg) / "rows.jsonl"
    summary = result.summary() | {"jsonl": str(path), "max_new_tokens": max_new_tokens, "seed": seed,
                                  "intervention": intervention, "coeff": coeff, "ablate_layers": ablate_layers}
    table = Table(title=f"{handle.name} on {result.dataset} (n={result.n}, {max_new_tokens} greedy tokens)")
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
    runs: Annotated[list[Path], typer.Argument(help="`eval` results as pairs A B [A2 B2 ...]: JSONL files or eval folders of a run directory; each pair covers the same prompts (pairs are pooled).")],
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
