"""Train TopK SAEs on the residual stream with sae-lens, a chunk of layers at a time.

sae-lens' ``MultiSAETrainer`` (one ``SAETrainer`` per SAE, stepped in lockstep) consumes our
:class:`ActivationSource`, which feeds every layer of a chunk from one forward pass per prompt batch.
sae-lens' own mid-run checkpoints pickle optimizer state (``torch.save``), so they stay off: the unit of
resumption is a chunk of layers. Each finished SAE is written at once (``save_inference_model``, weights
converted to fp16 safetensors) with ``training_config.json`` last; a layer whose ``training_config.json``
holds the same config hash is skipped, so a crash loses at most the chunk in progress.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from refusal_sae.errors import ConfigError, NumericalError
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import hook_name, parse_hook_point
from refusal_sae.runs import completed, config_hash, mark_complete
from refusal_sae.saes.activations import ActivationSource
from refusal_sae.saes.config import SaeTrainConfig
from refusal_sae.saes.corpus import build_sequences, n_tokens
from refusal_sae.saes.lens import sae_lens_imports
from refusal_sae.saes.loading import TRAINING_CONFIG

WEIGHTS = "sae_weights.safetensors"


@dataclass
class TrainedSae:
    layer: int
    hook_name: str
    path: Path
    skipped: bool  # already trained with the same config
    info: dict  # contents of training_config.json

    def to_dict(self) -> dict:
        return {"layer": self.layer, "hook_name": self.hook_name, "path": str(self.path), "skipped": self.skipped,
                **{k: self.info.get(k) for k in ("train_stats", "source_stats")}}


def save_sae(sae, path: Path, dtype: str = "float16") -> Path:
    """``save_inference_model`` into ``path`` (replaced atomically), weights converted to ``dtype``."""
    from safetensors.torch import load_file, save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    sae.save_inference_model(tmp)
    if dtype != "float32":
        tensors = load_file(str(tmp / WEIGHTS))
        save_file({k: v.to(getattr(torch, dtype)).contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def make_sae(d_in: int, width: int, k: int, cfg: SaeTrainConfig, name: str, model_name: str, device: str):
    with sae_lens_imports():
        from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
        from sae_lens.saes.sae import SAEMetadata

    meta = SAEMetadata(hook_name=name, model_name=model_name, context_size=cfg.corpus.max_len, prepend_bos=True)
    sae_cfg = TopKTrainingSAEConfig(d_in=d_in, d_sae=width, k=k, aux_loss_coefficient=cfg.aux_loss_coefficient,
                                    normalize_activations="expected_average_only_in" if cfg.normalize_activations else "none",
                                    device=device, metadata=meta)
    return TopKTrainingSAE(sae_cfg)


def _trainer_config(cfg: SaeTrainConfig, device: str):
    with sae_lens_imports():
        from sae_lens.config import LoggingConfig, SAETrainerConfig

    steps = cfg.steps
    dead_window = max(1, cfg.dead_tokens // cfg.batch_size)
    return SAETrainerConfig(total_training_samples=steps * cfg.batch_size, train_batch_size_samples=cfg.batch_size,
                            lr=cfg.lr, lr_end=cfg.lr / 10, lr_warm_up_steps=int(steps * cfg.warmup_fraction),
                            lr_decay_steps=int(steps * cfg.decay_fraction), device=device,
                            dead_feature_window=dead_window, feature_sampling_window=max(dead_window, steps // 4),
                            n_batches_for_norm_estimate=cfg.norm_estimate_batches, logger=LoggingConfig(log_to_wandb=False))


def train_saes(handle: ModelHandle, layers: Sequence[int], width: int, k: int, cfg: SaeTrainConfig | None = None,
               out_dir: Path | str = "saes", *, data_dir=None, cache_dir: Path | None = None,
               instructions: Sequence[str] | None = None, command: str | None = None,
               progress: bool = True) -> list[TrainedSae]:
    """Train (or reuse) one TopK SAE per layer on ``blocks.{L}.hook_resid_post``; returns what is in ``out_dir``."""
    with sae_lens_imports():
        from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    cfg = cfg or SaeTrainConfig()
    if not layers:
        raise ConfigError("no layers given")
    layers = sorted(dict.fromkeys(parse_hook_point(hook_name(L), handle.n_layers).layer for L in layers))
    if width < 1 or not 1 <= k <= width:
        raise ConfigError(f"need width >= 1 and 1 <= k <= width, got width {width}, k {k}")
    out_dir = Path(out_dir)
    conf = {"model": handle.name, "model_revision": handle.revision, "d_model": handle.d_model,
            "width": width, "k": k, "architecture": "topk",
            **{key: v for key, v in cfg.to_dict().items() if key not in ("layers_per_chunk", "activation_cache_gb")}}
    if instructions is not None:
        conf["instructions_hash"] = config_hash({"i": list(instructions)})
    results: dict[int, TrainedSae] = {}
    todo = []
    for L in layers:
        info = _finished(out_dir / hook_name(L), conf, L)
        if info is not None:
            results[L] = TrainedSae(L, hook_name(L), out_dir / hook_name(L), True, info)
        else:
            todo.append(L)
    if todo:
        seqs = build_sequences(handle, cfg.corpus, data_dir, cache_dir, instructions, progress)
        device = str(handle.device)
        chunks = [todo[i : i + cfg.layers_per_chunk] for i in range(0, len(todo), cfg.layers_per_chunk)]
        for chunk in tqdm(chunks, desc="SAE layer chunks", disable=not progress or len(chunks) == 1):
            names = [hook_name(L) for L in chunk]
            torch.manual_seed(cfg.seed + chunk[0])
            saes = {n: make_sae(handle.d_model, width, k, cfg, n, handle.name, device) for n in names}
            source = ActivationSource(handle, seqs, names, cfg.batch_size, prompt_batch_size=cfg.prompt_batch_size,
                                      filt=cfg.positions, buffer_tokens=cfg.buffer_tokens, seed=cfg.seed,
                                      cache_bytes=int(cfg.activation_cache_gb * 2**30))
            trainer = MultiSAETrainer(_trainer_config(cfg, device), saes, {n: n for n in names}, iter(source))
            trainer.fit()
            for L, n in zip(chunk, names, strict=True):
                results[L] = _save(saes[n], trainer.trainers[n], source.stats[n].to_dict(), out_dir / n, conf, L,
                                   cfg, command, n_tokens(seqs), len(seqs))
    return [results[L] for L in layers]


def _finished(path: Path, conf: dict, layer: int) -> dict | None:
    """The training record of a finished SAE for this config, or ``None`` (missing, other config, no weights)."""
    return completed(path / TRAINING_CONFIG, {**conf, "layer": layer}) if (path / WEIGHTS).is_file() else None


def _save(sae, trainer, source_stats: dict, path: Path, conf: dict, layer: int, cfg: SaeTrainConfig,
          command: str | None, corpus_tokens: int, n_sequences: int) -> TrainedSae:
    for p_name, p in sae.named_parameters():
        if not torch.isfinite(p).all():
            raise NumericalError(f"SAE training for layer {layer} diverged: non-finite {p_name}; try a lower --lr")
    dead = trainer.dead_neurons
    stats = {"steps": trainer.n_training_steps, "tokens": trainer.n_training_samples,
             "dead_fraction_window": float(dead.float().mean()), "l0_window": sae.cfg.metadata.l0,
             "corpus_tokens": corpus_tokens, "corpus_sequences": n_sequences}
    save_sae(sae, path, cfg.save_dtype)
    info = mark_complete(path / TRAINING_CONFIG, {**conf, "layer": layer},
                         {"hook_name": hook_name(layer), "command": command, "train_stats": stats,
                          "source_stats": source_stats})
    return TrainedSae(layer, hook_name(layer), path, False, info)
