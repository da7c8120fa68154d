"""`train-sae`, `sae-metrics`, `features`: train residual-stream SAEs, measure them, inspect latents."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from refusal_sae.cli.common import (
    DataDirOpt,
    JsonOpt,
    RunDirOpt,
    app,
    command_line,
    int_list,
    model_options,
    out,
)
from refusal_sae.cli.options import Command, stage_command
from refusal_sae.models.options import ModelSpec
from refusal_sae.saes.config import DEFAULT_K, DEFAULT_WIDTH, CorpusConfig, PositionFilter, SaeMetricsConfig, SaeTrainConfig

T, C, P = SaeTrainConfig, CorpusConfig, PositionFilter  # defaults live in the torch-free configs

SaesOpt = Annotated[Optional[Path], typer.Option("--saes", help="Folder with one sub-folder per SAE saved by sae-lens (default: <run-dir>/saes).")]
ReleaseOpt = Annotated[Optional[str], typer.Option("--sae-release", help="sae-lens release, e.g. gemma-scope-2b-pt-res-canonical or llama_scope_lxr_8x.")]
IdsOpt = Annotated[Optional[str], typer.Option("--sae-ids", help="Comma-separated SAE ids of --sae-release, e.g. layer_12/width_16k/canonical.")]
OutlierOpt = Annotated[float, typer.Option(help="Exclude positions whose norm exceeds this x the batch median (0 = off).")]
KeepFirstOpt = Annotated[bool, typer.Option("--keep-first", help="Keep each sequence's first token (excluded by default: BOS-like, massive norm).")]
MaxNewOpt = Annotated[int, typer.Option(help="Greedy response tokens generated per prompt (cached in <run-dir>/responses).")]
MaxLenOpt = Annotated[int, typer.Option(help="Tokens per sequence (prompt + response), truncated beyond.")]


def _filter(outlier_factor: float, keep_first: bool):
    from refusal_sae.saes import PositionFilter

    return PositionFilter(exclude_first=not keep_first, outlier_factor=outlier_factor or None)


def _datasets(text: str) -> tuple[str, ...]:
    return tuple(d.strip() for d in text.split(",") if d.strip())


@app.command("train-sae")
@model_options
def train_sae_cmd(
    spec: ModelSpec,
    layers: Annotated[str, typer.Option(help="Layers whose resid_post gets an SAE, e.g. '6,12' or '4-24:4'.")],
    width: Annotated[int, typer.Option(help="Latents per SAE (d_sae).")] = DEFAULT_WIDTH,
    k: Annotated[int, typer.Option(help="Active latents per token (TopK).")] = DEFAULT_K,
    n_prompts: Annotated[int, typer.Option(help="Prompts per dataset from harmful_train and harmless_train.")] = C.n_prompts,
    training_tokens: Annotated[int, typer.Option(help="Training tokens per SAE (the corpus is cycled).")] = T.training_tokens,
    batch_size: Annotated[int, typer.Option(help="Tokens per optimiser step.")] = T.batch_size,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = T.lr,
    aux_coeff: Annotated[float, typer.Option(help="Weight of the TopK auxiliary (dead-latent) loss.")] = T.aux_loss_coefficient,
    dead_tokens: Annotated[int, typer.Option(help="Tokens without firing after which a latent counts as dead.")] = T.dead_tokens,
    layers_per_chunk: Annotated[int, typer.Option(help="Layers trained together from one forward pass; a crash loses at most one chunk.")] = T.layers_per_chunk,
    max_new_tokens: MaxNewOpt = C.max_new_tokens,
    max_len: MaxLenOpt = C.max_len,
    outlier_factor: OutlierOpt = P.outlier_factor,
    keep_first: KeepFirstOpt = False,
    save_dtype: Annotated[str, typer.Option(help="Weights on disk: float16, bfloat16 or float32.")] = T.save_dtype,
    seed: Annotated[int, typer.Option(help="Sampling / shuffling / init seed.")] = T.seed,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output folder, one sub-folder per SAE (default: <run-dir>/saes).")] = None,
    run_dir: RunDirOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train TopK SAEs (sae-lens) on residual streams of chat prompts + the model's own responses (train splits)."""
    from refusal_sae.errors import ConfigError
    from refusal_sae.saes import CorpusConfig, SaeTrainConfig, train_saes

    layer_list = int_list(layers)
    if not layer_list:
        raise ConfigError("--layers is empty")
    corpus = CorpusConfig(n_prompts=n_prompts, max_new_tokens=max_new_tokens, max_len=max_len, seed=seed)
    cfg = SaeTrainConfig(training_tokens=training_tokens, batch_size=batch_size, lr=lr, aux_loss_coefficient=aux_coeff,
                         dead_tokens=dead_tokens, layers_per_chunk=layers_per_chunk, save_dtype=save_dtype, seed=seed,
                         positions=_filter(outlier_factor, keep_first), corpus=corpus)
    handle = spec.load()
    layer_list = [L + handle.n_layers if L < 0 else L for L in layer_list]
    run = run_dir or spec.default_run_dir()
    dest = out_dir or run / "saes"
    results = train_saes(handle, layer_list, width, k, cfg, dest, data_dir=data_dir, cache_dir=run / "responses",
                         command=command_line())
    from rich.table import Table

    table = Table(title=f"SAEs for {handle.name} → {dest}")
    for col in ("layer", "status", "steps", "tokens", "dead (window)", "L0 (window)", "excluded positions"):
        table.add_column(col)
    for r in results:
        st, src = r.info["train_stats"], r.info["source_stats"]
        table.add_row(str(r.layer), "reused" if r.skipped else "trained", str(st["steps"]), str(st["tokens"]),
                      f"{st['dead_fraction_window']:.3f}", f"{st['l0_window']:.1f}" if st["l0_window"] is not None else "-",
                      f"{src['excluded']} of {src['tokens']}")
    out.print(table)
    out.print(f"measure them with: refusal-sae sae-metrics --saes {dest}" + (f" --model {spec.model}" if spec.model else ""))
    if as_json:
        print(json.dumps({"model": handle.name, "out": str(dest), "saes": [r.to_dict() for r in results]}))


@app.command("sae-metrics")
@stage_command(SaeMetricsConfig, saes=True, force=True)
def sae_metrics_cmd(
    cfg: SaeMetricsConfig,
    cmd: Command,
    write: Annotated[bool, typer.Option("--write", help="Also write metrics.json (with this command) into each SAE folder.")] = False,
) -> None:
    """SAE quality on held-out prompts + responses: FVU, L0, dead latents, next-token loss recovered (the sae_metrics
    stage: kept in the run directory, skipped when complete for the same settings and SAEs)."""
    from refusal_sae.errors import ConfigError
    from refusal_sae.saes.runner import run_sae_metrics_stage

    if write and cmd.sae_args[1]:
        raise ConfigError("--write needs SAEs in local folders (--saes), not a release")
    run = cmd.run
    handle = cmd.load()
    sae_spec, sae_set = cmd.resolve_saes(handle)
    res = run_sae_metrics_stage(handle, run, sae_set, cfg, cmd.data_dir, force=cmd.force)
    from rich.table import Table

    def f(x, fmt=".4f"):
        return "-" if x is None else format(x, fmt)

    table = Table(title=f"SAE quality on {', '.join(res.datasets)} ({res.n_sequences} sequences), ordinary positions")
    table.add_column("metric")
    for m in res.rows:
        table.add_column(f"layer {m.layer}", justify="right")
    lines = [("d_sae", "d_sae", "d"), ("tokens", "n_tokens", "d"), ("FVU", "fvu", ".4f"), ("L0", "mean_l0", ".1f"),
             ("dead fraction", "dead_fraction", ".3f"), ("CE base", "ce_base", ".4f"), ("CE spliced", "ce_spliced", ".4f"),
             ("CE zero-ablated", "ce_zero", ".4f"), ("loss recovered", "loss_recovered", ".3f"),
             ("CE tokens", "ce_tokens", "d"), ("massive positions", "n_massive", "d"), ("massive FVU", "massive_fvu", ".4f"),
             ("massive rel. error", "massive_rel_error", ".4f")]
    for label, key, fmt in lines:
        table.add_row(label, *(f(getattr(m, key), fmt) for m in res.rows))
    out.print(table)
    metrics = [{k: v for k, v in asdict(m).items() if k != "source"} for m in res.rows]
    if write:
        from refusal_sae.runs import write_json_atomic

        for m, row in zip(res.rows, metrics, strict=True):
            write_json_atomic(Path(m.source) / "metrics.json", {**row, "model": handle.name, "model_revision": handle.revision,
                                                               "datasets": list(cfg.datasets), "n_prompts": cfg.n_prompts,
                                                               "seed": cfg.seed, "command": command_line()})
        out.print(f"metrics.json written into {len(res.rows)} SAE folders")
    cmd.emit({"model": handle.name, "saes": sae_spec.describe(), "datasets": list(res.datasets),
              "n_sequences": res.n_sequences, "metrics": metrics})


@app.command("features")
@model_options
def features_cmd(
    spec: ModelSpec,
    layer: Annotated[int, typer.Option(help="Layer of the SAE (blocks.L.hook_resid_post).")],
    ids: Annotated[str, typer.Option(help="Latent ids, e.g. '12,345'.")],
    saes: SaesOpt = None,
    sae_release: ReleaseOpt = None,
    sae_ids: IdsOpt = None,
    datasets: Annotated[str, typer.Option(help="Prompt sets to search (non-test), comma-separated.")] = "harmful_train,harmless_train",
    n_prompts: Annotated[int, typer.Option(help="Prompts per dataset.")] = 64,
    top_n: Annotated[int, typer.Option(help="Examples per latent.")] = 10,
    window: Annotated[int, typer.Option(help="Context tokens either side of the activating token.")] = 8,
    max_new_tokens: MaxNewOpt = C.max_new_tokens,
    max_len: MaxLenOpt = C.max_len,
    batch_size: Annotated[int, typer.Option(help="Sequences per forward batch.")] = 8,
    outlier_factor: OutlierOpt = P.outlier_factor,
    keep_first: KeepFirstOpt = False,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    run_dir: RunDirOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Top-activating tokens (with context) and decoder norms of SAE latents at one layer."""
    from rich.markup import escape

    from refusal_sae.models.hooks import hook_name
    from refusal_sae.saes import build_sequences, top_activations
    from refusal_sae.saes.features import check_feature_ids

    feature_ids = int_list(ids) or ()
    handle = spec.load()
    run = run_dir or spec.default_run_dir()
    from refusal_sae.saes.loading import resolve_saes

    _, sae_set = resolve_saes(handle, saes, sae_release, sae_ids, run)
    sae = sae_set.at_layer(layer)
    check_feature_ids(sae, feature_ids, top_n, window)  # before the corpus is generated
    corpus = CorpusConfig(datasets=_datasets(datasets), n_prompts=n_prompts, max_new_tokens=max_new_tokens,
                          max_len=max_len, seed=seed)
    seqs = build_sequences(handle, corpus, data_dir, run / "responses")
    summaries = top_activations(handle, sae, hook_name(layer), feature_ids, seqs, top_n, window, batch_size,
                                _filter(outlier_factor, keep_first))
    for s in summaries:
        out.print(f"[bold]latent {s.feature}[/] @ {s.hook_name}: decoder norm {s.decoder_norm:.3f}, "
                  f"max {s.max_activation:.3f}, fires on {100 * s.frequency:.2f}% of tokens")
        for e in s.examples:
            left = escape("".join(e.tokens[: e.center]))
            mid = escape(e.tokens[e.center])
            right = escape("".join(e.tokens[e.center + 1 :]))
            out.print(f"  {e.activation:8.3f}  {left}[reverse]«{mid}»[/reverse]{right}".replace("\n", "⏎"))
    if as_json:
        print(json.dumps({"model": handle.name, "layer": layer, "features": [s.to_dict() for s in summaries]}))
