"""Markdown tables of the stage 3–5 results in a run directory (the figures of docs/interactions.md).

Reads what `refusal-sae interactions` and `refusal-sae dormant` saved (every number comes from the results, none is
typed in) and prints the tables; a part that is missing is named as missing. Usage:

    python scripts/interactions_tables.py RUN_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from refusal_sae.runs import RunDir
from refusal_sae.search.dormant import NEWLY, ROUNDS, SILENT, NewlyActiveResult, RoundsResult, SilentResult
from refusal_sae.search.interactions import (
    DATA,
    FM,
    HELDOUT_STAGE,
    SWEEP,
    InteractionData,
    InteractionModel,
    KSweepResult,
    RefusedPrompts,
)


def ci(x) -> str:
    return f"[{x[0]:.3f}, {x[1]:.3f}]"


def feat(f) -> str:
    return f"L{f[0]}:{f[1]}"


def main(root: str) -> None:
    run = RunDir(Path(root))
    held = run.load(RefusedPrompts, HELDOUT_STAGE)
    if held is not None:
        print(f"held out: {len(held.refused)} of {held.n_total} prompts of {', '.join(held.datasets)} refused by the "
              f"unclamped model ({held.source})\n")
    data = run.load(InteractionData, DATA)
    model = run.load(InteractionModel, FM)
    if data is None or model is None:
        print("(no FM results)\n")
    else:
        print(f"pool {len(data.pool)} = minimal set {len(data.minimal)} + {len(data.pool) - len(data.minimal)} of the "
              f"{data.n_active} features active under its clamp (c = {data.c:g}); inputs {data.reduce} over the "
              f"post-instruction tokens; label refusal score > {data.label_threshold:g}\n")
        print("| split | prompts | rows | refused rows | harmful clean / clamped refused | harmless clean / clamped refused |")
        print("|---|---|---|---|---|---|")
        for s, b in data.balance.items():
            print(f"| {s} | {len(data.prompts[s])} | {b['rows']} | {b['refused']} | {b['harmful_clean_refused']} / "
                  f"{b['harmful_clamped_refused']} of {b['n_harmful']} | {b['harmless_clean_refused']} / "
                  f"{b['harmless_clamped_refused']} of {b['n_harmless']} |")
        print(f"\nFM rank {model.rank}, best epoch {model.best_epoch} of {len(model.curve)}; probe C = {model.probe_c:g} "
              f"(validation AUC by C: {model.probe_val_auc})\n")
        print("| split | model | accuracy [95% CI] | AUC [95% CI] |")
        print("|---|---|---|---|")
        for s in ("train", "val", "test"):
            for name, m in model.metrics.items():
                sm = m[s]
                print(f"| {s} | {name} | {sm.accuracy.value:.3f} {ci(sm.accuracy.ci)} | {sm.auc.value:.3f} {ci(sm.auc.ci)} |")
            d = model.paired[s]
            print(f"| {s} | FM − probe (paired) | {d.accuracy.value:+.3f} {ci(d.accuracy.ci)} | "
                  f"{d.auc.value:+.3f} {ci(d.auc.ci)} |")
        minimal = set(data.minimal.items)
        print("\n| # | pair | ⟨v_i, v_j⟩ | mean term | strength | both fire | in minimal set |")
        print("|---|---|---|---|---|---|---|")
        for i, p in enumerate(model.pairs, 1):
            inm = sum(tuple(x) in minimal for x in (p.a, p.b))
            print(f"| {i} | {feat(p.a)} × {feat(p.b)} | {p.weight:+.3f} | {p.mean_term:+.4f} | {p.strength:.4f} | "
                  f"{p.both_active:.0%} | {inm} of 2 |")
        top = model.fm_ranking.take(10)
        print(f"\nFM top 10: {', '.join(feat(f) + ('*' if tuple(f) in minimal else '') for f in top)} (* minimal set)")
        ptop = model.probe_ranking.take(10)
        print(f"probe top 10: {', '.join(feat(f) + ('*' if tuple(f) in minimal else '') for f in ptop)}\n")
    sweep = run.load(KSweepResult, SWEEP)
    if sweep is None:
        done = sorted(p.name for p in (run.root / SWEEP).glob("k*") if (p / "result.json").exists()) \
            if (run.root / SWEEP).exists() else []
        print(f"(no K-sweep summary; points done: {done or 'none'})\n")
    else:
        print(f"K sweep: {len(sweep.prompts)} of the {sweep.n_refused} held-out refused prompts, c = {sweep.c:g}\n")
        print("| K | set | complied [Wilson 95% CI] | degenerate | refused | ∩ FM top K | random draws |")
        print("|---|---|---|---|---|---|---|")
        for r in sweep.rows:
            draws = ", ".join(f"{x:.3f}" for x in r.draws) or ""
            print(f"| {r.k} | {r.ranking} | {r.complied}/{r.n} = {r.complied / r.n:.3f} {ci(r.complied_ci)} | "
                  f"{r.degenerate} | {r.refused} | {'' if r.overlap_fm is None else r.overlap_fm} | {draws} |")
        print("\n| K | A vs B | complied A / B | only A | only B | McNemar exact p |")
        print("|---|---|---|---|---|---|")
        for p in sweep.paired:
            print(f"| {p.k} | {p.a} vs {p.b} | {p.count_a} / {p.count_b} of {p.n} | {p.only_a} | {p.only_b} | "
                  f"{p.p_value:.3g} |")
        print()
    silent = run.load(SilentResult, SILENT)
    if silent is None:
        print("(no critical-but-silent results)\n")
    else:
        print(f"critical-but-silent: {len(silent.prompts)} held-out refused prompts, c = {silent.c:g}, screen "
              f"{silent.screen}\n")
        print("| set | size | flipped [95% CI] | silent (prompt, member) pairs | critical by score / judged | "
              "… woken | active pairs | active critical by score / judged | prompts with ≥ 1 | distinct features | "
              "removals judged |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for s in silent.summaries:
            print(f"| {s.set_name} | {s.size} | {s.n_flipped}/{s.n_prompts} {ci(s.flipped_ci)} | {s.silent_pairs} | "
                  f"{s.silent_critical_by_score} / {s.silent_critical} | {s.silent_critical_woken} | {s.active_pairs} | "
                  f"{s.active_critical_by_score} / {s.active_critical} | {s.prompts_with_critical_silent} | "
                  f"{len(s.features)} | {s.judged_pairs} |")
        for s in silent.summaries:
            if s.features:
                print(f"\n{s.set_name}: critical-but-silent features (prompts): "
                      + ", ".join(f"{feat(f['feature'])} ({f['prompts']})" for f in s.features[:10]))
        print()
    newly = run.load(NewlyActiveResult, NEWLY)
    if newly is None:
        print("(no newly-active results)\n")
    else:
        m = newly.minimal
        print(f"newly active under the minimal set's clamp: {newly.n_prompts} prompts, {m.pairs} (prompt, feature) "
              f"pairs; random sets of the same size: {', '.join(str(r.pairs) for r in newly.random)}; silenced "
              f"{m.silenced_pairs} (random {', '.join(str(r.silenced_pairs) for r in newly.random)})\n")
        print("| position kind | positions | firings (minimal) | per position | pairs first firing here | "
              "firings (random, mean) |")
        print("|---|---|---|---|---|---|")
        for k in newly.kinds:
            rnd = sum(r.events[k] for r in newly.random) / max(1, len(newly.random))
            print(f"| {k} | {newly.positions[k]} | {m.events[k]} | {m.events[k] / max(1, newly.positions[k]):.2f} | "
                  f"{m.pairs_by_first_kind[k]} | {rnd:.1f} |")
        print(f"\nper layer (pairs): {m.per_layer}")
        print("most often newly active: " + ", ".join(f"{feat(t['feature'])} ({t['prompts']} prompts; {t['kinds']})"
                                                     for t in newly.top_features[:8]) + "\n")
    rounds = run.load(RoundsResult, ROUNDS)
    if rounds is None:
        done = sorted(p.name for p in (run.root / ROUNDS).glob("r*") if (p / "result.json").exists()) \
            if (run.root / ROUNDS).exists() else []
        print(f"(no rounds summary; rounds done: {done or 'none'})\n")
    else:
        print(f"rounds: {rounds.n_train} harmful_train prompts scored, {len(rounds.val_prompts)} refused harmful_val "
              f"prompts judged; stopped: {rounds.stopped}\n")
        print("| round | added | set size | candidates | train score | train flipped | val score | val complied [95% CI] | "
              "degenerate | random complied |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rounds.rows:
            added = ", ".join(feat(f) for f in r.added) if r.round else f"(minimal set, {len(r.added)})"
            print(f"| {r.round} | {added} | {r.size} | {r.candidates} | {r.train_score:+.3f} | {r.train_flipped:.2f} | "
                  f"{r.val_score:+.3f} | {r.complied}/{r.val_n} {ci(r.complied_ci)} | {r.degenerate} | "
                  f"{', '.join(f'{x:.2f}' for x in r.random_complied)} |")
        print()
    stages = run.manifest().get("stages", {})
    print("| stage | wall s | finished |")
    print("|---|---|---|")
    for name, e in sorted(stages.items(), key=lambda kv: kv[1].get("finished") or ""):
        if name.startswith(("search/heldout", "search/interactions", "search/dormant")):
            print(f"| {name} | {e.get('wall_s')} | {e.get('finished')} |")


if __name__ == "__main__":
    main(sys.argv[1])
