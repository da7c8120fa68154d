"""Reference computations shared by unit and integration tests."""

import torch

from refusal_sae.models.handle import position_ids_for


def ablate(direction):
    def fn(act):
        return act - (act @ direction).unsqueeze(-1) * direction

    return fn


def reference_logits_with_ablation(handle, batch, direction):
    """Independent computation: run the decoder layers one by one (no hooks), projecting the direction out
    of the residual stream before every layer and after the last."""
    model = handle.model
    inner = model.model
    ids, mask = batch.input_ids, batch.attention_mask
    pos = position_ids_for(mask)
    h = inner.embed_tokens(ids)
    T = ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    allowed = causal[None, None] & mask[:, None, None, :].bool()
    additive = torch.zeros(allowed.shape, dtype=h.dtype).masked_fill(~allowed, torch.finfo(h.dtype).min)
    pe = inner.rotary_emb(h, pos)
    proj = ablate(direction)
    for layer in inner.layers:
        h = proj(h)
        h = layer(h, attention_mask=additive, position_embeddings=pe, position_ids=pos)
        h = h[0] if isinstance(h, tuple) else h
    h = proj(h)
    logits = model.lm_head(inner.norm(h))
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
