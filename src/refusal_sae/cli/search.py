"""`search` and `search-table`: stage 2 (the SAE features that carry refusal) and its held-out comparison table."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from refusal_sae.cli.common import (
    DataDirOpt,
    IdsOpt,
    JsonOpt,
    ReleaseOpt,
    RunDirOpt,
    SaesOpt,
    app,
    float_list,
    int_list,
    model_options,
    out,
    run_dir_for,
)
from refusal_sae.models.options import ModelSpec
from refusal_sae.search.config import SearchConfig

S = SearchConfig  # defaults live in the torch-free config


def _config(layers, k_per_layer, direction_source, ig_steps, n_attribution, n_val, top_k, clamp, n_random, greedy_tau,
            greedy_seeds, max_new_tokens, batch_size, judge, seed, max_degenerate, degenerate_bound) -> SearchConfig:
    return SearchConfig(layers=int_list(layers), k_per_layer=k_per_layer, direction_source=direction_source,
                        ig_steps=ig_steps, n_attribution=n_attribution, n_val=n_val, top_k=int_list(top_k) or (),
                        clamps=float_list(clamp), n_random=n_random, greedy_tau=greedy_tau,
                        greedy_seeds=greedy_seeds, max_new_tokens=max_new_tokens, batch_size=batch_size, judge=judge,
                        seed=seed, max_degenerate=max_degenerate, degenerate_bound=degenerate_bound)


@app.command("search")
@model_options
def search_cmd(
    spec: ModelSpec,
    run_dir: RunDirOpt = None,
    saes: SaesOpt = None,
    sae_release: ReleaseOpt = None,
    sae_ids: IdsOpt = None,
    layers: Annotated[Optional[str], typer.Option(help="SAE layers to search, e.g. '14-26:3' (default: every SAE).")] = None,
    k_per_layer: Annotated[int, typer.Option(help="Decoder-cosine candidates per layer.")] = S.k_per_layer,
    direction_source: Annotated[str, typer.Option(help="selected (the run's direction at every layer) | per_layer (each layer's own difference in means).")] = S.direction_source,
    ig_steps: Annotated[int, typer.Option(help="LA-IG interpolation steps.")] = S.ig_steps,
    n_attribution: Annotated[int, typer.Option(help="harmful_train prompts attributed for the global set.")] = S.n_attribution,
    n_val: Annotated[int, typer.Option(help="harmful_val prompts that choose K* and the clamp.")] = S.n_val,
    top_k: Annotated[str, typer.Option(help="K* grid, e.g. '10,20,30,40,50'.")] = ",".join(map(str, S.top_k)),
    clamp: Annotated[str, typer.Option(help="Clamp grid: 0 zero-ablates, c multiplies the activations, e.g. '0,-1,-3'.")] = ",".join(f"{c:g}" for c in S.clamps),
    n_random: Annotated[int, typer.Option(help="Random feature sets per control.")] = S.n_random,
    max_degenerate: Annotated[float, typer.Option(help="Share of degenerate answers a (K, c) may leave.")] = S.max_degenerate,
    degenerate_bound: Annotated[str, typer.Option(help="ablation (the bound is the direction ablation's own degenerate share when higher) | fixed.")] = S.degenerate_bound,
    greedy_tau: Annotated[float, typer.Option(help="Greedy filtering keeps what moves the mean refusal score by more.")] = S.greedy_tau,
    greedy_seeds: Annotated[int, typer.Option(help="Greedy orders intersected.")] = S.greedy_seeds,
    max_new_tokens: Annotated[int, typer.Option(help="Greedy tokens per judged answer.")] = S.max_new_tokens,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward batch.")] = S.batch_size,
    judge: Annotated[str, typer.Option(help="Judge of the generations.")] = S.judge,
    seed: Annotated[int, typer.Option(help="Sampling / random-set / order seed.")] = S.seed,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stage 2: SAE features that carry refusal: candidates (decoder cosine + LA-IG, baselines), K* and clamp chosen on
    validation prompts against random controls, greedy filtering to a minimal set, feature cards."""
    from refusal_sae.saes.loading import resolve_saes
    from refusal_sae.search.stage import run_search_stage

    cfg = _config(layers, k_per_layer, direction_source, ig_steps, n_attribution, n_val, top_k, clamp, n_random,
                  greedy_tau, greedy_seeds, max_new_tokens, batch_size, judge, seed, max_degenerate, degenerate_bound)
    cfg.validate()  # before the model loads
    run = run_dir_for(spec, run_dir)
    handle = spec.load()
    _, sae_set = resolve_saes(handle, saes, sae_release, sae_ids, run.root)
    cands, choice, greedy, cards = run_search_stage(handle, sae_set, run, cfg, data_dir)
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
    if as_json:
        print(json.dumps({"choice": choice.to_json(), "minimal": greedy.to_json()["minimal"],
                          "confirm": greedy.confirm, "kept_flip_ratio": greedy.kept_flip_ratio,
                          "tau_sweep": greedy.tau_sweep, "prefilter_attribution_share": cands.prefilter_attribution_share}))


@app.command("search-table")
@model_options
def search_table_cmd(
    spec: ModelSpec,
    run_dir: RunDirOpt = None,
    saes: SaesOpt = None,
    sae_release: ReleaseOpt = None,
    sae_ids: IdsOpt = None,
    datasets: Annotated[str, typer.Option(help="Held-out harmful sets, comma-separated.")] = "jailbreakbench,harmbench_test",
    n_harmless: Annotated[int, typer.Option(help="harmless_test prompts for the capability cost.")] = 64,
    n: Annotated[Optional[int], typer.Option("--n", help="A seeded sample of this many prompts of each held-out set (default: all).")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The comparison table on held-out prompts the model refuses: ours vs direction ablation, CosSim, ActDiff, AP,
    the greedy minimal set and random controls, with CIs, capability cost and paired tests."""
    from refusal_sae.saes.loading import resolve_saes
    from refusal_sae.search.stage import run_table_stage

    run = run_dir_for(spec, run_dir)
    handle = spec.load()
    _, sae_set = resolve_saes(handle, saes, sae_release, sae_ids, run.root)
    table = run_table_stage(handle, sae_set, run, tuple(d.strip() for d in datasets.split(",") if d.strip()),
                            n_harmless, data_dir, n=n)
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
        out.print(f"  {p.a} vs {p.b}: complied {p.complied_a} vs {p.complied_b} of {p.n}; only A {p.only_a}, "
                  f"only B {p.only_b}; McNemar p = {p.p_value:.3g}")
    if as_json:
        print(json.dumps({k: v for k, v in table.to_json().items()}))
