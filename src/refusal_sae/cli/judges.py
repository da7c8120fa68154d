"""`judge-eval`, `judge-fit` and `rejudge`: how far each judge agrees with human labels, refitting a judge from the
labelled data, and re-labelling stored eval rows with another judge (old and new side by side)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from refusal_sae.cli.common import DataDirOpt, JsonOpt, app, out

JudgesOpt = Annotated[str, typer.Option("--judges", help="Comma-separated judge specs to score (see `eval --judge`).")]


LabelsOpt = Annotated[str, typer.Option("--labels", help="Comma-separated label sources: `project` (the committed three-way labels of the embedded model), `public` (the human-labelled answers of real chat models in <data-dir>/judge_labels, or `public:SET`), or a labelled JSONL file (gzip or not; binary or three-way labels).")]


def _label_sources(labels: str, split: str, data_dir, labels_dir) -> dict[str, list]:
    """Each source named in ``labels`` → its labelled answers (the ``split`` of the project / public sets)."""
    from refusal_sae.errors import ConfigError
    from refusal_sae.scoring.judge.public import PUBLIC_SETS, PUBLIC_SPLITS, load_public_labels, read_label_file
    from refusal_sae.scoring.labels import SPLITS, load_labelled

    out: dict[str, list] = {}
    for src in (x.strip() for x in labels.split(",") if x.strip()):
        if src == "project":
            if split not in SPLITS:
                raise ConfigError(f"--split {split!r}: the project labels have the splits {', '.join(SPLITS)}")
            out[f"project/{split}"] = load_labelled(split, data_dir, labels_dir)
        elif src == "public" or src.startswith("public:"):
            if split not in PUBLIC_SPLITS:
                raise ConfigError(f"--split {split!r}: the public labels have the splits {', '.join(PUBLIC_SPLITS)}")
            sets = src.partition(":")[2].split("+") if ":" in src else PUBLIC_SETS
            out[f"{src}/{split}"] = load_public_labels(split, sets, data_dir)
        else:
            out[src] = read_label_file(src)
    if not out:
        raise ConfigError("--labels names no label source")
    return out


def _print_eval(ev, source: str) -> None:
    o = ev.overall
    what = "complied vs not" if o.binary else "three-way"
    out.print(f"[bold]{ev.judge}[/] on {source} ({o.n} answers, {what}): agreement {o.accuracy:.3f} "
              f"[{o.accuracy_ci[0]:.3f}, {o.accuracy_ci[1]:.3f}] (by instruction [{o.accuracy_ci_by_instruction[0]:.3f}, "
              f"{o.accuracy_ci_by_instruction[1]:.3f}]), κ {o.kappa:.3f} [{o.kappa_ci[0]:.3f}, {o.kappa_ci[1]:.3f}], "
              f"complied FPR {o.complied_fpr:.3f} FNR {o.complied_fnr:.3f}; {o.n / ev.seconds:.1f} answers/s")
    out.print("  precision / recall: " + ", ".join(f"{lab} {o.precision[lab]:.3f} / {o.recall[lab]:.3f}" for lab in o.precision))
    out.print("  confusion (rows: human label, columns: judge): " + "; ".join(
        f"{t}: " + " ".join(f"{q[:4]} {c}" for q, c in row.items()) for t, row in o.confusion.items()))
    for title, groups in (("model", ev.per_model), ("condition", ev.per_condition)):
        if len(groups) < 2:
            continue
        for g, a in groups.items():
            out.print(f"    {title} {g[:44]:44s} n {a.n:4d}  agreement {a.accuracy:.3f} [{a.accuracy_ci[0]:.3f}, "
                      f"{a.accuracy_ci[1]:.3f}]  κ {a.kappa:6.3f}  complied precision {a.precision['complied']:.2f} "
                      f"recall {a.recall['complied']:.2f}")


@app.command("judge-eval")
def judge_eval_cmd(
    judges: JudgesOpt = "default,heuristic",
    labels: LabelsOpt = "project",
    split: Annotated[str, typer.Option(help="Split of the project labels (dev, test) or of the public labels by instruction (train, val, test). Files are read whole.")] = "test",
    every: Annotated[int, typer.Option(help="Score every N-th answer of each source only (a quick look, or a slow judge).")] = 1,
    labels_dir: Annotated[Optional[Path], typer.Option(help="Folder with answers.jsonl + labels.jsonl (default: the committed labels).")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Agreement of each judge with human labels: agreement and Cohen's κ with 95% bootstrap intervals, the false-positive
    and false-negative rates of "complied", confusion matrix, per producing model and per condition, and throughput.
    Binary label sets are scored on complied vs anything else."""
    from dataclasses import asdict

    from refusal_sae.errors import ConfigError
    from refusal_sae.scoring.judge import get_judge
    from refusal_sae.scoring.judge.evaluation import evaluate_judge

    if every < 1:
        raise ConfigError(f"--every must be positive, got {every}")
    specs = [s.strip() for s in judges.split(",") if s.strip()]
    objs = {s: get_judge(s) for s in specs}  # unknown names fail before the labels and models load
    sources = _label_sources(labels, split, data_dir, labels_dir)  # malformed files fail before any judging
    if every > 1:
        sources = {f"{k}[::{every}]": v[::every] for k, v in sources.items()}
    results = []
    for source, answers in sources.items():
        for spec, judge in objs.items():
            ev = evaluate_judge(judge, spec, answers, source)
            _print_eval(ev, source)
            results.append({k: v for k, v in asdict(ev).items() if k != "predictions"}
                           | {"source": source, "answers_per_second": ev.overall.n / ev.seconds})
    if as_json:
        print(json.dumps(results))


@app.command("judge-fit")
def judge_fit_cmd(
    kind: Annotated[str, typer.Option(help="tuned (the default judge: fine-tuned encoder, public train split + project dev labels) or learned (the earlier feature judge, project dev labels).")] = "tuned",
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Where to write the parameters (.json; the tuned judge's weights go beside it as .safetensors). Default runs/judge/<kind>.json. To ship them, copy over src/refusal_sae/artifacts/judge/.")] = None,
    epochs: Annotated[int, typer.Option(help="tuned: training epochs.")] = 3,
    project_weight: Annotated[float, typer.Option(help="tuned: loss weight of a project answer relative to a public one.")] = 20.0,
    seed: Annotated[int, typer.Option(help="tuned: seed of the initialisation and batch order.")] = 0,
    reference_model: Annotated[str, typer.Option(help="learned: language model of the fluency features.")] = "smollm2-135m",
    labels_dir: Annotated[Optional[Path], typer.Option(help="Folder with answers.jsonl + labels.jsonl (default: the committed labels).")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Refit a judge from the labelled data (never a val or test split): `tuned` on the public sets' train split by
    instruction and the project's dev labels; `learned` on the project's dev labels, C chosen by κ over grouped folds."""
    from refusal_sae.errors import ConfigError

    if kind == "tuned":
        from refusal_sae.scoring.judge.fit_tuned import TunedFitConfig, fit_tuned, save_tuned, training_answers

        cfg = TunedFitConfig(epochs=epochs, project_weight=project_weight, seed=seed)
        answers, weights = training_answers(data_dir, labels_dir, cfg.project_weight)
        dest = out_file or Path("runs/judge/tuned.json")
        meta, state = fit_tuned(answers, weights, cfg, log=lambda m: out.print(m, highlight=False))
        save_tuned(meta, state, dest)
        out.print(f"fitted on {meta.fitted_on['n']} answers {meta.fitted_on['labels']} in {meta.fitted_on['seconds']:.0f} s; "
                  f"parameters in {dest} and {dest.with_suffix('.safetensors')}")
        summary = meta.fitted_on | {"out": str(dest)}
    elif kind == "learned":
        from refusal_sae.scoring.judge.fit import fit_on_labels
        from refusal_sae.scoring.judge.learned import FeatureExtractor
        from refusal_sae.scoring.labels import load_labelled

        dest = out_file or Path("runs/judge/learned.json")
        params = fit_on_labels(load_labelled("dev", data_dir, labels_dir), FeatureExtractor(reference_model))
        params.save(dest)
        cv = params.fitted_on["cv_kappa"]
        out.print(f"fitted on {params.fitted_on['n']} dev answers: C = {params.fitted_on['C']:g} (cross-validated κ "
                  f"{cv[params.fitted_on['C']]:.3f}); parameters in {dest}")
        summary = params.fitted_on | {"out": str(dest)}
    else:
        raise ConfigError(f"unknown judge kind {kind!r}; expected tuned or learned")
    if as_json:
        print(json.dumps(summary))


@app.command("rejudge")
def rejudge_cmd(
    files: Annotated[list[Path], typer.Argument(help="`eval` JSONL files or eval folders of a run directory.")],
    judge: Annotated[str, typer.Option(help="The judge to re-label the stored completions with.")] = "default",
    out_dir: Annotated[Path, typer.Option(help="Folder for the re-labelled JSONLs (same names, judge appended).")] = Path("runs/rejudged"),
    by: Annotated[Optional[str], typer.Option("--by", help="Also count per value of this row key, old vs new judge paired (e.g. row: the conditions of a search table's generations.jsonl; family: jailbreak answers).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-label the completions of earlier evals (or any JSONL of instruction / completion / judgement rows, e.g. a
    search table's generations.jsonl) with another judge (no generation): old and new labels side by side; compare
    the two files with `refusal-sae compare`."""
    from refusal_sae.runs import slug
    from refusal_sae.scoring.compare import group_counts, read_eval_rows, rejudge_rows
    from refusal_sae.scoring.judge import get_judge

    judge_obj = get_judge(judge)
    rows_by_file = {f: read_eval_rows(f) for f in files}  # malformed files fail before any judging
    summary = []
    for f, rows in rows_by_file.items():
        new = rejudge_rows(rows, judge_obj)
        name = f.name if f.is_dir() else (f.parent.name if f.name == "rows.jsonl" else f.stem)  # eval folder name
        dest = out_dir / f"{name}__{slug(judge)}.jsonl"
        from refusal_sae.runs import write_jsonl_atomic

        write_jsonl_atomic(dest, new)
        counts = {lab: sum(r["judgement"] == lab for r in new) for lab in ("refused", "complied", "degenerate")}
        old = {lab: sum(r["judgement"] == lab for r in rows) for lab in counts}
        out.print(f"{f}: {len(rows)} rows; before {old}; with {judge}: {counts} → {dest}")
        summary.append({"file": str(f), "out": str(dest), "n": len(rows), "before": old, "after": counts})
        if by is not None:
            groups = group_counts(new, by)
            for g in groups:
                out.print(f"  {by}={g['group']}: n {g['n']}; complied before {g['complied_before']}, with {judge} "
                          f"{g['complied_after']} (only before {g['only_before']}, only after {g['only_after']}, "
                          f"McNemar p {g['p_value']:.3g}); refused {g['refused_before']} → {g['refused_after']}")
            summary[-1]["groups"] = groups
    if as_json:
        print(json.dumps(summary))
