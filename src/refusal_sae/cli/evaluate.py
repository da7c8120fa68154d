"""`eval`, `compare` and `datasets`: refusal rates of a model on a prompt set, and paired comparisons of two runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from refusal_sae.cli.common import DataDirOpt, JsonOpt, app, out
from refusal_sae.cli.options import Command, _text, stage_command
from refusal_sae.scoring.config import EvalConfig


@app.command("eval")
@stage_command(EvalConfig, force=True, aliases={"dataset": ["-d"]})
def eval_cmd(
    cfg: EvalConfig,
    cmd: Command,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Also write the per-prompt JSONL (prompt, completion, judgement, refusal score) here; it is always kept in the run directory.")] = None,
) -> None:
    """Refused / complied / degenerate rates (95% Wilson CIs) of a model on a prompt set."""
    from rich.table import Table

    from refusal_sae.data import load_dataset
    from refusal_sae.direction.result import DirectionResult
    from refusal_sae.runs import write_jsonl_atomic
    from refusal_sae.scoring.evaluation import eval_stage_name, run_eval_stage
    from refusal_sae.scoring.judge import get_judge, loads_a_model

    cfg.validate()  # cheap checks first, before data and the slow model load
    judge_obj = get_judge(cfg.judge, **({"local_files_only": True} if cmd.spec.offline and loads_a_model(cfg.judge) else {}))
    run = cmd.run
    direction = None if cfg.intervention == "none" else DirectionResult.from_run(run.root)
    prompts = load_dataset(cfg.dataset, cmd.data_dir, n=cfg.n, seed=cfg.seed)  # a missing or malformed dataset fails here
    handle = cmd.load()
    result = run_eval_stage(handle, run, cfg, cmd.data_dir, direction, judge_obj, force=cmd.force)
    if out_file is not None:
        write_jsonl_atomic(out_file, result.rows)
    path = out_file or run.root / eval_stage_name(handle, prompts, cfg) / "rows.jsonl"
    summary = result.summary() | {"jsonl": str(path), "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
                                  "intervention": cfg.intervention, "coeff": cfg.coeff,
                                  "ablate_layers": _text(cfg.ablate_layers)}
    table = Table(title=f"{handle.name} on {result.dataset} (n={result.n}, {cfg.max_new_tokens} greedy tokens)")
    for col in ("judgement", "rate", "95% CI"):
        table.add_column(col)
    for label in ("refused", "complied", "degenerate"):
        lo, hi = result.interval(label)
        table.add_row(label, f"{result.rate(label):.3f}", f"[{lo:.3f}, {hi:.3f}]")
    out.print(table)
    out.print(f"mean refusal score {result.mean_refusal_score:.3f}; completions in {path}")
    cmd.emit(summary)


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
