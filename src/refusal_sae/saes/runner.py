"""SAE quality in a run directory (``sae_metrics/``): :func:`~refusal_sae.saes.metrics.evaluate_saes` on
held-out prompts + the model's responses, kept as a typed :class:`SaeMetricsResult`.

Import is torch-free (the config is read by ``run --dry-run``); the measurement imports torch when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from refusal_sae.runs import RunDir, StageResult, file_sha256
from refusal_sae.saes.config import SaeMetricsConfig


@dataclass
class SaeRow:
    """One SAE's quality (the fields of :class:`~refusal_sae.saes.metrics.SaeMetrics`) and where it came from."""

    hook_name: str
    layer: int
    source: str
    d_sae: int
    n_sequences: int
    n_tokens: int
    fvu: float | None
    mean_l0: float
    dead_fraction: float
    ce_base: float
    ce_spliced: float
    ce_zero: float
    loss_recovered: float | None
    n_massive: int
    massive_fvu: float | None
    massive_rel_error: float | None
    ce_tokens: int = 0


@dataclass
class SaeMetricsResult(StageResult):
    kind = "sae_metrics"

    model: str
    datasets: list[str]
    n_sequences: int
    rows: list[SaeRow]


def sae_identity(saes) -> list[dict]:
    """Each SAE's source and, for local folders, the hash of its weights."""
    out = []
    for name in saes:
        src = Path(saes.sources[name])
        weights = src / "sae_weights.safetensors"
        out.append({"hook_name": name, "source": str(src), "sha256": file_sha256(weights) if weights.is_file() else None})
    return out


def run_sae_metrics_stage(handle, run: RunDir, saes, cfg: SaeMetricsConfig, data_dir=None, force: bool = False,
                          progress: bool = True) -> SaeMetricsResult:
    """Measure ``saes`` (a validated :class:`~refusal_sae.saes.loading.SaeSet`) into ``run`` (``sae_metrics/``),
    skipped when complete for the same settings, weights and SAEs."""
    from refusal_sae.saes.corpus import build_sequences, load_instructions
    from refusal_sae.saes.metrics import evaluate_saes

    load_instructions(cfg.datasets, 1, cfg.seed, data_dir)  # test splits and missing data fail before any work
    run.record_model(handle)
    run.record_saes(saes)
    identity = cfg.to_dict() | {"model": handle.name, "model_revision": handle.revision, "saes": sae_identity(saes)}

    def compute() -> SaeMetricsResult:
        seqs = build_sequences(handle, cfg.corpus(), data_dir, run.root / "responses", progress=progress)
        rows = evaluate_saes(handle, saes, seqs, cfg.batch_size, cfg.positions(), progress=progress,
                             ce_batches=cfg.ce_batches)
        return SaeMetricsResult(handle.name, list(cfg.datasets), len(seqs),
                                [SaeRow(source=saes.sources[m.hook_name], **m.to_dict()) for m in rows])

    return run.run(SaeMetricsResult, identity, compute, force=force)
