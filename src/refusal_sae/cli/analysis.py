"""`jailbreaks`, `upstream` and `probe`: stage 6 — which jailbreak families work, upstream → downstream features,
and probes that generalise. Each checks its settings and the run's earlier results before the model loads."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from refusal_sae.analysis.configs import JailbreaksConfig, ProbeConfig, UpstreamConfig, jailbreak_stage_name
from refusal_sae.cli.common import (
    BatchSizeOpt,
    DataDirOpt,
    ForceOpt,
    IdsOpt,
    JsonOpt,
    JudgeOpt,
    MaxNewTokensOpt,
    NBootOpt,
    ReleaseOpt,
    RunDirOpt,
    SaesOpt,
    SeedOpt,
    app,
    float_list,
    model_options,
    names,
    out,
    run_dir_for,
    sae_set,
)
from refusal_sae.models.options import ModelSpec

J, U, P = JailbreaksConfig, UpstreamConfig, ProbeConfig
TEST = ",".join(J.datasets)
JbDatasetsOpt = Annotated[str, typer.Option("--jailbreak-datasets", help="The jailbreak table to read: the --datasets it was made with.")]
JbFileOpt = Annotated[Optional[str], typer.Option("--jailbreak-file", help="… or the --dataset file it was made with.")]


def _ci(ci) -> str:
    return "-" if ci is None or any(x is None or (isinstance(x, float) and math.isnan(x)) for x in ci) \
        else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _num(x, fmt: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


@app.command("jailbreaks")
@model_options
def jailbreaks_cmd(
    spec: ModelSpec,
    run_dir: RunDirOpt = None,
    datasets: Annotated[str, typer.Option(help="Harmful datasets whose refused plain instructions are wrapped (default: the held-out test sets).")] = TEST,
    dataset: Annotated[Optional[str], typer.Option(help="A JSON/JSONL/CSV prompt file used as the jailbreak set as is (optional 'family' and 'plain' fields), e.g. WildJailbreak.")] = None,
    families: Annotated[Optional[str], typer.Option(help="Comma-separated families (default: all 11 of the generator; file mode: all in the file).")] = None,
    n_instructions: Annotated[int, typer.Option(help="Refused plain instructions wrapped in every family (seeded sample).")] = J.n_instructions,
    n: Annotated[Optional[int], typer.Option(help="File mode: prompts used (seeded sample; default all).")] = None,
    control: Annotated[bool, typer.Option("--control/--no-control", help="Also wrap in the neutral control wrapper (paired McNemar per family).")] = True,
    seed: SeedOpt = J.seed,
    max_new_tokens: MaxNewTokensOpt = J.max_new_tokens,
    batch_size: BatchSizeOpt = J.batch_size,
    judge: JudgeOpt = J.judge,
    data_dir: DataDirOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Which jailbreak families make the model comply: complied / degenerate / refused per family with Wilson CIs,
    paired against a neutral wrapper; the (plain refused → wrapped) pairs for `upstream` and `probe`."""
    from refusal_sae.analysis.jailbreaks import prepare, run_jailbreaks_stage

    cfg = JailbreaksConfig(datasets=names(datasets) or (), dataset=dataset, families=names(families),
                           n_instructions=n_instructions, n=n, neutral_control=control, seed=seed,
                           max_new_tokens=max_new_tokens, batch_size=batch_size, judge=judge)
    prepare(cfg, data_dir)  # settings, families and prompt files, before the model loads
    run = run_dir_for(spec, run_dir)
    res = run_jailbreaks_stage(spec.load(), run, cfg, data_dir)
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
    if as_json:
        print(json.dumps(res.to_json()))


def _clamp(text: str) -> float | None:
    from refusal_sae.errors import ConfigError

    if text.strip().lower() == "search":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--clamp takes a number or 'search', not {text!r}") from None


@app.command("upstream")
@model_options
def upstream_cmd(
    spec: ModelSpec,
    run_dir: RunDirOpt = None,
    saes: SaesOpt = None,
    sae_release: ReleaseOpt = None,
    sae_ids: IdsOpt = None,
    jailbreak_datasets: JbDatasetsOpt = TEST,
    jailbreak_file: JbFileOpt = None,
    n_train: Annotated[int, typer.Option(help="harmful_train prompts (those refused define the refusal features).")] = U.n_train,
    n_val: Annotated[int, typer.Option(help="harmful_val prompts (those refused choose the threshold X).")] = U.n_val,
    thresholds: Annotated[str, typer.Option(help="Grid of X: shares of per-prompt sets a refusal feature is in.")] = ",".join(f"{x:g}" for x in U.thresholds),
    k: Annotated[Optional[int], typer.Option(help="Per-prompt set size (default: the search's K*).")] = None,
    clamp: Annotated[str, typer.Option(help="Multiplier of the upstream features (0 zero-ablates), or 'search' for the search's chosen clamp.")] = "-3",
    last: Annotated[int, typer.Option(help="Refusal features are read over the last N tokens; upstream positions lie before them.")] = U.last,
    position_frac: Annotated[float, typer.Option(help="Clamp from the earliest position whose attribution reaches this share of the peak (1: the peak).")] = U.position_frac,
    n_random: Annotated[int, typer.Option(help="Random same-layer sets clamped from the same positions (the control).")] = U.n_random,
    ig_steps: Annotated[int, typer.Option(help="LA-IG interpolation steps.")] = U.ig_steps,
    max_instructions: Annotated[Optional[int], typer.Option(help="Analyse the pairs of at most this many plain instructions (seeded).")] = None,
    top_tokens: Annotated[int, typer.Option(help="Suppressing tokens listed per family.")] = U.top_tokens,
    seed: SeedOpt = U.seed,
    max_new_tokens: MaxNewTokensOpt = U.max_new_tokens,
    batch_size: BatchSizeOpt = U.batch_size,
    judge: JudgeOpt = U.judge,
    data_dir: DataDirOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Upstream → downstream: refusal features shared by most per-prompt sets, the drop of their activation when a
    jailbreak succeeds vs fails and when the upstream features are clamped (vs random), suppressing tokens per family."""
    from refusal_sae.analysis.upstream import prepare_upstream, run_upstream_stage

    cfg = UpstreamConfig(jailbreaks=jailbreak_stage_name(names(jailbreak_datasets) or (), jailbreak_file),
                         n_train=n_train, n_val=n_val, thresholds=float_list(thresholds), k=k, clamp=_clamp(clamp),
                         last=last, position_frac=position_frac, n_random=n_random, ig_steps=ig_steps,
                         max_instructions=max_instructions, top_tokens=top_tokens, seed=seed,
                         max_new_tokens=max_new_tokens, batch_size=batch_size, judge=judge)
    run = run_dir_for(spec, run_dir)
    prepare_upstream(run, cfg)  # settings and earlier results, before the model loads
    handle = spec.load()
    res = run_upstream_stage(handle, sae_set(handle, run, saes, sae_release, sae_ids), run, cfg, data_dir)
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
    if as_json:
        print(json.dumps(res.to_json()))


@app.command("probe")
@model_options
def probe_cmd(
    spec: ModelSpec,
    run_dir: RunDirOpt = None,
    saes: SaesOpt = None,
    sae_release: ReleaseOpt = None,
    sae_ids: IdsOpt = None,
    jailbreak_datasets: JbDatasetsOpt = TEST,
    jailbreak_file: JbFileOpt = None,
    ood_dataset: Annotated[Optional[str], typer.Option(help="Any prompt file (or dataset name) as the OOD test; labels from the model's judged answers.")] = None,
    features: Annotated[str, typer.Option(help="Feature sets to probe: minimal, global, shared (those missing from the run are skipped and listed).")] = ",".join(P.feature_sets),
    n_train: Annotated[int, typer.Option(help="harmful_train and harmless_train prompts each.")] = P.n_train,
    n_val: Annotated[int, typer.Option(help="harmful_val and harmless_val prompts each (C and the dense layer).")] = P.n_val,
    n_test: Annotated[int, typer.Option(help="harmless_test prompts of the in-distribution test.")] = P.n_test,
    n_ood: Annotated[Optional[int], typer.Option(help="--ood-dataset: prompts used (seeded sample; default all).")] = None,
    n_random: Annotated[int, typer.Option(help="Random feature sets per size.")] = P.n_random,
    cs: Annotated[str, typer.Option("--cs", help="Inverse regularisation strengths tried on validation.")] = ",".join(f"{c:g}" for c in P.cs),
    n_boot: NBootOpt = P.n_boot,
    seed: SeedOpt = P.seed,
    max_new_tokens: MaxNewTokensOpt = P.max_new_tokens,
    batch_size: BatchSizeOpt = P.batch_size,
    judge: JudgeOpt = P.judge,
    data_dir: DataDirOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Probes of "will the model refuse" on last-token activations: refusal features vs random features vs the dense
    residual stream (layer chosen on validation), in and out of distribution, with bootstrap CIs and OOD gains."""
    from refusal_sae.analysis.probes import prepare_probes, run_probe_stage

    cfg = ProbeConfig(jailbreaks=jailbreak_stage_name(names(jailbreak_datasets) or (), jailbreak_file),
                      ood_dataset=ood_dataset, feature_sets=names(features) or (), n_train=n_train, n_val=n_val,
                      n_test=n_test, n_ood=n_ood, n_random=n_random, cs=float_list(cs), n_boot=n_boot, seed=seed,
                      max_new_tokens=max_new_tokens, batch_size=batch_size, judge=judge)
    run = run_dir_for(spec, run_dir)
    prepare_probes(run, cfg, data_dir)  # settings, earlier results and prompt files, before the model loads
    handle = spec.load()
    res = run_probe_stage(handle, sae_set(handle, run, saes, sae_release, sae_ids), run, cfg, data_dir)
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
    if as_json:
        print(json.dumps({k: v for k, v in res.to_json().items() if k != "dense_layers"} | {"dense_layers": res.dense_layers}))
