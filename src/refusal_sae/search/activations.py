"""SAE codes of prompts at several layers in one forward pass per batch: per-prompt maxima, and which features fire.

Positions read: every real token after the first. Padding is excluded, and so is the first token (BOS or the
first template token), whose residual norm is 10–150× the median on small chat models and whose codes say
nothing about the prompt (the reference implementation skips BOS for the same reason).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from refusal_sae.errors import NumericalError
from refusal_sae.models.formatting import PromptBatch, length_sorted_batches
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import hook_name


def content_mask(batch: PromptBatch) -> torch.Tensor:
    """``[B, T]`` bool: real tokens after each prompt's first one."""
    mask = batch.attention_mask.bool().clone()
    mask[torch.arange(len(batch)), batch.pad_offsets] = False
    return mask


@dataclass
class PromptCodes:
    layers: list[int]
    max_codes: torch.Tensor  # [P, n_layers, d_sae]: each feature's maximum over the prompt's content positions

    def fired(self) -> dict[int, torch.Tensor]:
        """Layer → ids of the features that fire on at least one prompt."""
        on = (self.max_codes > 0).any(0)
        return {L: on[i].nonzero().flatten() for i, L in enumerate(self.layers)}


@torch.no_grad()
def prompt_codes(handle: ModelHandle, saes: Mapping[int, object], layers: Sequence[int], prompts: Sequence[str],
                 batch_size: int = 32, hooks: Sequence = ()) -> PromptCodes:
    """Per-prompt maximum SAE codes at ``layers`` (``saes``: layer → SAE on ``resid_post``), optionally under
    extra ``hooks`` (e.g. an intervention)."""
    layers = list(layers)
    formatted = [handle.format(p) for p in prompts]
    d_sae = int(saes[layers[0]].cfg.d_sae)
    out = torch.zeros(len(prompts), len(layers), d_sae)
    names = {L: hook_name(L, "resid_post") for L in layers}
    for idx in length_sorted_batches([len(p) for p in formatted], batch_size):
        batch = handle.batch([formatted[i] for i in idx])
        keep = content_mask(batch)[..., None]
        with handle.hooks(hooks):
            acts = handle.cache_activations(batch, list(names.values()))  # stops after the deepest layer
        for j, L in enumerate(layers):
            sae = saes[L]
            codes = sae.encode(acts[names[L]].to(sae.W_dec.dtype))
            if not torch.isfinite(codes).all():
                raise NumericalError(f"non-finite SAE codes at layer {L}")
            out[idx, j] = codes.masked_fill(~keep, 0).amax(1).float().cpu()
    return PromptCodes(layers, out)
