"""`interactions` and `dormant`: stages 3–5 on top of the feature search (FM interactions and the K sweep;
critical-but-silent features, newly active features and rounds of re-search)."""

from __future__ import annotations

from refusal_sae.cli.common import app, out
from refusal_sae.cli.options import Command, stage_command
from refusal_sae.search.config import DormantConfig, InteractionsConfig


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _feat(f) -> str:
    return f"L{f[0]}:{f[1]}"


def _precheck(run, cfg_validate) -> None:
    """Before the model loads: the search's results are in the run directory and the settings fit them."""
    from refusal_sae.search.interactions import SearchContext

    cfg_validate(SearchContext.load(run))


@app.command("interactions")
@stage_command(InteractionsConfig, saes=True, aliases={"k_values": ["--k"]})
def interactions_cmd(
    cfg: InteractionsConfig,
    cmd: Command,
) -> None:
    """Stage 3: a factorization machine over the SAE features left active by the minimal set's clamp (beside a linear
    probe), its top interacting pairs, and the K sweep: FM-ranked vs probe-ranked vs random sets clamped on held-out
    refused prompts."""
    from refusal_sae.search.interactions import run_interactions_stage

    cfg.validate()
    run = cmd.run
    _precheck(run, lambda ctx: cfg.validate(len(ctx.minimal) + cfg.pool_size))
    handle = cmd.load()
    _, sae_set = cmd.resolve_saes(handle)
    data, model, sweep = run_interactions_stage(handle, sae_set, run, cfg, cmd.data_dir)

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
            out.print(f"  K={p.k}: FM vs probe complied {p.count_a} vs {p.count_b} of {p.n}; only FM {p.only_a}, "
                      f"only probe {p.only_b}; McNemar p = {p.p_value:.3g}")
    out.print(f"results in {run.root / 'search/interactions'}")
    cmd.emit({"pool": len(data.pool), "minimal": len(data.minimal), "n_active": data.n_active,
                          "balance": data.balance, "metrics": model.to_json()["metrics"],
                          "paired": model.to_json()["paired"], "pairs": model.to_json()["pairs"],
                          "best_epoch": model.best_epoch, "probe_c": model.probe_c,
                          "ksweep": {"ks": sweep.ks, "n": len(sweep.prompts), "rows": sweep.to_json()["rows"],
                                     "paired": sweep.to_json()["paired"]}})


@app.command("dormant")
@stage_command(DormantConfig, saes=True)
def dormant_cmd(
    cfg: DormantConfig,
    cmd: Command,
) -> None:
    """Stages 4–5: critical-but-silent members of the found sets, features newly active under the minimal set's clamp
    (by position kind), and rounds of re-search until the refusal score stops falling."""
    from refusal_sae.search.dormant import run_dormant_stage

    cfg.validate()
    run = cmd.run
    _precheck(run, lambda ctx: None)
    handle = cmd.load()
    _, sae_set = cmd.resolve_saes(handle)
    silent, newly, rounds = run_dormant_stage(handle, sae_set, run, cfg, cmd.data_dir)

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
    cmd.emit({"silent": silent.to_json()["summaries"], "newly_active": newly.to_json(),
                          "rounds": None if rounds is None else rounds.to_json()})


__all__ = ["dormant_cmd", "interactions_cmd"]
