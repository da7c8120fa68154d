"""`judge-eval`, `judge-fit` and `rejudge`: how far each judge agrees with the hand labels, refitting the learned
judge on the dev labels, and re-labelling stored eval rows with another judge (old and new side by side)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from refusal_sae.cli.common import DataDirOpt, JsonOpt, app, out

JudgesOpt = Annotated[str, typer.Option("--judges", help="Comma-separated judge specs to score (see `eval --judge`).")]


@app.command("judge-eval")
def judge_eval_cmd(
    judges: JudgesOpt = "default,heuristic,substring",
    split: Annotated[str, typer.Option(help="Labelled split: test (held out from the learned judge's fit) or dev.")] = "test",
    labels_dir: Annotated[Optional[Path], typer.Option(help="Folder with answers.jsonl + labels.jsonl (default: the committed labels).")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Confusion matrix, per-class precision / recall and Cohen's κ (95% bootstrap CI) of each judge against the
    hand-labelled answers, overall and per condition."""
    from refusal_sae.scoring.judge import get_judge
    from refusal_sae.scoring.judge.evaluation import evaluate_judge
    from refusal_sae.scoring.labels import load_labelled

    specs = [s.strip() for s in judges.split(",") if s.strip()]
    objs = {s: get_judge(s) for s in specs}  # unknown names fail before the labels and models load
    answers = load_labelled(split, data_dir, labels_dir)
    results = []
    for spec, judge in objs.items():
        ev = evaluate_judge(judge, spec, answers, split)
        results.append(ev)
        o = ev.overall
        out.print(f"[bold]{spec}[/] on {o.n} {split} answers: accuracy {o.accuracy:.3f}, κ {o.kappa:.3f} "
                  f"[{o.kappa_ci[0]:.3f}, {o.kappa_ci[1]:.3f}]")
        out.print("  precision / recall: " + ", ".join(f"{lab} {o.precision[lab]:.3f} / {o.recall[lab]:.3f}"
                                                        for lab in o.precision))
        out.print("  confusion (rows: hand label, columns: judge): " + "; ".join(
            f"{t}: " + " ".join(f"{q[:4]} {c}" for q, c in row.items()) for t, row in o.confusion.items()))
        for cond, a in ev.per_condition.items():
            pred_c = sum(a.confusion[t]["complied"] for t in a.confusion)
            out.print(f"    {cond:20s} n {a.n:3d}  κ {a.kappa:6.3f}  complied: precision {a.precision['complied']:.2f} "
                      f"(judge says {pred_c}), recall {a.recall['complied']:.2f}")
    if as_json:
        from dataclasses import asdict

        print(json.dumps([{k: v for k, v in asdict(ev).items() if k != "predictions"} for ev in results]))


@app.command("judge-fit")
def judge_fit_cmd(
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the fitted parameters (JSON). Copy them over src/refusal_sae/artifacts/judge/learned.json to ship them.")] = Path("runs/judge/learned.json"),
    reference_model: Annotated[str, typer.Option(help="Language model of the fluency features.")] = "smollm2-135m",
    labels_dir: Annotated[Optional[Path], typer.Option(help="Folder with answers.jsonl + labels.jsonl (default: the committed labels).")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fit the learned judge on the dev labels (never the test labels); C chosen by κ over folds grouped by instruction."""
    from refusal_sae.scoring.judge.fit import fit_on_labels
    from refusal_sae.scoring.judge.learned import FeatureExtractor
    from refusal_sae.scoring.labels import load_labelled

    params = fit_on_labels(load_labelled("dev", data_dir, labels_dir), FeatureExtractor(reference_model))
    params.save(out_file)
    cv = params.fitted_on["cv_kappa"]
    out.print(f"fitted on {params.fitted_on['n']} dev answers: C = {params.fitted_on['C']:g} (cross-validated κ "
              f"{cv[params.fitted_on['C']]:.3f}); parameters in {out_file}")
    if as_json:
        print(json.dumps(params.fitted_on | {"out": str(out_file)}))


@app.command("rejudge")
def rejudge_cmd(
    files: Annotated[list[Path], typer.Argument(help="`eval` JSONL files or eval folders of a run directory.")],
    judge: Annotated[str, typer.Option(help="The judge to re-label the stored completions with.")] = "default",
    out_dir: Annotated[Path, typer.Option(help="Folder for the re-labelled JSONLs (same names, judge appended).")] = Path("runs/rejudged"),
    as_json: JsonOpt = False,
) -> None:
    """Re-label the completions of earlier evals with another judge (no generation): old and new labels side by
    side; compare the two files with `refusal-sae compare`."""
    from refusal_sae.runs import slug
    from refusal_sae.scoring.compare import read_eval_rows, rejudge_rows
    from refusal_sae.scoring.judge import get_judge

    judge_obj = get_judge(judge)
    rows_by_file = {f: read_eval_rows(f) for f in files}  # malformed files fail before any judging
    summary = []
    for f, rows in rows_by_file.items():
        new = rejudge_rows(rows, judge_obj)
        name = (f.parent.name if f.is_dir() or f.name == "rows.jsonl" else f.stem)
        dest = out_dir / f"{name}__{slug(judge)}.jsonl"
        from refusal_sae.runs import write_jsonl_atomic

        write_jsonl_atomic(dest, new)
        counts = {lab: sum(r["judgement"] == lab for r in new) for lab in ("refused", "complied", "degenerate")}
        old = {lab: sum(r["judgement"] == lab for r in rows) for lab in counts}
        out.print(f"{f}: {len(rows)} rows; before {old}; with {judge}: {counts} → {dest}")
        summary.append({"file": str(f), "out": str(dest), "n": len(rows), "before": old, "after": counts})
    if as_json:
        print(json.dumps(summary))
