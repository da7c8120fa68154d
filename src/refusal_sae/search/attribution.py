"""LA-IG attribution of SAE features to refusal (Yeo et al., as in the reference ``linear_attribution``).

For a batch of prompts:

1. the *patched* run ablates the refusal direction at every layer and records, at each SAE layer, the codes ``f'``
   and the error term ``e' = x' − decode(f')`` of the ablated stream;
2. the clean run records the clean codes ``f``;
3. ``steps`` interpolated runs: at every SAE layer the stream is re-encoded, ``f_α = (1 − α) f_now + α f'`` and
   ``e_α = (1 − α) e_now + α e'``, and replaced by ``decode(f_α) + e_α`` (so at ``α = 0`` the model is unchanged, at
   ``α = 1`` every SAE layer holds its patched state); the gradient of the metric with respect to each ``f_α`` is
   read, and averaged over the steps (midpoints ``α = (s + ½) / steps``; the reference uses left endpoints);
4. attribution = ``(f' − f) × mean gradient``, averaged over each prompt's content positions (padding and the
   first token excluded).

The metric is the *negative* refusal score at the last prompt position (the log-odds of the refusal tokens), so a
positive attribution means: this feature's change under the ablation pushes the model towards compliance. The
engine runs without gradients, so this builds on the model handle's hooks; the SAE encode/decode is sae-lens'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from refusal_sae.errors import NumericalError
from refusal_sae.interventions.directional import DirectionAblation
from refusal_sae.models.formatting import PromptBatch, length_sorted_batches
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import hook_name
from refusal_sae.scoring.refusal_score import refusal_score_from_logits
from refusal_sae.search.activations import content_mask


@contextmanager
def frozen(*modules: torch.nn.Module):
    """No parameter of ``modules`` requires grad inside the block (gradients flow to activations only, which halves
    the backward pass); the flags are restored after."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def _split(sae, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = act.to(sae.W_dec.dtype)
    f = sae.encode(x)
    return f, x - sae.decode(f)


def ig_batch(handle: ModelHandle, saes: Mapping[int, object], layers: Sequence[int], batch: PromptBatch,
             patch_hooks: Sequence, refusal_tokens: Sequence[int], steps: int
             ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Per-position attributions of one batch: features ``{L: [B, T, d_sae]}`` and error terms ``{L: [B, T]}``
    (``Δe · grad``), between the clean run and the run under ``patch_hooks``. Over all positions, features and error
    terms, they sum to about the metric's change when every SAE layer holds its patched state (IG completeness,
    exact as ``steps`` grows when one layer is attributed)."""
    names = {L: hook_name(L, "resid_post") for L in layers}
    with torch.no_grad():
        with handle.hooks(patch_hooks):
            patched = handle.cache_activations(batch, list(names.values()))
        clean = handle.cache_activations(batch, list(names.values()))
        f_patch, e_patch, d_f, d_e = {}, {}, {}, {}
        for L in layers:
            f_patch[L], e_patch[L] = _split(saes[L], patched[names[L]])
            f_clean, e_clean = _split(saes[L], clean[names[L]])
            d_f[L], d_e[L] = f_patch[L] - f_clean, e_patch[L] - e_clean
    g_f = {L: torch.zeros_like(d_f[L]) for L in layers}
    g_e = {L: torch.zeros_like(d_e[L]) for L in layers}
    for s in range(steps):
        alpha = (s + 0.5) / steps
        live: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def interpolate(L: int, alpha: float = alpha, live: dict = live):
            def fn(act: torch.Tensor) -> torch.Tensor:
                sae = saes[L]
                f_now, e_now = _split(sae, act)
                f_a = (1 - alpha) * f_now + alpha * f_patch[L]
                e_a = (1 - alpha) * e_now + alpha * e_patch[L]
                for v in (f_a, e_a):
                    if v.requires_grad:  # downstream of an earlier SAE layer: keep the graph, read the gradient
                        v.retain_grad()
                    else:  # the earliest SAE layer: nothing upstream matters, leaves start the graph
                        v.requires_grad_(True)
                live[L] = (f_a, e_a)
                return (sae.decode(f_a) + e_a).to(act.dtype)

            return fn

        with torch.enable_grad(), frozen(handle.model, *(saes[L] for L in layers)), \
                handle.hooks([(names[L], interpolate(L)) for L in layers]):
            logits = handle.forward(batch)[:, -1]
            metric = -refusal_score_from_logits(logits, refusal_tokens).sum()
            metric.backward()
        for L in layers:
            g_f[L] += live[L][0].grad.detach()
            g_e[L] += live[L][1].grad.detach()
    feat = {L: d_f[L] * g_f[L] / steps for L in layers}
    err = {L: (d_e[L] * g_e[L]).sum(-1) / steps for L in layers}
    return feat, err


def la_ig(handle: ModelHandle, saes: Mapping[int, object], layers: Sequence[int], direction: torch.Tensor,
          prompts: Sequence[str], refusal_tokens: Sequence[int], steps: int = 10, batch_size: int = 16,
          progress: bool = True) -> torch.Tensor:
    """``[n_prompts, n_layers, d_sae]`` attributions of every feature of the SAEs at ``layers``, averaged over each
    prompt's content positions (see the module docstring)."""
    layers = list(layers)
    formatted = [handle.format(p) for p in prompts]
    d_sae = int(saes[layers[0]].cfg.d_sae)
    out = torch.zeros(len(prompts), len(layers), d_sae)
    ablation = DirectionAblation(direction.float()).hooks(handle)
    for idx in tqdm(length_sorted_batches([len(p) for p in formatted], batch_size), desc="LA-IG attribution",
                    unit="batch", disable=not progress):
        batch = handle.batch([formatted[i] for i in idx])
        keep = content_mask(batch)[..., None].float()
        feat, _ = ig_batch(handle, saes, layers, batch, ablation, refusal_tokens, steps)
        for j, L in enumerate(layers):
            out[idx, j] = ((feat[L] * keep).sum(1) / keep.sum(1)).float().cpu()
    if not torch.isfinite(out).all():
        raise NumericalError("non-finite attributions (NaN activations or gradients)")
    return out
