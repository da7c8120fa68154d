"""Difference-in-means candidate directions (Arditi et al. 2024).

For every layer (``blocks.L.hook_resid_pre``) and every post-instruction position, the refusal candidate is
``mean(harmful) − mean(harmless)``; the harmfulness direction is the same difference read at the
instruction's last token ``t_inst``. Means accumulate in float64.

**Massive-activation directions.** Small chat models carry a few positions (the first token of the chat
template, attention sinks) whose residual norm is 10–150× the median. A difference-in-means vector has a
tiny component along those directions (cosine ~0.03 on the embedded SmolLM2), but ablation multiplies it by
the huge norm: on the embedded model, ablating layer-6…14 candidates raised harmless KL to 3–5 nats and
"bypassed" refusal only by breaking the model. So, by default, the top ``massive_k`` principal directions of
the massive positions' (unit) residuals, pooled over layers, are projected out of every candidate
(``massive_k=0`` reproduces Arditi et al. exactly). Measured effect: layer-6 KL 4.82 → 0.12 and its bypass score
from −0.59 back to 1.64 (clean 2.13): those candidates never carried refusal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from refusal_sae.errors import ConfigError
from refusal_sae.models.formatting import length_sorted_batches
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import hook_name
from refusal_sae.ops import project_out, top_eigenvectors
from refusal_sae.runs import save_tensors_atomic


@dataclass
class MeanActivations:
    post_inst: torch.Tensor  # [n_post, n_layers, d_model], positions −n_post..−1
    t_inst: torch.Tensor  # [n_layers, d_model]
    n: int
    massive_gram: torch.Tensor | None = None  # [d_model, d_model]: Σ u uᵀ over unit residuals at massive positions


def massive_mask(acts: torch.Tensor, attention_mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """``acts [B, T, L, d]`` → bool ``[B, T, L]``: real tokens whose norm is ≥ ratio × the median norm of
    the real tokens of the same prompt and layer. (SAE training's ``saes.activations.massive_masks`` compares with
    the median of a whole one-layer batch; here all layers come at once and each prompt is its own reference.)"""
    norms = acts.norm(dim=-1)
    valid = attention_mask.bool().to(norms.device)[:, :, None].expand_as(norms)
    median = norms.masked_fill(~valid, float("nan")).nanmedian(dim=1).values  # [B, L]
    return valid & (norms >= ratio * median[:, None, :])


@torch.no_grad()
def mean_activations(handle: ModelHandle, instructions: Sequence[str], batch_size: int = 32,
                     desc: str = "activations", massive_ratio: float | None = 5.0) -> MeanActivations:
    if not instructions:
        raise ConfigError("no prompts to average")
    prompts = [handle.format(i) for i in instructions]
    n_post = {p.n_post_inst for p in prompts}
    if len(n_post) != 1:
        raise ConfigError(f"prompts have different post-instruction lengths {sorted(n_post)}")
    n_post_i = n_post.pop()
    names = [hook_name(L, "resid_pre") for L in range(handle.n_layers)]
    post = torch.zeros(n_post_i, handle.n_layers, handle.d_model, dtype=torch.float64)
    tinst = torch.zeros(handle.n_layers, handle.d_model, dtype=torch.float64)
    gram = torch.zeros(handle.d_model, handle.d_model, dtype=torch.float64)
    for idx in tqdm(length_sorted_batches([len(p) for p in prompts], batch_size), desc=desc, unit="batch"):
        batch = handle.batch([prompts[i] for i in idx])
        cache = handle.cache_activations(batch, names)
        acts = torch.stack([cache[n] for n in names], dim=2).double().cpu()  # [B, T, L, d]
        post += acts[:, -n_post_i:].sum(0)
        rows = torch.arange(len(idx))
        tinst += acts[rows, batch.t_inst.cpu()].sum(0)
        if massive_ratio is not None:
            big = acts[massive_mask(acts, batch.attention_mask.cpu(), massive_ratio)]  # [M, d]
            u = big / big.norm(dim=-1, keepdim=True)
            gram += u.T @ u
    return MeanActivations(post / len(prompts), tinst / len(prompts), len(prompts), gram)


@dataclass
class DirectionCandidates:
    refusal: torch.Tensor  # [n_post, n_layers, d_model]: harmful − harmless at post-instruction positions
    harm: torch.Tensor  # [n_layers, d_model]: harmful − harmless at t_inst
    n_harmful: int
    n_harmless: int
    massive: torch.Tensor | None = None  # [k, d_model]: the directions projected out of refusal and harm

    @property
    def positions(self) -> list[int]:
        """Negative position offsets of the candidates (−n_post .. −1)."""
        return list(range(-self.refusal.shape[0], 0))

    def get(self, pos: int, layer: int) -> torch.Tensor:
        return self.refusal[pos + self.refusal.shape[0], layer]

    def save(self, path: Path) -> None:
        massive = self.massive if self.massive is not None else torch.zeros(0, self.refusal.shape[-1])
        save_tensors_atomic(path, {"refusal": self.refusal, "harm": self.harm,
                                   "counts": torch.tensor([self.n_harmful, self.n_harmless]),
                                   "massive": massive.to(self.refusal.dtype)})

    @classmethod
    def load(cls, path: Path) -> DirectionCandidates:
        t = load_file(str(path))
        return cls(t["refusal"], t["harm"], int(t["counts"][0]), int(t["counts"][1]), t.get("massive"))


def compute_candidates(handle: ModelHandle, harmful: Sequence[str], harmless: Sequence[str],
                       batch_size: int = 32, massive_k: int = 4, massive_ratio: float = 5.0) -> DirectionCandidates:
    """Difference-in-means candidates; with ``massive_k > 0`` the massive-activation directions found in
    these same prompts are projected out of them (see the module docstring)."""
    ratio = massive_ratio if massive_k > 0 else None
    a = mean_activations(handle, harmful, batch_size, "harmful activations", ratio)
    b = mean_activations(handle, harmless, batch_size, "harmless activations", ratio)
    refusal, harm = a.post_inst - b.post_inst, a.t_inst - b.t_inst
    massive = None
    if massive_k > 0:
        massive = top_eigenvectors(a.massive_gram + b.massive_gram, massive_k)
        refusal, harm = project_out(refusal, massive), project_out(harm, massive)
    return DirectionCandidates(refusal, harm, a.n, b.n, massive)
