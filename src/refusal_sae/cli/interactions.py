"""`interactions` and `dormant`: stages 3 and 4 on top of the feature search (FM interactions and the K sweep;
critical-but-silent features, newly active features and rounds of re-search)."""

from __future__ import annotations

from refusal_sae.cli.common import app, out
from refusal_sae.cli.options import Command, stage_command
from refusal_sae.search.config import DormantConfig, InteractionsConfig
from refusal_sae.search.show import show_dormant, show_interactions


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
    show_interactions(data, model, sweep, out, run)
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
    """Stage 4: critical-but-silent members of the found sets, features newly active under the minimal set's clamp
    (by position kind), and rounds of re-search until the refusal score stops falling."""
    from refusal_sae.search.dormant import run_dormant_stage

    cfg.validate()
    run = cmd.run
    _precheck(run, lambda ctx: None)
    handle = cmd.load()
    _, sae_set = cmd.resolve_saes(handle)
    silent, newly, rounds = run_dormant_stage(handle, sae_set, run, cfg, cmd.data_dir)
    show_dormant(silent, newly, rounds, out, run)
    cmd.emit({"silent": silent.to_json()["summaries"], "newly_active": newly.to_json(),
              "rounds": None if rounds is None else rounds.to_json()})


__all__ = ["dormant_cmd", "interactions_cmd"]
