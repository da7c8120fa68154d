"""Candidate features: the decoder-cosine prefilter, the LA-IG ranking (per prompt and global), and the baselines
of the comparison table (CosSim, ActDiff, AP), all from one attribution pass and one activation pass.

- **prefilter**: at each searched layer, the ``k_per_layer`` features whose decoder rows have the highest cosine
  with the refusal direction (the run's selected direction at every layer, as the reference implementation does, or
  each layer's own difference-in-means vector);
- **ours**: LA-IG attribution restricted to the prefilter; a prompt's set is its top ``K*``, the global set the top
  ``K*`` of the mean over prompts;
- **CosSim**: the global top by decoder cosine over all searched layers, no attribution;
- **ActDiff**: the global top by (harmful − harmless) mean of each feature's per-prompt maximum activation;
- **AP**: attribution over *all* features of the searched layers, no cosine prefilter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from refusal_sae.ops import cosine_to_rows
from refusal_sae.search.featureset import FeatureSet


def decoder_cosines(saes: Mapping[int, object], layers: Sequence[int],
                    directions: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """``[n_layers, d_sae]``: cosine of each decoder row with that layer's direction."""
    return torch.stack([cosine_to_rows(saes[L].W_dec.detach(), directions[L]).cpu() for L in layers])


def ranked(scores: torch.Tensor, layers: Sequence[int], k: int, allowed: torch.Tensor | None = None) -> FeatureSet:
    """The top ``k`` features of ``scores [n_layers, d_sae]`` over all layers (``allowed``: a bool mask)."""
    s = scores.float().clone()
    if allowed is not None:
        s[~allowed] = -torch.inf
    flat = s.flatten()
    k = min(k, int(torch.isfinite(flat).sum()))
    top = flat.topk(k).indices
    d_sae = scores.shape[1]
    return FeatureSet(tuple((layers[int(i) // d_sae], int(i) % d_sae) for i in top))


def prefilter_mask(cosines: torch.Tensor, k_per_layer: int) -> torch.Tensor:
    """``[n_layers, d_sae]`` bool: each layer's ``k_per_layer`` highest cosines."""
    mask = torch.zeros_like(cosines, dtype=torch.bool)
    mask.scatter_(1, cosines.topk(k_per_layer, dim=1).indices, True)
    return mask


def prefilter_set(cosines: torch.Tensor, layers: Sequence[int], k_per_layer: int) -> FeatureSet:
    """The prefilter itself as a set, ordered layer by layer (each layer's highest cosine first)."""
    return FeatureSet(tuple((layers[i], int(f)) for i in range(len(layers))
                            for f in cosines[i].topk(k_per_layer).indices))


def per_prompt_sets(attribution: torch.Tensor, layers: Sequence[int], k: int,
                    allowed: torch.Tensor | None = None) -> list[FeatureSet]:
    """Each prompt's top ``k`` of its own attributions ``[n_prompts, n_layers, d_sae]``."""
    return [ranked(a, layers, k, allowed) for a in attribution]


def act_diff(harmful_max: torch.Tensor, harmless_max: torch.Tensor) -> torch.Tensor:
    """``[n_layers, d_sae]``: mean over prompts of each feature's per-prompt maximum, harmful − harmless."""
    return harmful_max.mean(0) - harmless_max.mean(0)
