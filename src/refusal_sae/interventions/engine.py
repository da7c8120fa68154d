"""One engine for every causal test: refusal scores (or last-position logits) of many intervention sets.

What it saves compared with one hooked forward per set:
- **layer prefix**: layers before the earliest hooked layer run once per prompt batch; every set starts from
  that cached residual stream (the model runs with its layer list truncated and ``inputs_embeds`` = cache);
- **position prefix**: when every intervention only touches the last ``k`` prompt positions (post-instruction
  tokens), the clean keys/values of all earlier positions are computed once and each set recomputes only the
  last ``k`` positions, attending to that prefix unrepeated (:mod:`.shared_prefix`);
- **shared entry**: when the earliest hooks are ``resid_post`` hooks, that layer runs once too; the entry hooks
  are applied to the shared stream, and SAE interventions on the same SAE share one encode across all sets;
- **many sets per forward**: sets are stacked along the batch (prompt-major rows ``b * S + s``);
- **last-position logits only** (``logits_to_keep=1``);
- **memory-bounded** chunks of sets, sized from a configurable budget.

Exactness against the naive loop is tested for Llama and Gemma-2 families.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from refusal_sae.interventions.base import Intervention, InterventionSet, SaeIntervention, suffix_length
from refusal_sae.interventions.shared_prefix import shared_prefix_attention
from refusal_sae.models.formatting import FormattedPrompt, PromptBatch, length_sorted_batches
from refusal_sae.models.handle import ModelHandle, cache_kwargs, position_ids_for
from refusal_sae.models.hooks import HookFn, StopForward, hook_name, parse_hook_point
from refusal_sae.scoring.generation import generate
from refusal_sae.scoring.refusal_score import refusal_score_from_logits


@dataclass
class EngineConfig:
    prompt_batch_size: int = 64
    memory_budget_mb: float = 2048.0  # transient activations of one stacked forward
    max_sets_per_forward: int = 64
    # attend stacked sets to one unrepeated key/value prefix (False: repeat the prefix cache per set, as
    # transformers' own cache would; kept for comparison and for models whose sliding window is too short)
    shared_prefix_attention: bool = True


@dataclass
class AnswerLosses:
    """:meth:`InterventionEngine.answer_losses`: sums over each answer's tokens."""

    nll_clean: torch.Tensor  # [P] next-token NLL of each answer, no intervention
    nll: torch.Tensor  # [S, P] … under each set
    kl: torch.Tensor  # [S, P] KL(clean ‖ set)
    tokens: torch.Tensor  # [P] answer tokens


@contextmanager
def layers_from(handle: ModelHandle, start: int):
    """Temporarily make the model start at decoder layer ``start`` (feed it ``inputs_embeds``)."""
    inner = handle.inner
    attr = handle.arch.layers.rsplit(".", 1)[1]
    full = getattr(inner, attr)
    cfg = handle.model.config
    layer_types = getattr(cfg, "layer_types", None)
    try:
        setattr(inner, attr, nn.ModuleList(list(full)[start:]))
        if layer_types is not None:
            cfg.layer_types = list(layer_types)[start:]
        yield inner
    finally:
        setattr(inner, attr, full)
        if layer_types is not None:
            cfg.layer_types = layer_types


def repeated_cache(cache, n: int, start: int):
    """A copy of a transformers ``Cache`` whose layers from ``start`` on hold each row repeated ``n`` times
    (prompt-major, as ``batch_repeat_interleave``); earlier layers, which a pass started at ``start`` never reads,
    are shared with ``cache`` unrepeated (``start = n_layers``: a cheap copy that a pass may append to).
    Hand-written because ``copy.deepcopy`` + ``batch_repeat_interleave``
    copies and repeats every layer: measured 6.9 s per 29-set chunk on the embedded model, most of the engine's time.
    The original is never modified (a layer's ``update`` rebinds its tensors, it does not write into them)."""
    new = copy.copy(cache)
    new.layers = []
    for i, layer in enumerate(cache.layers):
        layer = copy.copy(layer)
        if i >= start and getattr(layer, "keys", None) is not None:
            layer.keys = layer.keys.repeat_interleave(n, dim=0)
            layer.values = layer.values.repeat_interleave(n, dim=0)
        new.layers.append(layer)
    return new


# One set's hooks, built once per engine call: (intervention, hook point, function), in application order.
SetHooks = list[tuple[Intervention, str, HookFn]]


def _set_hooks(handle: ModelHandle, sets: Sequence[InterventionSet]) -> list[SetHooks]:
    """Each set's hooks, validated once (every later step reads these instead of calling ``hooks`` again)."""
    return [[(iv, name, fn) for iv in s for name, fn in iv.hooks(handle)] for s in sets]


def _first_layer(handle: ModelHandle, hooked: Sequence[SetHooks]) -> int:
    """Earliest layer any intervention hooks (``n_layers`` when none do): everything before it is shared."""
    return min((parse_hook_point(name, handle.n_layers).layer for s in hooked for _, name, _ in s),
               default=handle.n_layers)


def _routed_hooks(hooked: Sequence[SetHooks], rows: Callable[[int], slice], skip: str | None = None
                  ) -> list[tuple[str, HookFn]]:
    """One hook per point (except ``skip``, applied at the entry) applying each set's functions to the batch rows
    ``rows(s)`` of set ``s``: strided for stacked sets (prompt-major layout), one row each for per-prompt sets."""
    per_point: dict[str, list[tuple[int, HookFn]]] = {}
    for s, set_hooks in enumerate(hooked):
        for _, name, fn in set_hooks:
            if name != skip:
                per_point.setdefault(name, []).append((s, fn))

    def make(entries: list[tuple[int, HookFn]]) -> HookFn:
        def fn(act: torch.Tensor) -> torch.Tensor:
            out = act.clone()
            for s, f in entries:
                new = f(out[rows(s)])
                if new is not None:
                    out[rows(s)] = new
            return out

        return fn

    return [(name, make(entries)) for name, entries in per_point.items()]


def _row_hooks(hooked: Sequence[SetHooks]) -> list[tuple[str, HookFn]]:
    return _routed_hooks(hooked, lambda b: slice(b, b + 1))


def row_routed_hooks(handle: ModelHandle, per_row: Sequence[InterventionSet]) -> list[tuple[str, HookFn]]:
    """One hook per hook point applying ``per_row[b]`` to row ``b`` of the batch only (e.g. each prompt's own
    features and positions), for any forward pass; generation with per-prompt sets is routed the same way
    (:meth:`InterventionEngine.generate_per_prompt`)."""
    return _row_hooks(_set_hooks(handle, per_row))


def _stacked_hooks(hooked: Sequence[SetHooks], skip: str) -> list[tuple[str, HookFn]]:
    n = len(hooked)
    return _routed_hooks(hooked, lambda s: slice(s, None, n), skip)


def _entry_point(handle: ModelHandle, hooked: Sequence[SetHooks], start: int) -> tuple[str, int]:
    """Hook point where the stacked pass begins and the layer it enters: after layer ``start`` when all hooks at
    that layer are its ``resid_post`` (so the layer itself is shared), else at its ``resid_pre``."""
    L = handle.n_layers
    at_start = {name for s in hooked for _, name, _ in s if parse_hook_point(name, L).layer == start}
    post = hook_name(start, "resid_post")
    if at_start == {post} and start + 1 < L:
        return post, start + 1
    return hook_name(start, "resid_pre"), start


def _enter(base: torch.Tensor, hooked: Sequence[SetHooks], entry: str) -> torch.Tensor:
    """Rows ``b * n + s``: the shared stream ``base`` ``[B, T, d]`` after set ``s``'s hooks at ``entry``.
    An SAE intervention that sees the unedited stream reuses the codes of any earlier one with the same
    ``codes_key`` (same SAE and positions), so an SAE encodes each prompt once instead of once per set."""
    n = len(hooked)
    x = base.repeat_interleave(n, dim=0)
    codes: dict[tuple, torch.Tensor] = {}
    for s, set_hooks in enumerate(hooked):
        cur = None
        for iv, name, fn in set_hooks:
            if name != entry:
                continue
            if cur is None and isinstance(iv, SaeIntervention):
                key = iv.codes_key()
                if key not in codes:
                    codes[key] = iv.encode(base)
                new = iv.apply(base, codes[key])
            else:
                new = fn(base if cur is None else cur)
            if new is not None:
                cur = new
        if cur is not None:
            x[s::n] = cur
    return x


class InterventionEngine:
    def __init__(self, handle: ModelHandle, cfg: EngineConfig | None = None):
        self.handle = handle
        self.cfg = cfg or EngineConfig()

    # --- memory ------------------------------------------------------------------------------
    def sets_per_forward(self, n_prompts: int, seq_len: int, cache_len: int = 0, cached_layers: int = 0) -> int:
        """Sets per stacked forward within the memory budget. ``seq_len`` positions run per row; each row also
        holds ``cache_len`` cached positions of keys/values in ``cached_layers`` layers (repeated per set, and
        copied once more when the forward appends the new positions)."""
        c = self.handle.config
        d, d_mlp = c.hidden_size, getattr(c, "intermediate_size", 4 * c.hidden_size)
        heads = c.num_attention_heads
        kv_dim = getattr(c, "num_key_value_heads", None) or heads
        kv_dim *= getattr(c, "head_dim", None) or d // heads
        ctx = seq_len + cache_len
        per_row = 4 * seq_len * (8 * d + 3 * d_mlp + heads * ctx) + 4 * c.vocab_size  # bytes, fp32 transients
        per_row += 2 * 2 * 4 * cached_layers * ctx * kv_dim  # keys + values, repeated copy + appended copy
        rows = int(self.cfg.memory_budget_mb * 2**20 // per_row)
        return max(1, min(self.cfg.max_sets_per_forward, rows // max(1, n_prompts)))

    # --- core --------------------------------------------------------------------------------
    @torch.no_grad()
    def last_logits(self, prompts: Sequence[str] | Sequence[FormattedPrompt], sets: Sequence[InterventionSet],
                    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """``[n_sets, n_prompts, ...]``: last-position logits of each prompt under each set, passed through
        ``reduce`` (e.g. a refusal score) to keep memory small."""
        h = self.handle
        formatted = [p if isinstance(p, FormattedPrompt) else h.format(p) for p in prompts]
        reduce = reduce or (lambda x: x)
        results: list[torch.Tensor | None] = [None] * len(formatted)
        hooked = _set_hooks(h, sets)
        start = _first_layer(h, hooked)
        k = suffix_length(sets)
        for idx in length_sorted_batches([len(p) for p in formatted], self.cfg.prompt_batch_size):
            batch = h.batch([formatted[i] for i in idx])
            out = self._run_batch(batch, hooked, start, k)  # [B, S, ...]
            red = reduce(out)
            for j, i in enumerate(idx):
                results[i] = red[j]
        return torch.stack(results, dim=1)  # type: ignore[arg-type]

    def score(self, prompts, sets: Sequence[InterventionSet], refusal_tokens: Sequence[int]) -> torch.Tensor:
        """Refusal scores ``[n_sets, n_prompts]``."""
        return self.last_logits(prompts, sets, reduce=lambda lg: refusal_score_from_logits(lg, refusal_tokens))

    @torch.no_grad()
    def answer_kl(self, prompts: Sequence[str], answers: Sequence[str], sets: Sequence[InterventionSet]) -> torch.Tensor:
        """``[n_sets]``: KL(clean ‖ set) of the next-token distributions, averaged over the answer tokens of each
        prompt followed by its answer (e.g. the clean model's own greedy answers to harmless prompts): how much an
        intervention moves ordinary behaviour, its capability cost."""
        losses = self.answer_losses(prompts, answers, sets)
        return losses.kl.sum(1) / max(float(losses.tokens.sum()), 1.0)

    @torch.no_grad()
    def answer_losses(self, prompts: Sequence[str], answers: Sequence[str], sets: Sequence[InterventionSet]
                      ) -> AnswerLosses:
        """Per prompt (and set): the next-token NLL and KL(clean ‖ set) summed over the answer tokens of the prompt
        followed by its answer (teacher forcing). Per-prompt sums, not pooled means, so that callers can bootstrap
        over prompts or mix sets prompt by prompt (e.g. a conditional intervention)."""
        h = self.handle
        seqs, starts = [], []
        for p, a in zip(prompts, answers, strict=True):
            f = h.format(p)
            ids = tuple(f.input_ids) + tuple(h.tokenizer(a, add_special_tokens=False)["input_ids"])
            seqs.append(FormattedPrompt(p, ids, f.inst_start, f.inst_end))
            starts.append(len(f))
        P, S = len(seqs), len(sets)
        nll_clean = torch.zeros(P, dtype=torch.float64)
        nll, kl = torch.zeros(S, P, dtype=torch.float64), torch.zeros(S, P, dtype=torch.float64)
        tokens = torch.tensor([len(s) - st for s, st in zip(seqs, starts, strict=True)], dtype=torch.float64)
        hooked = _set_hooks(h, sets)
        for idx in length_sorted_batches([len(s) for s in seqs], self.cfg.prompt_batch_size):
            batch = h.batch([seqs[i] for i in idx])
            T = batch.input_ids.shape[1]
            keep = torch.zeros(len(idx), T - 1, dtype=torch.bool)
            for j, i in enumerate(idx):  # logits at t predict token t + 1: answer tokens from starts[i] on
                keep[j, T - len(seqs[i]) + starts[i] - 1 :] = True
            keep = keep.to(h.device)
            target = batch.input_ids[:, 1:][keep][:, None]
            rows = torch.arange(len(idx), device=h.device)[:, None].expand(-1, T - 1)[keep].cpu()

            def per_prompt(values: torch.Tensor, rows: torch.Tensor = rows, n: int = len(idx)) -> torch.Tensor:
                return torch.zeros(n, dtype=torch.float64).index_add_(0, rows, values.double().cpu())

            clean = h.forward(batch)[:, :-1][keep].double().log_softmax(-1)
            nll_clean[idx] = per_prompt(-clean.gather(1, target)[:, 0])
            for s, set_hooks in enumerate(hooked):
                with h.hooks([(name, fn) for _, name, fn in set_hooks]):
                    edited = h.forward(batch)[:, :-1][keep].double().log_softmax(-1)
                nll[s, idx] = per_prompt(-edited.gather(1, target)[:, 0])
                kl[s, idx] = per_prompt((clean.exp() * (clean - edited)).sum(-1))
        return AnswerLosses(nll_clean, nll, kl, tokens)

    # --- generation ----------------------------------------------------------------------------
    def generate(self, prompts, sets: Sequence[InterventionSet], max_new_tokens: int = 64, batch_size: int = 32,
                 progress: bool = False, desc: str = "generating") -> list[list[str]]:
        """``[n_sets][n_prompts]`` greedy completions, each set's hooks active on the generated tokens too."""
        h = self.handle
        hooked = _set_hooks(h, sets)
        out = []
        for s, set_hooks in enumerate(hooked):
            with h.hooks([(name, fn) for _, name, fn in set_hooks]):
                out.append(generate(h, prompts, max_new_tokens, batch_size, progress, f"{desc} ({s + 1}/{len(sets)})"))
        return out

    def generate_per_prompt(self, prompts, sets: Sequence[InterventionSet], max_new_tokens: int = 64,
                            batch_size: int = 32, progress: bool = False, desc: str = "generating") -> list[str]:
        """Greedy completions where prompt ``i`` runs under its own set ``sets[i]`` (e.g. per-prompt feature sets),
        still batched: each batch row is routed to its prompt's hooks."""
        h = self.handle
        if len(sets) != len(prompts):
            raise ValueError(f"{len(sets)} intervention sets for {len(prompts)} prompts")
        hooked = _set_hooks(h, sets)

        def batch_hooks(idx: list[int]) -> list[tuple[str, HookFn]]:
            return _row_hooks([hooked[i] for i in idx])

        return generate(h, prompts, max_new_tokens, batch_size, progress, desc, batch_hooks=batch_hooks)

    def _run_batch(self, batch: PromptBatch, hooked: Sequence[SetHooks], start: int, k: int | None) -> torch.Tensor:
        h = self.handle
        T = batch.input_ids.shape[1]
        if k is not None and k >= T:
            k = None
        if start >= h.n_layers:  # no intervention at all: one clean pass gives every set's answer
            return self._head(self._resid_at(batch, h.n_layers))[:, None].expand(-1, len(hooked), -1)
        entry, layer = _entry_point(h, hooked, start)
        cache = None
        if k is None:  # every position may change: share the layer prefix only
            resid = self._resid_at(batch, layer)
            suffix_mask_len = T
        else:  # share clean keys/values of positions before the last k, then the layer prefix of the rest
            cache = self._prefix_cache(batch, T - k)
            # a pass stopped at `layer` would append suffix keys to some layers only: run it on a copy
            resid = self._resid_at(batch, layer, cache=repeated_cache(cache, 1, h.n_layers), suffix=k)
            suffix_mask_len = k
        shared = k is not None and self._can_share_prefix(T)
        per_fwd = self.sets_per_forward(len(batch), suffix_mask_len, T - suffix_mask_len,
                                        0 if shared else h.n_layers - layer)
        chunks = []
        for c0 in range(0, len(hooked), per_fwd):
            chunk = hooked[c0 : c0 + per_fwd]
            chunks.append(self._run_sets(batch, resid, chunk, entry, layer, cache, k, shared))
        return torch.cat(chunks, dim=1)

    def _can_share_prefix(self, seq_len: int) -> bool:
        window = getattr(self.handle.model.config, "sliding_window", None)
        return self.cfg.shared_prefix_attention and (window is None or seq_len <= window)

    def _resid_at(self, batch: PromptBatch, layer: int, cache=None, suffix: int | None = None) -> torch.Tensor:
        """Residual stream entering ``layer`` (or the final hidden state when ``layer == n_layers``)."""
        h = self.handle
        ids = batch.input_ids if suffix is None else batch.input_ids[:, -suffix:]
        pos = position_ids_for(batch.attention_mask)
        pos = pos if suffix is None else pos[:, -suffix:]
        got: dict[str, torch.Tensor] = {}

        def grab(act: torch.Tensor) -> None:
            got["x"] = act
            raise StopForward

        hooks = [] if layer >= h.n_layers else [(hook_name(layer, "resid_pre"), grab)]
        with h.hooks(hooks):
            try:
                out = h.inner(input_ids=ids, attention_mask=batch.attention_mask, position_ids=pos,
                              use_cache=cache is not None, **cache_kwargs(h.inner, cache))
                got["x"] = out.last_hidden_state  # final-normed: _head skips the norm for this case
            except StopForward:
                pass
        return got["x"]

    def _prefix_cache(self, batch: PromptBatch, length: int):
        from transformers import DynamicCache

        h = self.handle
        cache = DynamicCache(config=h.model.config)
        h.inner(input_ids=batch.input_ids[:, :length], attention_mask=batch.attention_mask[:, :length],
                position_ids=position_ids_for(batch.attention_mask)[:, :length], use_cache=True,
                **cache_kwargs(h.inner, cache))
        return cache

    def _head(self, normed: torch.Tensor) -> torch.Tensor:
        h = self.handle
        logits = h.model.get_submodule(h.arch.lm_head)(normed[:, -1]).float()
        cap = getattr(h.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def _run_sets(self, batch: PromptBatch, resid: torch.Tensor, hooked: Sequence[SetHooks], entry: str, layer: int,
                  cache, k: int | None, shared: bool) -> torch.Tensor:
        h = self.handle
        n = len(hooked)
        x = _enter(resid, hooked, entry)
        pos = position_ids_for(batch.attention_mask).repeat_interleave(n, dim=0)
        mask = None if shared else batch.attention_mask.repeat_interleave(n, dim=0)
        attn = {}
        if shared:  # looked up before layers_from truncates the layer list
            layers = h.model.get_submodule(h.arch.layers)
            attn = {i: layers[i].get_submodule(h.arch.attn) for i in range(layer, h.n_layers)}
        with h.hooks(_stacked_hooks(hooked, skip=entry)), layers_from(h, layer) as inner:
            if k is None:
                out = inner(inputs_embeds=x, attention_mask=mask, position_ids=pos, use_cache=False)
            elif shared:
                keep = batch.attention_mask[:, : batch.input_ids.shape[1] - k]
                with shared_prefix_attention(attn, cache, keep, n, h.model.config):
                    out = inner(inputs_embeds=x, position_ids=pos[:, -k:], use_cache=False)
            else:
                out = inner(inputs_embeds=x, attention_mask=mask, position_ids=pos[:, -k:], use_cache=True,
                            **cache_kwargs(inner, repeated_cache(cache, n, layer)))
        logits = self._head(out.last_hidden_state)
        return logits.view(len(batch), n, -1)
