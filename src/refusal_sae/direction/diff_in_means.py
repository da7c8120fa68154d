"""Difference-in-means candidate directions (Arditi et al. 2024).

For every layer (``blocks.L.hook_resid_pre``) and every post-instruction position, the refusal candidate is
``mean(harmful) − mean(harmless)``; the harmfulness direction is the same difference read at the
instruction's last token ``t_inst``. Means accumulate in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from refusal_sae.errors import ConfigError
from refusal_sae.models.handle import ModelHandle
from refusal_sae.scoring.generation import length_sorted_batches


@dataclass
class MeanActivations:
    post_inst: torch.Tensor  # [n_post, n_layers, d_model], positions −n_post..−1
    t_inst: torch.Tensor  # [n_layers, d_model]
    n: int


@torch.no_grad()
def mean_activations(handle: ModelHandle, instructions: Sequence[str], batch_size: int = 32,
                     desc: str = "activations") -> MeanActivations:
    if not instructions:
        raise ConfigError("no prompts to average")
    prompts = [handle.format(i) for i in instructions]
    n_post = {p.n_post_inst for p in prompts}
    if len(n_post) != 1:
        raise ConfigError(f"prompts have different post-instruction lengths {sorted(n_post)}")
    n_post_i = n_post.pop()
    names = [f"blocks.{L}.hook_resid_pre" for L in range(handle.n_layers)]
    post = torch.zeros(n_post_i, handle.n_layers, handle.d_model, dtype=torch.float64)
    tinst = torch.zeros(handle.n_layers, handle.d_model, dtype=torch.float64)
    for idx in tqdm(length_sorted_batches([len(p) for p in prompts], batch_size), desc=desc, unit="batch"):
        batch = handle.batch([prompts[i] for i in idx])
        cache = handle.cache_activations(batch, names)
        acts = torch.stack([cache[n] for n in names], dim=2).double().cpu()  # [B, T, L, d]
        post += acts[:, -n_post_i:].sum(0)
        rows = torch.arange(len(idx))
        tinst += acts[rows, batch.t_inst.cpu()].sum(0)
    return MeanActivations(post / len(prompts), tinst / len(prompts), len(prompts))


@dataclass
class DirectionCandidates:
    refusal: torch.Tensor  # [n_post, n_layers, d_model]: harmful − harmless at post-instruction positions
    harm: torch.Tensor  # [n_layers, d_model]: harmful − harmless at t_inst
    n_harmful: int
    n_harmless: int

    @property
    def positions(self) -> list[int]:
        """Negative position offsets of the candidates (−n_post .. −1)."""
        return list(range(-self.refusal.shape[0], 0))

    def get(self, pos: int, layer: int) -> torch.Tensor:
        return self.refusal[pos + self.refusal.shape[0], layer]

    def save(self, path: Path) -> None:
        save_file({"refusal": self.refusal.contiguous(), "harm": self.harm.contiguous(),
                   "counts": torch.tensor([self.n_harmful, self.n_harmless])}, str(path))

    @classmethod
    def load(cls, path: Path) -> DirectionCandidates:
        t = load_file(str(path))
        return cls(t["refusal"], t["harm"], int(t["counts"][0]), int(t["counts"][1]))


def compute_candidates(handle: ModelHandle, harmful: Sequence[str], harmless: Sequence[str],
                       batch_size: int = 32) -> DirectionCandidates:
    a = mean_activations(handle, harmful, batch_size, "harmful activations")
    b = mean_activations(handle, harmless, batch_size, "harmless activations")
    return DirectionCandidates(a.post_inst - b.post_inst, a.t_inst - b.t_inst, a.n, b.n)
