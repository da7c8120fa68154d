"""`harden`: stage 5 — hardening refusal by SAE feature steering against activation addition, with the
capability cost (jailbreak success vs over-refusal vs loss increase)."""

from __future__ import annotations

from refusal_sae.analysis.config import HardenConfig
from refusal_sae.analysis.show import show_harden
from refusal_sae.cli.common import app, out
from refusal_sae.cli.options import Command, stage_command


@app.command("harden")
@stage_command(HardenConfig, saes=True, force=True, aliases={"jailbreak_datasets": ["--datasets"]})
def harden_cmd(
    cfg: HardenConfig,
    cmd: Command,
) -> None:
    """Harden refusal by steering the search's refusal features up (unconditionally, and gated on an upstream harm
    feature) against activation addition of the refusal direction: jailbreak success, over-refusal and loss increase
    on held-out prompts, with random-feature controls and paired tests."""
    from refusal_sae.analysis.harden import HardenPrompts, run_harden_stage

    cfg.validate()  # before the model loads
    run = cmd.run
    prompts = HardenPrompts.load(cfg, cmd.data_dir)  # unknown or empty datasets fail here, before the model loads
    handle = cmd.load()
    res = run_harden_stage(handle, cmd.saes(handle), run, cfg, cmd.data_dir, force=cmd.force,
                           prompts=prompts)
    show_harden(res, out, run)
    cmd.emit(res.to_json())
