"""What the stage 2-4 commands print: the search, its table, the interactions and the dormant features as rich tables
on the console (the report draws the same results as HTML). Kept beside the results so the CLI only parses and
calls."""

from __future__ import annotations

from rich.console import Console


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _feat(f) -> str:
    return f"L{f[0]}:{f[1]}"


def show_interactions(data, model, sweep, out: Console, run) -> None:
    from rich.table import Table

    out.print(f"pool: {len(data.pool)} features = the minimal set ({len(data.minimal)}) + {len(data.pool) - len(data.minimal)} "
              f"of the {data.n_active} features firing under its clamp (c = {data.c:g}); inputs: {data.reduce} over the "
              f"post-instruction tokens; label: refusal score > {data.label_threshold:g}")
    for s, b in data.balance.items():
        out.print(f"  {s:5s}: {b['rows']} rows, {b['refused']} refused (harmful clean {b['harmful_clean_refused']}/"
                  f"{b['n_harmful']}, clamped {b['harmful_clamped_refused']}/{b['n_harmful']}; harmless clean "
                  f"{b['harmless_clean_refused']}/{b['n_harmless']}, clamped {b['harmless_clamped_refused']}/{b['n_harmless']})")
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


def show_dormant(silent, newly, rounds, out: Console, run) -> None:
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


def show_search(cands, choice, greedy, out: Console, run, cfg) -> None:
    share = cands.prefilter_attribution_share
    other = "per_layer" if cfg.direction_source == "selected" else "selected"
    out.print(f"candidates: {len(cands.prefilter)} by decoder cosine over layers {cands.layers}; the prefilter "
              f"holds {share[cfg.direction_source]:.0%} of the positive attribution "
              f"(the other direction source: {share[other]:.0%})")
    out.print(f"chosen on {choice.n_refused} refused validation prompts: K* = {choice.k}, c = {choice.c:g}"
              + ("" if choice.met else "  [no (K, c) met the rule: best margin shown]")
              + f"; degenerate bound {choice.degenerate_bound:.3f} (direction ablation on the same prompts: "
              f"complied {choice.ablation.get('complied')}, degenerate {choice.ablation.get('degenerate')})")
    for r in choice.rows:
        rnd = "-" if r.random_flip is None else f"{r.random_flip:.3f}"
        out.print(f"  K={r.k:3d} c={r.c:5g}: complied {r.complied:3d}/{r.n} degenerate {r.degenerate:3d} "
                  f"random flip {rnd}{'  *' if (r.k, r.c) == (choice.k, choice.c) else ''}")
    if (pa := choice.paired(choice.chosen(), "ablation")) is not None:
        out.print(f"  chosen vs direction ablation, same {pa.n} prompts: complied only chosen {pa.only_a}, only "
                  f"ablation {pa.only_b}; McNemar exact p = {pa.p_value:.3g}")
    out.print(f"greedy minimal set: {len(greedy.minimal)} of {len(greedy.start)} features "
              f"(tau {greedy.tau:g}, {len(greedy.traces[:cfg.greedy_seeds])} orders intersected); validation complied "
              f"{greedy.confirm['minimal']['complied']} vs {greedy.confirm['full']['complied']} with the full set "
              f"(ratio {greedy.kept_flip_ratio:.2f})")
    out.print("  " + ", ".join(f"L{L}:{f}" for L, f in greedy.minimal))
    out.print(f"results in {run.root / 'search'}")


def show_table(table, out: Console) -> None:
    from rich.table import Table

    t = Table(title=f"held out: {', '.join(table.datasets)} prompts the model refuses (n={table.n_refused} of "
                    f"{table.n_total}); K* = {table.k}, c = {table.c:g}")
    for col in ("row", "features", "complied [95% CI]", "degenerate", "refused", "harmless KL", "harmless refused"):
        t.add_column(col)
    for r in table.rows:
        kl = "-" if r.harmless_kl is None else f"{r.harmless_kl:.3f}"
        hr = "-" if r.harmless_refused is None else f"{r.harmless_refused}/{r.harmless_n}"
        t.add_row(r.name, f"{r.n_features:g}", f"{r.complied / r.n:.3f} [{r.complied_ci[0]:.3f}, {r.complied_ci[1]:.3f}]",
                  f"{r.degenerate / r.n:.3f}", f"{r.refused / r.n:.3f}", kl, hr)
    out.print(t)
    for p in table.paired:
        out.print(f"  {p.a} vs {p.b}: complied {p.count_a} vs {p.count_b} of {p.n}; only A {p.only_a}, "
                  f"only B {p.only_b}; McNemar p = {p.p_value:.3g}")
