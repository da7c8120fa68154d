"""Attention of many intervention sets' suffix queries over one shared, unrepeated prefix.

When every intervention touches only the last ``k`` prompt positions, the keys and values of the earlier
positions are the same for every set. The plain way to let ``n`` stacked sets attend to them is to repeat the
prefix cache ``n`` times (``batch_repeat_interleave``), let the cache concatenate each layer's new keys onto
that copy, and let the attention expand grouped key/value heads (``repeat_kv``): three copies of the prefix per
set and layer, measured at ~27% of the engine's time on the embedded model. Here each prompt's prefix keys and
values stay as computed once, ``[B, kv_heads, T_prefix, d_head]``; the queries of all ``n`` sets and of every
query head in a key/value group are laid side by side and multiply the prefix in one matmul; the few suffix
keys are handled per row; the two parts share one softmax (a common max and denominator).

Transformers offers no such kernel (its cache and attention functions assume one key/value sequence per row),
so this is registered through its public ``AttentionInterface`` and switched on only inside
:func:`shared_prefix_attention`; a model with no mask function for the name gets no 4-D mask built, which is
what this function wants (it builds its own: the prefix's padding and causal order within the suffix).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

NAME = "refusal_sae_shared_prefix"
_ATTR = "_refusal_sae_shared_prefix"


def shared_prefix_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                    attention_mask, scaling: float | None = None, dropout: float = 0.0,
                                    softcap: float | None = None, sliding_window: int | None = None, **kwargs):
    """``query`` ``[B*n, H, k, d]`` (prompt-major rows ``b * n + s``), ``key``/``value`` ``[B*n, H_kv, k, d]``
    (the suffix only); the prefix ``[B, H_kv, T_p, d]`` and its padding mask ``[B, T_p]`` hang on the module.
    Returns ``[B*n, k, H, d]`` as transformers' attention functions do."""
    kp, vp, keep, n = getattr(module, _ATTR)
    R, H, k, d = query.shape
    B, H_kv, T_p = kp.shape[0], kp.shape[1], kp.shape[2]
    if sliding_window is not None and T_p + k > sliding_window:
        raise ValueError("shared-prefix attention got a sequence longer than the sliding window")
    g = H // H_kv
    scaling = d**-0.5 if scaling is None else scaling
    # queries as [B, H_kv, n, g*k, d]: every set and every head of a group against the same prefix keys
    q = query.reshape(B, n, H_kv, g * k, d).transpose(1, 2)
    s_p = torch.matmul(q.reshape(B, H_kv, n * g * k, d), kp.transpose(-1, -2)).float() * scaling
    ks = key.reshape(B, n, H_kv, k, d).transpose(1, 2)  # [B, H_kv, n, k, d]
    vs = value.reshape(B, n, H_kv, k, d).transpose(1, 2)
    s_s = torch.matmul(q, ks.transpose(-1, -2)).float() * scaling  # [B, H_kv, n, g*k, k]
    if softcap is not None:
        s_p = torch.tanh(s_p / softcap) * softcap
        s_s = torch.tanh(s_s / softcap) * softcap
    s_p = s_p.masked_fill(~keep[:, None, None, :], float("-inf")).view(B, H_kv, n, g * k, T_p)
    causal = torch.ones(k, k, dtype=torch.bool, device=query.device).tril()
    s_s = s_s.masked_fill(~causal.repeat(g, 1), float("-inf"))  # row g_i*k + i sees suffix keys ≤ i
    m = torch.maximum(s_p.amax(-1, keepdim=True), s_s.amax(-1, keepdim=True))  # finite: each query sees itself
    e_p, e_s = (s_p - m).exp(), (s_s - m).exp()
    denom = e_p.sum(-1, keepdim=True) + e_s.sum(-1, keepdim=True)
    dt = query.dtype
    out = torch.matmul(e_p.to(dt).view(B, H_kv, n * g * k, T_p), vp).view(B, H_kv, n, g * k, d)
    out = (out + torch.matmul(e_s.to(dt), vs)) / denom.to(dt)
    # [B, H_kv, n, g, k, d] -> [B, n, k, H_kv, g, d] = [B*n, k, H, d]
    out = out.view(B, H_kv, n, g, k, d).permute(0, 2, 4, 1, 3, 5).reshape(R, k, H, d)
    return out, None


@contextmanager
def shared_prefix_attention(attn_modules: dict[int, nn.Module], cache, keep: torch.Tensor, n: int, config):
    """Inside the block, the attention of layer ``i`` (module ``attn_modules[i]``) attends ``n`` stacked sets to
    the unrepeated prefix keys/values of ``cache.layers[i]``; ``keep`` ``[B, T_p]`` marks real prefix tokens.
    The model must run without a cache (``use_cache=False``) and with explicit ``position_ids``."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, shared_prefix_attention_forward)  # idempotent: one entry in its table
    old = config._attn_implementation
    keep = keep.bool()
    try:
        for i, mod in attn_modules.items():
            layer = cache.layers[i]
            setattr(mod, _ATTR, (layer.keys, layer.values, keep, n))
        config._attn_implementation = NAME
        yield
    finally:
        config._attn_implementation = old
        for mod in attn_modules.values():
            if hasattr(mod, _ATTR):
                delattr(mod, _ATTR)
