"""``ModelHandle``: a chat model, its tokenizer, chat formatting and TransformerLens-named hooks."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cache

import torch
from torch import nn

from refusal_sae.errors import NumericalError
from refusal_sae.models.architectures import ArchSpec, get_architecture
from refusal_sae.models.formatting import FormattedPrompt, PromptBatch, collate, format_instruction
from refusal_sae.models.hooks import HookFn, StopForward, attach_hooks, hook_name, parse_hook_point


@dataclass
class ModelHandle:
    model: nn.Module
    tokenizer: object
    name: str
    system_prompt: str | None = None
    revision: str | None = None  # exact weights identity where known (embedded: GGUF + adapter hashes)
    adapter: str | None = None  # the LoRA adapter directory merged into the weights, when one was given
    arch: ArchSpec = field(init=False)

    def __post_init__(self) -> None:
        self.arch = get_architecture(self.model.config.model_type)
        self.model.eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    # --- shape facts -------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def inner(self) -> nn.Module:
        """The decoder stack without the LM head (``model.model`` for most HF families)."""
        return self.model.get_submodule(self.arch.layers.rsplit(".", 1)[0])

    @property
    def n_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def d_model(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # --- formatting --------------------------------------------------------------------------
    def format(self, instruction: str) -> FormattedPrompt:
        return format_instruction(self.tokenizer, instruction, self.system_prompt)

    def batch(self, instructions: Sequence[str] | Sequence[FormattedPrompt]) -> PromptBatch:
        prompts = [p if isinstance(p, FormattedPrompt) else self.format(p) for p in instructions]
        return collate(prompts, self.tokenizer.pad_token_id).to(self.device)

    # --- running -----------------------------------------------------------------------------
    def hooks(self, hooks: Iterable[tuple[str, HookFn]]) -> AbstractContextManager[None]:
        """Context manager attaching ``(hook name, fn)`` pairs; see :mod:`refusal_sae.models.hooks`."""
        return attach_hooks(self.model, self.arch, self.n_layers, hooks)

    def forward(self, batch: PromptBatch, **kwargs) -> torch.Tensor:
        """Logits ``[B, T, vocab]`` of a left-padded batch (position ids follow the attention mask)."""
        out = self.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=position_ids_for(batch.attention_mask),
            use_cache=False,
            **kwargs,
        )
        return out.logits

    @torch.no_grad()
    def cache_activations(self, batch: PromptBatch, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """Read activations at hook points; the forward pass stops after the deepest requested layer."""
        points = [parse_hook_point(n, self.n_layers) for n in names]
        deepest = max(p.layer for p in points)
        cache: dict[str, torch.Tensor] = {}

        def reader(name: str) -> HookFn:
            def fn(act: torch.Tensor) -> None:
                if not torch.isfinite(act).all():
                    raise NumericalError(f"non-finite activations at {name}")
                cache[name] = act.detach()

            return fn

        def stopper(act: torch.Tensor) -> None:
            raise StopForward

        hooks = [(p.name, reader(p.name)) for p in points] + [(hook_name(deepest, "resid_post"), stopper)]
        with self.hooks(hooks):
            try:
                self.forward(batch)
            except StopForward:
                pass
        return cache


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token (left padding gets position 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@cache
def _cache_argument(forward) -> str:
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def cache_kwargs(module: nn.Module, kv_cache) -> dict:
    """``kv_cache`` as the keyword argument ``module``'s forward takes a key/value cache by: ``cache`` in the
    transformers releases that deprecate ``past_key_values`` (which warn on every call given the old name), else
    ``past_key_values``."""
    return {_cache_argument(type(module).forward): kv_cache}
