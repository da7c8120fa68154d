"""`search` and `search-table`: stage 2 (the SAE features that carry refusal) and its held-out comparison table."""

from __future__ import annotations

from refusal_sae.cli.common import (
    app,
    out,
)
from refusal_sae.cli.options import Command, stage_command
from refusal_sae.search.config import SearchConfig, SearchTableConfig


@app.command("search")
@stage_command(SearchConfig, saes=True, aliases={"clamps": ["--clamp"]})
def search_cmd(
    cfg: SearchConfig,
    cmd: Command,
) -> None:
    """Stage 2: SAE features that carry refusal: candidates (decoder cosine + LA-IG, baselines), K* and clamp chosen on
    validation prompts against random controls, greedy filtering to a minimal set, feature cards."""
    from refusal_sae.search.runner import run_search_stage

    cfg.validate()  # before the model loads
    run = cmd.run
    handle = cmd.load()
    _, sae_set = cmd.resolve_saes(handle)
    cands, choice, greedy, cards = run_search_stage(handle, sae_set, run, cfg, cmd.data_dir)
    out.print(f"candidates: {len(cands.prefilter)} by decoder cosine over layers {cands.layers}; the prefilter "
              f"holds {cands.prefilter_attribution_share[cfg.direction_source]:.0%} of the positive attribution "
              f"(the other direction source: {cands.prefilter_attribution_share['per_layer' if cfg.direction_source == 'selected' else 'selected']:.0%})")
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
    cmd.emit({"choice": choice.to_json(), "minimal": greedy.to_json()["minimal"],
                          "confirm": greedy.confirm, "kept_flip_ratio": greedy.kept_flip_ratio,
                          "tau_sweep": greedy.tau_sweep, "prefilter_attribution_share": cands.prefilter_attribution_share})


@app.command("search-table")
@stage_command(SearchTableConfig, saes=True)
def search_table_cmd(
    cfg: SearchTableConfig,
    cmd: Command,
) -> None:
    """The comparison table on held-out prompts the model refuses: ours vs direction ablation, CosSim, ActDiff, AP,
    the greedy minimal set and random controls, with CIs, capability cost and paired tests."""
    from refusal_sae.search.runner import run_table_stage

    run = cmd.run
    handle = cmd.load()
    _, sae_set = cmd.resolve_saes(handle)
    table = run_table_stage(handle, sae_set, run, cfg.datasets, cfg.n_harmless, cmd.data_dir, n=cfg.n)
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
    cmd.emit({k: v for k, v in table.to_json().items()})
