"""`jailbreaks`, `upstream` and `probe`: stage 6 — which jailbreak families work, upstream → downstream features,
and probes that generalise. Each checks its settings and the run's earlier results before the model loads."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from refusal_sae.analysis.config import JailbreaksConfig, ProbeConfig, UpstreamConfig, jailbreak_stage_name
from refusal_sae.cli.common import (
    app,
    names,
    out,
)
from refusal_sae.cli.options import Command, stage_command

TEST = ",".join(JailbreaksConfig.datasets)
JbDatasetsOpt = Annotated[str, typer.Option("--jailbreak-datasets", help="The jailbreak table to read: the --datasets it was made with.")]
JbFileOpt = Annotated[Optional[str], typer.Option("--jailbreak-file", help="… or the --dataset file it was made with.")]


def _ci(ci) -> str:
    return "-" if ci is None or any(x is None or (isinstance(x, float) and math.isnan(x)) for x in ci) \
        else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _num(x, fmt: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


@app.command("jailbreaks")
@stage_command(JailbreaksConfig, force=True, aliases={"neutral_control": ["--control/--no-control"]})
def jailbreaks_cmd(
    cfg: JailbreaksConfig,
    cmd: Command,
) -> None:
    """Which jailbreak families make the model comply: complied / degenerate / refused per family with Wilson CIs,
    paired against a neutral wrapper; the (plain refused → wrapped) pairs for `upstream` and `probe`."""
    from refusal_sae.analysis.jailbreaks import prepare, run_jailbreaks_stage

    prepare(cfg, cmd.data_dir)  # settings, families and prompt files, before the model loads
    run = cmd.run
    res = run_jailbreaks_stage(cmd.load(), run, cfg, cmd.data_dir)
    from rich.table import Table

    what = (f"{res.n_instructions} held-out instructions the model refuses ({res.n_plain_refused} of {res.n_plain} "
            f"answered)" if res.mode == "wrap" else f"{len(res.rows)} prompts of {res.sources[0]}")
    t = Table(title=f"jailbreak families: {what}")
    for col in ("family", "n", "complied [95% CI]", "degenerate", "refused", "not refused [95% CI]",
                "vs neutral control, complied (only family / only control, McNemar p)", "… not refused"):
        t.add_column(col)
    for r in [*res.table, *([res.control] if res.control else [])]:
        vs = "-" if r.p_value is None else f"{r.only_family} / {r.only_control}, p = {r.p_value:.3g}"
        nr = "-" if r.nr_p_value is None else f"{r.nr_only_family} / {r.nr_only_control}, p = {r.nr_p_value:.3g}"
        t.add_row(r.family, str(r.n), f"{r.complied}/{r.n} {_ci(r.complied_ci)}", str(r.degenerate), str(r.refused),
                  f"{r.n - r.refused}/{r.n} {_ci(r.not_refused_ci)}", vs, nr)
    out.print(t)
    out.print(f"pairs (plain refused → wrapped): {res.pair_counts}; results in {run.root / cfg.stage}")
    cmd.emit(res.to_json())


def _clamp(text: str) -> float | None:
    from refusal_sae.errors import ConfigError

    if text.strip().lower() == "search":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--clamp takes a number or 'search', not {text!r}") from None


@app.command("upstream")
@stage_command(UpstreamConfig, saes=True, force=True, exclude=("jailbreaks", "clamp"))
def upstream_cmd(
    cfg: UpstreamConfig,
    cmd: Command,
    jailbreak_datasets: JbDatasetsOpt = TEST,
    jailbreak_file: JbFileOpt = None,
    clamp: Annotated[str, typer.Option(help="Multiplier of the upstream features (0 zero-ablates), or 'search' for the search's chosen clamp.")] = "-3",
) -> None:
    """Upstream → downstream: refusal features shared by most per-prompt sets, the drop of their activation when a
    jailbreak succeeds vs fails and when the upstream features are clamped (vs random), suppressing tokens per family."""
    from refusal_sae.analysis.upstream import prepare_upstream, run_upstream_stage

    cfg = replace(cfg, jailbreaks=jailbreak_stage_name(names(jailbreak_datasets) or (), jailbreak_file),
                  clamp=_clamp(clamp))
    run = cmd.run
    prepare_upstream(run, cfg)  # settings and earlier results, before the model loads
    handle = cmd.load()
    res = run_upstream_stage(handle, cmd.saes(handle), run, cfg, cmd.data_dir)
    from rich.table import Table

    out.print(f"refusal features ({len(res.refusal_features)}, in ≥ {res.threshold:.0%} of the per-prompt sets of "
              f"{res.n_train} refused training prompts; X chosen on {res.n_val} validation prompts): "
              + ", ".join(f"L{L}:{f}" for L, f in res.refusal_features))
    t = Table(title=f"relative drop of feature activations (upstream clamp ×{res.clamp:g} from its position; refusal "
                    f"features over the last {res.last} tokens); 95% CIs resample instructions")
    for col in ("pairs", "n (instr.)", "harm features, plain→wrapped", "refusal features, plain→wrapped",
                "refusal, upstream clamped", "refusal, random clamped", "refusal score plain / clamped / random"):
        t.add_column(col)
    for r in res.table:
        t.add_row(r.group, f"{r.n_pairs} ({r.n_instructions})", f"{_num(r.harm_drop)} {_ci(r.harm_ci)}",
                  f"{_num(r.refusal_drop)} {_ci(r.refusal_ci)}", f"{_num(r.ablation_drop)} {_ci(r.ablation_ci)}",
                  f"{_num(r.random_drop)} {_ci(r.random_ci)}",
                  f"{_num(r.score_plain)} / {_num(r.score_ablated)} / {_num(r.score_random)}")
    out.print(t)
    for m, d in res.difference.items():
        out.print(f"  jailbroken − failed, {m}: {_num(d['diff'])} {_ci(d['ci'])} "
                  f"({d['n_jailbroken']} vs {d['n_failed']} pairs)")
    out.print("most suppressing wrapper tokens per family (mean gradient × input per occurrence; negative = lowers the "
              "refusal features):")
    for ft in res.tokens:
        toks = ", ".join(f"{s.token!r} {s.mean:+.3f}×{s.count}" for s in ft.top[:5])
        out.print(f"  {ft.family}: wrapper {ft.wrapper:+.3f}, instruction {ft.payload:+.3f}, template "
                  f"{ft.template:+.3f} per prompt; {toks}")
    for note in res.notes:
        out.print(f"  note: {note}")
    if res.skipped and any(res.skipped.values()):
        out.print(f"  instructions skipped: {res.skipped}")
    out.print(f"results in {run.root / 'analysis/upstream'}")
    cmd.emit(res.to_json())


@app.command("probes")
@stage_command(ProbeConfig, saes=True, force=True, exclude=("jailbreaks",), aliases={"feature_sets": ["--features"]})
def probe_cmd(
    cfg: ProbeConfig,
    cmd: Command,
    jailbreak_datasets: JbDatasetsOpt = TEST,
    jailbreak_file: JbFileOpt = None,
) -> None:
    """Probes of "will the model refuse" on last-token activations: refusal features vs random features vs the dense
    residual stream (layer chosen on validation), in and out of distribution, with bootstrap CIs and OOD gains."""
    from refusal_sae.analysis.probes import prepare_probes, run_probe_stage

    cfg = replace(cfg, jailbreaks=jailbreak_stage_name(names(jailbreak_datasets) or (), jailbreak_file))
    run = cmd.run
    prepare_probes(run, cfg, cmd.data_dir)  # settings, earlier results and prompt files, before the model loads
    handle = cmd.load()
    res = run_probe_stage(handle, cmd.saes(handle), run, cfg, cmd.data_dir)
    from rich.table import Table

    for test, title in (("in_distribution", "in distribution (held-out plain prompts)"),
                        ("ood", f"out of distribution ({res.ood_source})")):
        c = res.counts[test]
        t = Table(title=f"{title}: {c['positive']} refused vs {c['negative']} not refused")
        for col in ("probe", "features", "C", "val acc", "accuracy [95% CI]", "AUC [95% CI]", "accuracy by group"):
            t.add_column(col)
        for r in (r for r in res.rows if r.test == test):
            name = r.probe + (f" (layer {r.layer})" if r.layer is not None else "")
            groups = ", ".join(f"{g} {a:.2f}" for g, a in r.group_accuracy.items())
            t.add_row(name, str(r.n_features), f"{r.C:g}", f"{r.val_accuracy:.2f}", f"{r.accuracy:.3f} {_ci(r.accuracy_ci)}",
                      f"{_num(r.auc, '.3f')} {_ci(r.auc_ci)}", groups)
        out.print(t)
        for g in (g for g in res.gains if g.test == test):
            out.print(f"  {g.a} − {g.b}: accuracy {g.accuracy_diff:+.3f} {_ci(g.accuracy_ci)}, AUC "
                      f"{_num(g.auc_diff, '+.3f')} {_ci(g.auc_ci)}")
    out.print(f"dense layer {res.dense_layer} chosen on validation (of {len(res.dense_layers)}); labels: {res.labels}")
    for name, why in res.skipped.items():
        out.print(f"  skipped {name}: {why}")
    out.print(f"results in {Path(run.root) / 'analysis/probes'}")
    cmd.emit({k: v for k, v in res.to_json().items() if k != "dense_layers"} | {"dense_layers": res.dense_layers})


app.command("probe", hidden=True, help="The `probes` command under its old name.")(probe_cmd)
