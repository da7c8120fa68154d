"""Per-token loss of answers under a reference language model, given their instruction (a fluency signal: word salad
is improbable text; a loop is too probable after its first turn)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from refusal_sae.models.formatting import length_sorted_batches
from refusal_sae.models.handle import ModelHandle


@torch.no_grad()
def answer_token_nll(handle: ModelHandle, instructions: Sequence[str], answers: Sequence[str], batch_size: int = 16,
                     max_answer_tokens: int = 96) -> list[list[float]]:
    """For each pair, the negative log-likelihood (nats) of each answer token after the chat-formatted instruction."""
    tok = handle.tokenizer
    seqs, starts = [], []
    for inst, ans in zip(instructions, answers, strict=True):
        p = handle.format(inst)
        ids = list(p.input_ids)
        starts.append(len(ids))
        seqs.append(ids + tok(ans, add_special_tokens=False)["input_ids"][:max_answer_tokens])
    out: list[list[float]] = [[] for _ in seqs]
    pad = tok.pad_token_id
    for idx in length_sorted_batches([len(s) for s in seqs], batch_size):
        width = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, i in enumerate(idx):
            ids[j, width - len(seqs[i]):] = torch.tensor(seqs[i])
            mask[j, width - len(seqs[i]):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = handle.model(input_ids=ids.to(handle.device), attention_mask=mask.to(handle.device),
                              position_ids=pos.to(handle.device), use_cache=False).logits.float()
        logp = logits[:, :-1].log_softmax(-1)
        nll = -logp.gather(-1, ids[:, 1:, None].to(logp.device))[..., 0].cpu()
        for j, i in enumerate(idx):
            first = width - len(seqs[i]) + starts[i]  # index of the first answer token
            out[i] = nll[j, first - 1 : width - 1].tolist()
    return out
