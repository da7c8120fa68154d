"""`search` and `search-table`: stage 2 (the SAE features that carry refusal) and its held-out comparison table."""

from __future__ import annotations

from refusal_sae.cli.common import app, out
from refusal_sae.cli.options import Command, stage_command
from refusal_sae.search.config import SearchConfig, SearchTableConfig
from refusal_sae.search.show import show_search, show_table


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
    show_search(cands, choice, greedy, out, run, cfg)
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
    show_table(table, out)
    cmd.emit({k: v for k, v in table.to_json().items()})
