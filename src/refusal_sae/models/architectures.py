"""Declarative per-family adapters: where each TransformerLens hook point lives in an HF model.

One entry per ``config.model_type``. A new family is one ``register_architecture`` call; nothing
else in the package dispatches on model names.
"""

from __future__ import annotations

from dataclasses import dataclass

from refusal_sae.errors import ConfigError


@dataclass(frozen=True)
class ArchSpec:
    """Module paths (relative to the ``*ForCausalLM`` object) of one decoder family.

    ``attn_out`` / ``mlp_out`` are relative to a decoder layer and name the module whose output is
    what the attention / MLP block adds to the residual stream (after any post-norm).
    """

    layers: str = "model.layers"
    embed: str = "model.embed_tokens"
    lm_head: str = "lm_head"
    attn_out: str = "self_attn"
    mlp_out: str = "mlp"
    attn: str = "self_attn"  # the attention module (it calls transformers' attention interface)
    # Linear maps that write into the residual stream, relative to a layer (for weight orthogonalisation).
    attn_writer: str = "self_attn.o_proj"
    mlp_writer: str = "mlp.down_proj"
    # True when a norm sits between the writer and the residual stream (Gemma-2/3): orthogonalising the
    # writer's weights is then not exactly the same as ablating the direction in the stream.
    post_norms: bool = False


_LLAMA_LIKE = ArchSpec()
_GEMMA2_LIKE = ArchSpec(attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm", post_norms=True)

_REGISTRY: dict[str, ArchSpec] = {}


def register_architecture(model_type: str, spec: ArchSpec) -> None:
    """Register the adapter of an HF ``model_type``; duplicates are refused."""
    if model_type in _REGISTRY:
        raise ValueError(f"architecture {model_type!r} is already registered")
    _REGISTRY[model_type] = spec


def get_architecture(model_type: str) -> ArchSpec:
    try:
        return _REGISTRY[model_type]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"model type {model_type!r} has no hook adapter; supported: {known}") from None


def supported_architectures() -> list[str]:
    return sorted(_REGISTRY)


for _name in ("llama", "mistral", "qwen2", "qwen3", "phi3", "olmo2"):
    register_architecture(_name, _LLAMA_LIKE)
for _name in ("gemma2", "gemma3_text"):
    register_architecture(_name, _GEMMA2_LIKE)
register_architecture("gemma", _LLAMA_LIKE)
