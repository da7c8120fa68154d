"""SAE codes of prompts read where a feature-set clamp acts, and the kind of each prompt position.

At each SAE layer the stream is encoded once; the codes are recorded *before* that layer's own edit (so they carry
the effect of the clamps at earlier layers, which is how a silent feature can wake up), then the layer's
:class:`~refusal_sae.interventions.FeatureClamp` edits the stream with those same codes (the SAE error term kept, as
in :func:`~refusal_sae.search.featureset.clamp_set`). The forward pass stops after the deepest layer read or
clamped. A clamped feature's effective value downstream is ``c`` × its recorded code (0 for ``c = 0``):
:func:`effective` applies that.

Reading activations is not a causal test, so this runs its own hooked forward instead of the intervention engine
(the engine returns last-position logits and generations, not per-position codes).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from refusal_sae.errors import NumericalError
from refusal_sae.models.formatting import PromptBatch, length_sorted_batches
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import StopForward, hook_name
from refusal_sae.search.featureset import FeatureSet, clamp_set

#: Position kinds of a formatted prompt: its first token (BOS or the first template token), the template tokens
#: before the instruction (system prompt, role header), the instruction, and the post-instruction template tokens.
KINDS = ("first", "template", "instruction", "post_instruction")


def position_kinds(batch: PromptBatch) -> torch.Tensor:
    """``[B, T]`` index into :data:`KINDS` of each position (``-1``: padding). A prompt whose instruction starts at
    its first token counts that token as ``first``."""
    T = batch.input_ids.shape[1]
    out = torch.full((len(batch.prompts), T), -1, dtype=torch.long)
    for b, (p, off) in enumerate(zip(batch.prompts, batch.pad_offsets.tolist(), strict=True)):
        out[b, off + p.inst_start : off + p.inst_end] = 2
        out[b, off + p.inst_end : off + len(p)] = 3
        out[b, off + 1 : off + p.inst_start] = 1
        out[b, off] = 0
    return out


@torch.no_grad()
def iter_codes(handle: ModelHandle, saes: Mapping[int, object], layers: Sequence[int], prompts: Sequence[str],
               clamp: FeatureSet | None = None, c: float = 0.0, batch_size: int = 32, progress: bool = False,
               desc: str = "reading SAE codes") -> Iterator[tuple[list[int], PromptBatch, dict[int, torch.Tensor]]]:
    """Per batch: the prompt indices, the batch, and ``{L: [B, T, d_sae]}`` codes at each of ``layers`` under the
    clamp of ``clamp`` at ``c`` (``None``: unclamped)."""
    layers = list(layers)
    clamps = {}
    if clamp is not None and len(clamp):
        clamps = dict(zip(clamp.by_layer(), clamp_set(saes, clamp, c), strict=True))
    formatted = [handle.format(p) for p in prompts]
    deepest = max([*layers, *clamps])
    batches = length_sorted_batches([len(p) for p in formatted], batch_size)
    for idx in tqdm(batches, desc=desc, unit="batch", disable=not progress):
        batch = handle.batch([formatted[i] for i in idx])
        got: dict[int, torch.Tensor] = {}

        def at(L: int, got: dict = got):
            sae = saes[L]

            def fn(act: torch.Tensor) -> torch.Tensor | None:
                f = sae.encode(act.to(sae.W_dec.dtype))
                if L in layers:
                    if not torch.isfinite(f).all():
                        raise NumericalError(f"non-finite SAE codes at layer {L}")
                    got[L] = f.float().cpu()
                return clamps[L].apply(act, f) if L in clamps else None

            return fn

        def stop(act: torch.Tensor) -> None:
            raise StopForward

        hooks = [(hook_name(L, "resid_post"), at(L)) for L in sorted(set(layers) | set(clamps))]
        with handle.hooks([*hooks, (hook_name(deepest, "resid_post"), stop)]):
            try:
                handle.forward(batch)
            except StopForward:
                pass
        yield list(idx), batch, got


def reduced_codes(handle: ModelHandle, saes: Mapping[int, object], layers: Sequence[int], prompts: Sequence[str],
                  clamp: FeatureSet | None = None, c: float = 0.0, reduce: str = "max", batch_size: int = 32,
                  progress: bool = False, desc: str = "reading SAE codes") -> torch.Tensor:
    """``[P, n_layers, d_sae]``: each feature's code reduced (``max`` / ``mean``) over each prompt's
    post-instruction tokens, under the clamp (recorded before each layer's own edit: see the module docstring)."""
    layers = list(layers)
    d_sae = int(saes[layers[0]].cfg.d_sae)
    out = torch.zeros(len(prompts), len(layers), d_sae)
    for idx, batch, codes in iter_codes(handle, saes, layers, prompts, clamp, c, batch_size, progress, desc):
        post = (position_kinds(batch) == KINDS.index("post_instruction"))[..., None]
        for j, L in enumerate(layers):
            f = codes[L]
            if reduce == "max":
                out[idx, j] = f.masked_fill(~post, 0).amax(1)
            else:
                out[idx, j] = (f * post).sum(1) / post.sum(1).clamp_min(1)
    return out


def effective(codes: torch.Tensor, layers: Sequence[int], clamp: FeatureSet, c: float) -> torch.Tensor:
    """``codes [P, n_layers, d_sae]`` read under ``clamp`` with the clamped features at the value the model carries
    on: ``c`` × code (``c = 0`` zero-ablates)."""
    out = codes.clone()
    for L, f in clamp:
        out[:, list(layers).index(L), f] *= c
    return out
