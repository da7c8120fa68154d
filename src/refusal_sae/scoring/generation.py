"""Batched greedy generation with left padding.

Hooks attached to the handle stay active during generation, so an intervention also applies to
the generated tokens (as directional ablation requires).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from refusal_sae.models.formatting import FormattedPrompt, length_sorted_batches
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import HookFn


@torch.no_grad()
def generate(
    handle: ModelHandle,
    prompts: Sequence[str] | Sequence[FormattedPrompt],
    max_new_tokens: int = 64,
    batch_size: int = 32,
    progress: bool = True,
    desc: str = "generating",
    batch_hooks: Callable[[list[int]], list[tuple[str, HookFn]]] | None = None,
) -> list[str]:
    """Greedy completions (decoded, special tokens stripped), in the order of ``prompts``. ``batch_hooks(idx)``:
    extra hooks for the batch of prompts ``idx`` (rows in that order), e.g. each prompt's own intervention."""
    formatted = [p if isinstance(p, FormattedPrompt) else handle.format(p) for p in prompts]
    out: list[str] = [""] * len(formatted)
    batches = length_sorted_batches([len(p) for p in formatted], batch_size)
    tok = handle.tokenizer
    for idx in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
        batch = handle.batch([formatted[i] for i in idx])
        with handle.hooks(batch_hooks(idx) if batch_hooks else []):
            gen = handle.model.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tok.pad_token_id,
            )
        new = gen[:, batch.input_ids.shape[1] :]
        for j, i in enumerate(idx):
            out[i] = tok.decode(new[j], skip_special_tokens=True).strip()
    return out
