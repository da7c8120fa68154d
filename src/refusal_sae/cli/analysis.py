"""`jailbreaks`, `upstream` and `probes`: stage 5, which jailbreak families work, upstream → downstream features,
and probes that generalise. Each checks its settings and the run's earlier results before the model loads."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Optional

import typer

from refusal_sae.analysis.config import TEST_SETS, JailbreaksConfig, ProbeConfig, UpstreamConfig, jailbreak_stage_name
from refusal_sae.analysis.show import show_jailbreaks, show_probes, show_upstream
from refusal_sae.cli.common import app, names, out
from refusal_sae.cli.options import Command, stage_command

TEST = ",".join(JailbreaksConfig.datasets)
JbDatasetsOpt = Annotated[Optional[str], typer.Option("--jailbreak-datasets", help="Instead of --jailbreaks: the table made from these --datasets.")]
JbFileOpt = Annotated[Optional[str], typer.Option("--jailbreak-file", help="Instead of --jailbreaks: the table made from this --dataset file.")]


def _table(cfg, datasets: str | None, file: str | None):
    """``--jailbreak-datasets`` / ``--jailbreak-file`` name the table by what it was made from (else ``--jailbreaks``)."""
    return cfg if datasets is None and file is None else \
        replace(cfg, jailbreaks=jailbreak_stage_name(names(datasets) or TEST_SETS, file))


@app.command("jailbreaks")
@stage_command(JailbreaksConfig, force=True)
def jailbreaks_cmd(
    cfg: JailbreaksConfig,
    cmd: Command,
) -> None:
    """Which jailbreak families make the model comply: complied / degenerate / refused per family with Wilson CIs,
    paired against a neutral wrapper; the (plain refused → wrapped) pairs for `upstream` and `probe`."""
    from refusal_sae.analysis.jailbreaks import prepare, run_jailbreaks_stage

    prepare(cfg, cmd.data_dir)  # settings, families and prompt files, before the model loads
    run = cmd.run
    res = run_jailbreaks_stage(cmd.load(), run, cfg, cmd.data_dir)
    show_jailbreaks(res, out, run, cfg)
    cmd.emit(res.to_json())


def _clamp(text: str) -> float | None:
    from refusal_sae.errors import ConfigError

    if text.strip().lower() == "search":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--clamp takes a number or 'search', not {text!r}") from None


@app.command("upstream")
@stage_command(UpstreamConfig, saes=True, force=True, exclude=("clamp",))
def upstream_cmd(
    cfg: UpstreamConfig,
    cmd: Command,
    jailbreak_datasets: JbDatasetsOpt = None,
    jailbreak_file: JbFileOpt = None,
    clamp: Annotated[str, typer.Option(help="Multiplier of the upstream features (0 zero-ablates), or 'search' for the search's chosen clamp.")] = "-3",
) -> None:
    """Upstream → downstream: refusal features shared by most per-prompt sets, the drop of their activation when a
    jailbreak succeeds vs fails and when the upstream features are clamped (vs random), suppressing tokens per family."""
    from refusal_sae.analysis.upstream import prepare_upstream, run_upstream_stage

    cfg = replace(_table(cfg, jailbreak_datasets, jailbreak_file), clamp=_clamp(clamp))
    run = cmd.run
    prepare_upstream(run, cfg)  # settings and earlier results, before the model loads
    handle = cmd.load()
    res = run_upstream_stage(handle, cmd.saes(handle), run, cfg, cmd.data_dir)
    show_upstream(res, out, run)
    cmd.emit(res.to_json())


@app.command("probes")
@stage_command(ProbeConfig, saes=True, force=True, aliases={"feature_sets": ["--features"]})
def probe_cmd(
    cfg: ProbeConfig,
    cmd: Command,
    jailbreak_datasets: JbDatasetsOpt = None,
    jailbreak_file: JbFileOpt = None,
) -> None:
    """Probes of "will the model refuse" on last-token activations: refusal features vs random features vs the dense
    residual stream (layer chosen on validation), in and out of distribution, with bootstrap CIs and OOD gains."""
    from refusal_sae.analysis.probes import prepare_probes, run_probe_stage

    cfg = _table(cfg, jailbreak_datasets, jailbreak_file)
    run = cmd.run
    prepare_probes(run, cfg, cmd.data_dir)  # settings, earlier results and prompt files, before the model loads
    handle = cmd.load()
    res = run_probe_stage(handle, cmd.saes(handle), run, cfg, cmd.data_dir)
    show_probes(res, out, run)
    cmd.emit({k: v for k, v in res.to_json().items() if k != "dense_layers"} | {"dense_layers": res.dense_layers})


app.command("probe", hidden=True, help="The `probes` command under its old name.")(probe_cmd)
