"""Randomly initialised sae-lens TopK SAEs, for tests and speed benchmarks (where what features mean is irrelevant)."""

from __future__ import annotations

import torch


def random_topk_sae(d_in: int, d_sae: int, k: int, hook: str, std: float, seed: int = 0):
    from refusal_sae.saes.lens import sae_lens_imports

    with sae_lens_imports():
        from sae_lens.saes.sae import SAEMetadata
        from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    torch.manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, metadata=SAEMetadata(hook_name=hook)))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, std)
    return sae
