"""Weight orthogonalisation: bake a directional ablation into the weights (Arditi et al. 2024, §4.1).

Every matrix that writes into the residual stream (token embedding, attention output, MLP output) is
replaced by ``(I − r rᵀ) W``, so the stream never holds ``r``. The result is a plain HF model directory
that reloads with transformers. A tied embedding is untied first, so the unembedding is unchanged.
For families with post-norms (Gemma-2/3) the writer is followed by a norm and the edit is approximate;
:func:`orthogonalize_` refuses them unless ``allow_approximate`` is set.
"""

from __future__ import annotations

from pathlib import Path

import torch

from refusal_sae.errors import ConfigError
from refusal_sae.interventions.directional import check_dim
from refusal_sae.models.handle import ModelHandle
from refusal_sae.ops import unit


@torch.no_grad()
def _project_rows_out(weight: torch.Tensor, r: torch.Tensor, out_dim: int) -> None:
    """In place: remove ``r`` from the output space of ``weight`` (output axis ``out_dim``)."""
    r = r.to(weight.dtype).to(weight.device)
    if out_dim == 0:  # nn.Linear: [d_out, d_in]
        weight -= torch.outer(r, r @ weight)
    else:  # embedding: [vocab, d_model]
        weight -= torch.outer(weight @ r, r)


@torch.no_grad()
def orthogonalize_(handle: ModelHandle, direction: torch.Tensor, allow_approximate: bool = False) -> None:
    """Orthogonalise ``handle.model``'s residual writers against ``direction``, in place."""
    check_dim(handle, direction, "direction")
    if handle.arch.post_norms and not allow_approximate:
        raise ConfigError(f"{handle.config.model_type} normalises block outputs after the writer matrices; weight "
                          "orthogonalisation is then approximate (pass allow_approximate=True to do it anyway)")
    r = unit(direction.double()).float()
    model = handle.model
    embed = model.get_submodule(handle.arch.embed)
    if getattr(model.config, "tie_word_embeddings", False):
        head = model.get_submodule(handle.arch.lm_head)
        head.weight = torch.nn.Parameter(head.weight.detach().clone())
        model.config.tie_word_embeddings = False
        if hasattr(model.config, "get_text_config"):
            model.config.get_text_config().tie_word_embeddings = False
    _project_rows_out(embed.weight, r, out_dim=1)
    for layer in model.get_submodule(handle.arch.layers):
        for path in (handle.arch.attn_writer, handle.arch.mlp_writer):
            lin = layer.get_submodule(path)
            _project_rows_out(lin.weight, r, out_dim=0)
            if getattr(lin, "bias", None) is not None:
                lin.bias -= (lin.bias @ r) * r


def export_model(handle: ModelHandle, out_dir: str | Path) -> Path:
    """Save the (edited) model and tokenizer as an HF directory (safetensors)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    handle.model.save_pretrained(out, safe_serialization=True)
    handle.tokenizer.save_pretrained(out)
    return out
