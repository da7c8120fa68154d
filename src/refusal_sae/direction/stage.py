"""The direction stage end to end: candidates on training splits, selection on validation splits,
saved into the run directory (``direction/direction.safetensors`` + ``result.json`` with every score)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from refusal_sae.data import load_dataset
from refusal_sae.direction.diff_in_means import DirectionCandidates, compute_candidates
from refusal_sae.direction.harm_vs_refusal import compare, rows_to_dicts
from refusal_sae.direction.select import (
    CandidateScore,
    SelectionConfig,
    apply_filters,
    choose,
    kl_by_prompt,
    score_candidates,
    scores_to_dicts,
)
from refusal_sae.models.handle import ModelHandle
from refusal_sae.runs import RunDir, config_hash, write_json_atomic
from refusal_sae.scoring.refusal_score import discover_refusal_tokens


@dataclass
class DirectionConfig:
    n_train: int = 128  # per class, from harmful_train / harmless_train
    n_val: int = 32  # per class, from harmful_val / harmless_val
    seed: int = 0
    massive_k: int = 4  # massive-activation directions projected out of the candidates (0: Arditi et al. as is)
    massive_ratio: float = 5.0  # a position is massive when its norm is ≥ this × the prompt's median norm
    selection: SelectionConfig = None  # type: ignore[assignment]

    def __post_init__(self):
        if self.selection is None:
            self.selection = SelectionConfig()
        elif isinstance(self.selection, dict):
            self.selection = SelectionConfig(**self.selection)

    def to_dict(self, model: str, revision: str | None = None) -> dict:
        """The stage's identity: its settings and the exact weights (a re-tuned model never reuses old results)."""
        d = asdict(self)
        d["model"] = model
        d["model_revision"] = revision
        return d


@dataclass
class DirectionResult:
    direction: torch.Tensor  # raw difference-in-means vector of the chosen candidate
    pos: int
    layer: int
    harm: torch.Tensor  # [n_layers, d_model] t_inst harm directions
    info: dict

    @property
    def unit(self) -> torch.Tensor:
        return self.direction / self.direction.norm()

    @classmethod
    def load(cls, stage_dir: Path) -> DirectionResult:
        import json

        t = load_file(str(stage_dir / "direction.safetensors"))
        info = json.loads((stage_dir / "result.json").read_text())
        return cls(t["direction"], info["chosen"]["pos"], info["chosen"]["layer"], t["harm"], info)


def harm_refusal_cosines(cands: DirectionCandidates, pos: int) -> list[float]:
    r = cands.refusal[pos + cands.refusal.shape[0]]
    return torch.nn.functional.cosine_similarity(r, cands.harm, dim=-1).nan_to_num(0.0).tolist()


def run_direction_stage(handle: ModelHandle, run: RunDir, cfg: DirectionConfig, data_dir=None) -> DirectionResult:
    conf = cfg.to_dict(handle.name, handle.revision)
    stage = run.stage("direction")
    if run.is_complete("direction", conf):
        return DirectionResult.load(stage)
    harmful = load_dataset("harmful_train", data_dir).sample(cfg.n_train, cfg.seed).instructions
    harmless = load_dataset("harmless_train", data_dir).sample(cfg.n_train, cfg.seed).instructions
    cand_path = stage / "candidates.safetensors"
    cands = compute_candidates(handle, harmful, harmless, cfg.selection.batch_size, cfg.massive_k, cfg.massive_ratio)
    cands.save(cand_path)
    harmful_val = load_dataset("harmful_val", data_dir).sample(cfg.n_val, cfg.seed).instructions
    harmless_val = load_dataset("harmless_val", data_dir).sample(cfg.n_val, cfg.seed).instructions
    # The measured scores are written before the thresholds are applied: a run whose candidates are all
    # filtered out leaves them to inspect, and a re-run with other --max-kl / --min-induce reuses them.
    scores_path = stage / "scores.json"
    scoring_conf = {k: v for k, v in conf.items() if k != "selection"}
    scoring_conf["selection"] = {k: v for k, v in conf["selection"].items() if k not in ("max_kl", "min_induce")}
    saved = json.loads(scores_path.read_text()) if scores_path.is_file() else None
    if saved is not None and saved.get("scoring_config_hash") == config_hash(scoring_conf):
        tokens = saved["refusal_tokens"]
        scores = apply_filters([CandidateScore(**{k: (math.nan if v is None else v) for k, v in d.items()})
                                for d in saved["candidates"]], cfg.selection)
    else:
        tokens = discover_refusal_tokens(handle, load_dataset("harmful_train", data_dir).sample(32, cfg.seed + 1).instructions)
        scores = score_candidates(handle, cands, harmful_val, harmless_val, tokens, cfg.selection)
        write_json_atomic(scores_path, {"scoring_config_hash": config_hash(scoring_conf), "refusal_tokens": tokens,
                                        "candidates": scores_to_dicts(scores)})
    best = choose(scores, str(scores_path))
    direction = cands.get(best.pos, best.layer).float()
    save_file({"direction": direction.contiguous(), "harm": cands.harm.float().contiguous()},
              str(stage / "direction.safetensors"))
    info = {
        "chosen": scores_to_dicts([best])[0],
        "refusal_tokens": tokens,
        "n_train": [cands.n_harmful, cands.n_harmless],
        "massive_directions_removed": 0 if cands.massive is None else len(cands.massive),
        "n_val": [len(harmful_val), len(harmless_val)],
        "candidates": scores_to_dicts(scores),
        "harm_refusal_cosine_by_layer": harm_refusal_cosines(cands, best.pos),
        "kl_by_prompt": kl_by_prompt(handle, direction, harmless_val, top=3),
    }
    run.finish("direction", conf, info)
    return DirectionResult(direction, best.pos, best.layer, cands.harm.float(), run.load("direction"))


def run_harm_vs_refusal_stage(handle: ModelHandle, run: RunDir, cfg: DirectionConfig, layers: Sequence[int],
                              data_dir=None) -> dict:
    """Cosine and causal comparison of the t_inst harm direction with the refusal direction, per layer."""
    conf = cfg.to_dict(handle.name, handle.revision) | {"layers": list(layers)}
    if run.is_complete("harm_vs_refusal", conf):
        return run.load("harm_vs_refusal")
    chosen = run_direction_stage(handle, run, cfg, data_dir)
    cands = DirectionCandidates.load(run.stage("direction") / "candidates.safetensors")
    harmful = load_dataset("harmful_val", data_dir).sample(cfg.n_val, cfg.seed).instructions
    harmless = load_dataset("harmless_val", data_dir).sample(cfg.n_val, cfg.seed).instructions
    base, rows = compare(handle, cands, chosen.pos, layers, harmful, harmless, chosen.info["refusal_tokens"])
    run.finish("harm_vs_refusal", conf, {"position": chosen.pos, **base, "rows": rows_to_dicts(rows)})
    return run.load("harm_vs_refusal")
