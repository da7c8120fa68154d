"""TransformerLens-named hook points on HF decoder models.

``blocks.{L}.hook_resid_pre``  — residual stream entering decoder layer L
``blocks.{L}.hook_resid_post`` — residual stream leaving decoder layer L
``blocks.{L}.hook_attn_out``   — what the attention block adds to the stream
``blocks.{L}.hook_mlp_out``    — what the MLP block adds to the stream

A hook function receives the activation ``[batch, pos, d_model]`` and returns a replacement
tensor, or ``None`` to leave it unchanged. Hooks live only inside the :func:`attach_hooks`
context manager, which removes them in ``finally`` (pattern of andyrdt/refusal_direction's
``add_hooks``; we use plain torch hooks rather than TransformerLens because SmolLM2 and many
chat models are not TransformerLens models, and sae-lens only needs the hook *names* to match).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from refusal_sae.errors import ConfigError
from refusal_sae.models.architectures import ArchSpec

HookFn = Callable[[torch.Tensor], "torch.Tensor | None"]

HOOK_KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_out")
_HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_post|attn_out|mlp_out)$")


@dataclass(frozen=True, order=True)
class HookPoint:
    layer: int
    kind: str

    @property
    def name(self) -> str:
        return f"blocks.{self.layer}.hook_{self.kind}"

    def __str__(self) -> str:
        return self.name


def hook_name(layer: int, kind: str = "resid_post") -> str:
    if kind not in HOOK_KINDS:
        raise ConfigError(f"unknown hook kind {kind!r}; expected one of {HOOK_KINDS}")
    return f"blocks.{layer}.hook_{kind}"


def parse_hook_point(name: str | HookPoint, n_layers: int) -> HookPoint:
    """Parse and validate a hook name against a model with ``n_layers`` layers."""
    if isinstance(name, HookPoint):
        point = name
    else:
        m = _HOOK_RE.match(name)
        if not m:
            raise ConfigError(
                f"unknown hook point {name!r}; expected 'blocks.<layer>.hook_<kind>' with kind in {HOOK_KINDS}"
            )
        point = HookPoint(int(m.group(1)), m.group(2))
    if not 0 <= point.layer < n_layers:
        raise ConfigError(f"hook point {point.name!r}: layer {point.layer} out of range, model has {n_layers} layers")
    return point


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


def _replace_output(output, new: torch.Tensor):
    if isinstance(output, tuple):
        return (new, *output[1:])
    return new


def _first_tensor(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _pre_hook(fn: HookFn):
    def hook(module, args, kwargs):
        if args:
            new = fn(args[0])
            if new is not None:
                return (new, *args[1:]), kwargs
        else:
            new = fn(kwargs["hidden_states"])
            if new is not None:
                return args, {**kwargs, "hidden_states": new}
        return None

    return hook


def _post_hook(fn: HookFn):
    def hook(module, args, output):
        new = fn(_first_tensor(output))
        if new is not None:
            return _replace_output(output, new)
        return None

    return hook


def module_for(model: nn.Module, arch: ArchSpec, point: HookPoint) -> nn.Module:
    layer = model.get_submodule(arch.layers)[point.layer]
    if point.kind in ("resid_pre", "resid_post"):
        return layer
    return layer.get_submodule(arch.attn_out if point.kind == "attn_out" else arch.mlp_out)


@contextmanager
def attach_hooks(
    model: nn.Module, arch: ArchSpec, n_layers: int, hooks: Iterable[tuple[str | HookPoint, HookFn]]
) -> Iterator[None]:
    """Attach ``(hook point, fn)`` pairs for the duration of the ``with`` block.

    Several functions on the same point run in the order given.
    """
    handles = []
    try:
        for name, fn in hooks:
            point = parse_hook_point(name, n_layers)
            module = module_for(model, arch, point)
            if point.kind == "resid_pre":
                handles.append(module.register_forward_pre_hook(_pre_hook(fn), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(_post_hook(fn)))
        yield
    finally:
        for h in handles:
            h.remove()


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early, once every wanted activation is cached."""
