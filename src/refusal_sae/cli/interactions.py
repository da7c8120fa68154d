"""`interactions` and `dormant`: stages 3–5 on top of the feature search (FM interactions and the K sweep;
critical-but-silent features, newly active features and rounds of re-search)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from refusal_sae.cli.common import DataDirOpt, JsonOpt, RunDirOpt, app, int_list, model_options, out, run_dir_for
from refusal_sae.cli.search import IdsOpt, ReleaseOpt, SaesOpt
from refusal_sae.models.options import ModelSpec
from refusal_sae.search.interactions_config import DormantConfig, InteractionsConfig

IC, DC = InteractionsConfig, DormantConfig  # defaults live in the torch-free configs
DatasetsOpt = Annotated[str, typer.Option(help="Held-out harmful sets (comma-separated); the prompts the unclamped model refuses are used.")]
NHeldoutOpt = Annotated[Optional[int], typer.Option(help="A seeded sample of this many prompts of each held-out set (default: every prompt).")]


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _feat(f) -> str:
    return f"L{f[0]}:{f[1]}"


def _precheck(run, cfg_validate) -> None:
    """Before the model loads: the search's results are in the run directory and the settings fit them."""
    from refusal_sae.search.interactions import SearchContext

    cfg_validate(SearchContext.load(run))


@app.command("interactions")
@model_options
def interactions_cmd(
    spec: ModelSpec,
    run_dir: RunDirOpt = None,
    saes: SaesOpt = None,
    sae_release: ReleaseOpt = None,
    sae_ids: IdsOpt = None,
    n_train: Annotated[int, typer.Option(help="harmful_train and harmless_train prompts (each) the FM is fitted on.")] = IC.n_train,
    n_val: Annotated[int, typer.Option(help="harmful_val and harmless_val prompts (each) for early stopping and the probe's C.")] = IC.n_val,
    n_test_harmless: Annotated[int, typer.Option(help="harmless_test prompts among the held-out rows.")] = IC.n_test_harmless,
    datasets: DatasetsOpt = ",".join(IC.datasets),
    n_heldout: NHeldoutOpt = None,
    reduce: Annotated[str, typer.Option(help="Reduction of each feature's code over the post-instruction tokens: max | mean.")] = IC.reduce,
    pool_size: Annotated[int, typer.Option(help="Features beside the minimal set: those firing on the most harmful training prompts under its clamp.")] = IC.pool_size,
    label_threshold: Annotated[float, typer.Option(help="A row is refused when its refusal score exceeds this.")] = IC.label_threshold,
    rank: Annotated[int, typer.Option(help="FM embedding dimension (the paper: 20).")] = IC.rank,
    lr: Annotated[float, typer.Option(help="FM learning rate (Adam; the paper: 1e-3).")] = IC.lr,
    epochs: Annotated[int, typer.Option(help="FM epochs (the paper: 20); the epoch of lowest validation loss is kept.")] = IC.epochs,
    k: Annotated[Optional[str], typer.Option("--k", help="K values of the sweep, e.g. '5,10,20' (default: minimal-set size doubled up to the pool, and the pool).")] = None,
    n_sweep: Annotated[int, typer.Option(help="Held-out refused prompts judged at every K (seeded sample).")] = IC.n_sweep,
    n_random: Annotated[int, typer.Option(help="Random same-size sets per K.")] = IC.n_random,
    max_new_tokens: Annotated[int, typer.Option(help="Greedy tokens per judged answer.")] = IC.max_new_tokens,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward batch.")] = IC.batch_size,
    judge: Annotated[str, typer.Option(help="Judge of the generations.")] = IC.judge,
    seed: Annotated[int, typer.Option(help="Sampling / FM / random-set seed.")] = IC.seed,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stage 3: a factorization machine over the SAE features left active by the minimal set's clamp (beside a linear
    probe), its top interacting pairs, and the K sweep: FM-ranked vs probe-ranked vs random sets clamped on held-out
    refused prompts."""
    from refusal_sae.saes.loading import resolve_saes
    from refusal_sae.search.interactions import run_interactions_stage

    cfg = InteractionsConfig(n_train=n_train, n_val=n_val, n_test_harmless=n_test_harmless, datasets=_names(datasets),
                             n_heldout=n_heldout, reduce=reduce, pool_size=pool_size, label_threshold=label_threshold, rank=rank, lr=lr,
                             epochs=epochs, k_values=int_list(k), n_sweep=n_sweep, n_random=n_random,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, judge=judge, seed=seed)
    cfg.validate()
    run = run_dir_for(spec, run_dir)
    _precheck(run, lambda ctx: cfg.validate(len(ctx.minimal) + cfg.pool_size))
    handle = spec.load()
    _, sae_set = resolve_saes(handle, saes, sae_release, sae_ids, run.root)
    data, model, sweep = run_interactions_stage(handle, sae_set, run, cfg, data_dir)

    out.print(f"pool: {len(data.pool)} features = the minimal set ({len(data.minimal)}) + {len(data.pool) - len(data.minimal)} "
              f"of the {data.n_active} features firing under its clamp (c = {data.c:g}); inputs: {data.reduce} over the "
              f"post-instruction tokens; label: refusal score > {data.label_threshold:g}")
    for s, b in data.balance.items():
        out.print(f"  {s:5s}: {b['rows']} rows, {b['refused']} refused (harmful clean {b['harmful_clean_refused']}/"
                  f"{b['n_harmful']}, clamped {b['harmful_clamped_refused']}/{b['n_harmful']}; harmless clean "
                  f"{b['harmless_clean_refused']}/{b['n_harmless']}, clamped {b['harmless_clamped_refused']}/{b['n_harmless']})")
    from rich.table import Table

    t = Table(title=f"FM (rank {model.rank}, best epoch {model.best_epoch}) vs linear probe (C = {model.probe_c:g}); "
                    "95% bootstrap CIs over prompts")
    for col in ("split", "model", "accuracy [95% CI]", "AUC [95% CI]"):
        t.add_column(col)
    for s in ("val", "test"):
        for name, m in model.metrics.items():
            sm = m[s]
            t.add_row(s, name, f"{sm.accuracy.value:.3f} {_ci(sm.accuracy.ci)}", f"{sm.auc.value:.3f} {_ci(sm.auc.ci)}")
        d = model.paired[s]
        t.add_row(s, "FM − probe", f"{d.accuracy.value:+.3f} {_ci(d.accuracy.ci)}", f"{d.auc.value:+.3f} {_ci(d.auc.ci)}")
    out.print(t)
    out.print(f"top {len(model.pairs)} interacting pairs (|⟨v_i,v_j⟩| · mean |x_i x_j| on the training rows):")
    for p in model.pairs:
        out.print(f"  {_feat(p.a)} × {_feat(p.b)}: ⟨v,v⟩ {p.weight:+.3f}, mean term {p.mean_term:+.4f}, strength "
                  f"{p.strength:.4f}, both fire on {p.both_active:.0%} of rows")
    out.print(f"K sweep: held-out refused prompts (n = {len(sweep.prompts)} of {sweep.n_refused}), clamp c = {sweep.c:g}; "
              "complied and degenerate (judged), Wilson 95% CI; random: pooled over the draws")
    out.print(f"  {'K':>4s}  {'set':13s} {'complied':>8s} {'95% CI':15s} {'degen.':>6s} {'∩ FM':>5s}  draws")
    for r in sweep.rows:
        out.print(f"  {r.k:4d}  {r.ranking:13s} {r.complied / r.n:8.3f} {_ci(r.complied_ci):15s} {r.degenerate / r.n:6.3f} "
                  f"{'-' if r.overlap_fm is None else str(r.overlap_fm):>5s}  {', '.join(f'{x:.2f}' for x in r.draws) or '-'}")
    for p in sweep.paired:
        if p.b == "linear probe":
            out.print(f"  K={p.k}: FM vs probe complied {p.complied_a} vs {p.complied_b} of {p.n}; only FM {p.only_a}, "
                      f"only probe {p.only_b}; McNemar p = {p.p_value:.3g}")
    out.print(f"results in {run.root / 'search/interactions'}")
    if as_json:
        print(json.dumps({"pool": len(data.pool), "minimal": len(data.minimal), "n_active": data.n_active,
                          "balance": data.balance, "metrics": model.to_json()["metrics"],
                          "paired": model.to_json()["paired"], "pairs": model.to_json()["pairs"],
                          "best_epoch": model.best_epoch, "probe_c": model.probe_c,
                          "ksweep": {"ks": sweep.ks, "n": len(sweep.prompts), "rows": sweep.to_json()["rows"],
                                     "paired": sweep.to_json()["paired"]}}))


@app.command("dormant")
@model_options
def dormant_cmd(
    spec: ModelSpec,
    run_dir: RunDirOpt = None,
    saes: SaesOpt = None,
    sae_release: ReleaseOpt = None,
    sae_ids: IdsOpt = None,
    datasets: DatasetsOpt = ",".join(DC.datasets),
    n_heldout: NHeldoutOpt = None,
    n_prompts: Annotated[int, typer.Option(help="Held-out refused prompts (seeded sample; the K sweep's with the same seed).")] = DC.n_prompts,
    sets: Annotated[str, typer.Option(help="Found sets tested for critical-but-silent members: global (top K*), minimal.")] = ",".join(DC.sets),
    screen: Annotated[str, typer.Option(help="score: judge only the removals whose refusal score exceeds the threshold | none: judge every removal.")] = DC.screen,
    label_threshold: Annotated[float, typer.Option(help="Refusal-score threshold of the screen.")] = DC.label_threshold,
    max_rounds: Annotated[int, typer.Option(help="Rounds of re-search on top of the minimal set (0: none).")] = DC.max_rounds,
    min_drop: Annotated[float, typer.Option(help="Rounds stop when the mean refusal score falls by less.")] = DC.min_drop,
    n_attribution: Annotated[Optional[int], typer.Option(help="harmful_train prompts per round (default: the search's).")] = None,
    ig_steps: Annotated[Optional[int], typer.Option(help="LA-IG steps per round (default: the search's).")] = None,
    n_val: Annotated[Optional[int], typer.Option(help="harmful_val prompts per round; the refused ones are judged (default: the search's).")] = None,
    n_random: Annotated[int, typer.Option(help="Random same-size sets per control.")] = DC.n_random,
    max_new_tokens: Annotated[int, typer.Option(help="Greedy tokens per judged answer.")] = DC.max_new_tokens,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward batch.")] = DC.batch_size,
    judge: Annotated[str, typer.Option(help="Judge of the generations.")] = DC.judge,
    seed: Annotated[int, typer.Option(help="Sampling / random-set seed.")] = DC.seed,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stages 4–5: critical-but-silent members of the found sets, features newly active under the minimal set's clamp
    (by position kind), and rounds of re-search until the refusal score stops falling."""
    from refusal_sae.saes.loading import resolve_saes
    from refusal_sae.search.dormant import run_dormant_stage

    cfg = DormantConfig(datasets=_names(datasets), n_heldout=n_heldout, n_prompts=n_prompts, sets=_names(sets), screen=screen,
                        label_threshold=label_threshold, max_rounds=max_rounds, min_drop=min_drop,
                        n_attribution=n_attribution, ig_steps=ig_steps, n_val=n_val, n_random=n_random,
                        max_new_tokens=max_new_tokens, batch_size=batch_size, judge=judge, seed=seed)
    cfg.validate()
    run = run_dir_for(spec, run_dir)
    _precheck(run, lambda ctx: None)
    handle = spec.load()
    _, sae_set = resolve_saes(handle, saes, sae_release, sae_ids, run.root)
    silent, newly, rounds = run_dormant_stage(handle, sae_set, run, cfg, data_dir)

    out.print(f"critical-but-silent members (held-out refused prompts, n = {len(silent.prompts)}; c = {silent.c:g}; "
              f"removals judged after the '{silent.screen}' screen):")
    for s in silent.summaries:
        mean = sum(s.critical_silent_per_prompt) / max(1, len(s.critical_silent_per_prompt))
        out.print(f"  {s.set_name} ({s.size} features): flips {s.n_flipped}/{s.n_prompts} {_ci(s.flipped_ci)}; silent "
                  f"members critical on {s.silent_critical} of {s.silent_pairs} (prompt, member) pairs "
                  f"({s.silent_critical_woken} of them woken by the earlier clamps), active members on "
                  f"{s.active_critical} of {s.active_pairs}; {s.prompts_with_critical_silent} prompts have one "
                  f"(mean {mean:.2f} per flipped prompt); {len(s.features)} distinct features")
    m = newly.minimal
    rnd_pairs = sum(r.pairs for r in newly.random) / max(1, len(newly.random))
    out.print(f"newly active under the minimal set's clamp ({newly.n_prompts} prompts): {m.pairs} (prompt, feature) pairs "
              f"vs {rnd_pairs:.1f} for random sets of the same size; silenced {m.silenced_pairs}")
    for kind in newly.kinds:
        rnd = sum(r.events[kind] for r in newly.random) / max(1, len(newly.random))
        per = m.events[kind] / max(1, newly.positions[kind])
        out.print(f"  {kind:17s}: {m.events[kind]:6d} firings ({per:.2f} per position of {newly.positions[kind]}; "
                  f"random {rnd:.1f}); first firing of {m.pairs_by_first_kind[kind]} pairs")
    if rounds is not None:
        out.print(f"rounds (validation prompts the model refuses, n = {len(rounds.val_prompts)}); stopped: {rounds.stopped}")
        for r in rounds.rows:
            rnd = ", ".join(f"{x:.2f}" for x in r.random_complied)
            out.print(f"  round {r.round}: +{len(r.added)} features (of {r.candidates} candidates) → {r.size}; train "
                      f"score {r.train_score:+.3f} (flipped {r.train_flipped:.2f}); val score {r.val_score:+.3f}; val "
                      f"complied {r.complied}/{r.val_n} {_ci(r.complied_ci)} (random {rnd}); degenerate {r.degenerate}")
    out.print(f"results in {run.root / 'search/dormant'}")
    if as_json:
        print(json.dumps({"silent": silent.to_json()["summaries"], "newly_active": newly.to_json(),
                          "rounds": None if rounds is None else rounds.to_json()}))


__all__ = ["dormant_cmd", "interactions_cmd"]
