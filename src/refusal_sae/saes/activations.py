"""Residual-stream activations for SAE training: one forward pass per prompt batch feeds every requested layer.

Padding is dropped. "Massive-norm" positions (each sequence's first token, and any position whose norm exceeds
``outlier_factor`` x the batch median at that layer) are excluded per layer and counted: at later layers a few such
positions (BOS and similar attention sinks) dominate the variance, so training on them or measuring FVU with them
flatters an SAE. Tokens pass through a seeded shuffle buffer before they are yielded.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import torch

from refusal_sae.errors import ConfigError, DataError, NumericalError
from refusal_sae.models.formatting import FormattedPrompt, PromptBatch, length_sorted_batches
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import parse_hook_point
from refusal_sae.saes.config import PositionFilter


def check_finite(x: torch.Tensor, where: str) -> None:
    if not torch.isfinite(x).all():
        raise NumericalError(f"non-finite values in {where}")


def massive_masks(acts: torch.Tensor, attention_mask: torch.Tensor, filt: PositionFilter) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first, outlier)`` boolean masks ``[B, T]`` over real (non-padding) tokens of a left-padded batch."""
    real = attention_mask.bool()
    first = torch.zeros_like(real)
    if filt.exclude_first:
        first[torch.arange(real.shape[0], device=real.device), (~real).sum(dim=1).clamp(max=real.shape[1] - 1)] = True
        first &= real
    outlier = torch.zeros_like(real)
    if filt.outlier_factor is not None and real.any():
        norms = acts.float().norm(dim=-1)
        outlier = real & (norms > filt.outlier_factor * norms[real].median())
    return first, outlier


def ordinary_mask(acts: torch.Tensor, attention_mask: torch.Tensor, filt: PositionFilter) -> torch.Tensor:
    first, outlier = massive_masks(acts, attention_mask, filt)
    return attention_mask.bool() & ~first & ~outlier


@dataclass
class SourceStats:
    tokens: int = 0  # real (non-padding) tokens seen
    kept: int = 0
    excluded_first: int = 0
    excluded_outlier: int = 0  # outliers that are not also first positions

    @property
    def excluded(self) -> int:
        return self.excluded_first + self.excluded_outlier

    def add(self, other: SourceStats) -> None:
        self.tokens += other.tokens
        self.kept += other.kept
        self.excluded_first += other.excluded_first
        self.excluded_outlier += other.excluded_outlier

    def to_dict(self) -> dict:
        return {**asdict(self), "excluded": self.excluded}


def batch_groups(sequences: Sequence[FormattedPrompt], batch_size: int,
                 rng: random.Random | None = None) -> list[list[int]]:
    """Index groups of similar-length sequences (little padding); group order shuffled by ``rng`` if given."""
    groups = length_sorted_batches([len(s) for s in sequences], batch_size)
    if rng is not None:
        rng.shuffle(groups)
    return groups


def indexed_batches(handle: ModelHandle, sequences: Sequence[FormattedPrompt], batch_size: int,
                    rng: random.Random | None = None) -> Iterator[tuple[list[int], PromptBatch]]:
    """``(indices, batch)`` for each of :func:`batch_groups`."""
    for idx in batch_groups(sequences, batch_size, rng):
        yield idx, handle.batch([sequences[i] for i in idx])


def prompt_batches(handle: ModelHandle, sequences: Sequence[FormattedPrompt], batch_size: int,
                   rng: random.Random | None = None) -> Iterator[PromptBatch]:
    for _, batch in indexed_batches(handle, sequences, batch_size, rng):
        yield batch


class _Mixer:
    """Shuffle buffer: when ``capacity`` tokens are stored, shuffle them and release half."""

    def __init__(self, capacity: int, gen: torch.Generator):
        self.capacity, self.gen = capacity, gen
        self.store: list[torch.Tensor] = []
        self.n_store = 0
        self.ready: list[torch.Tensor] = []
        self.n_ready = 0
        self.empty: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        if self.empty is None:
            self.empty = x[:0]
        self.store.append(x)
        self.n_store += len(x)
        if self.n_store >= self.capacity:
            self._release(self.n_store // 2)

    def flush(self) -> None:
        if self.n_store:
            self._release(self.n_store)

    def _release(self, n: int) -> None:
        allx = torch.cat(self.store)
        allx = allx[torch.randperm(len(allx), generator=self.gen).to(allx.device)]
        self.ready.append(allx[:n])
        self.store, self.n_store = [allx[n:]], len(allx) - n
        self.n_ready += n

    def take(self, n: int) -> torch.Tensor:
        if not self.ready:
            return self.empty
        allx = torch.cat(self.ready)
        self.ready, self.n_ready = [allx[n:]], len(allx) - n
        return allx[:n]


class ActivationSource:
    """Iterates ``{hook name: [batch_size, d_model] float32}``; every hook gets full batches in lockstep.

    ``epochs=None`` cycles over the sequences forever (each epoch in a new seeded order); with a finite number
    the last, smaller batches are yielded unless ``drop_last``.

    ``cache_bytes``: when the kept activations of one pass over the corpus fit in this many bytes, later epochs
    replay them from memory (in a new seeded order) instead of running the model again. SAE training cycles a
    small chat corpus many times, so this removes nearly all forward passes after the first epoch; the
    activations are identical because the model is frozen.
    """

    def __init__(self, handle: ModelHandle, sequences: Sequence[FormattedPrompt], hook_names: Sequence[str],
                 batch_size: int, *, prompt_batch_size: int = 16, filt: PositionFilter | None = None,
                 buffer_tokens: int = 32768, epochs: int | None = None, seed: int = 0, drop_last: bool = True,
                 cache_bytes: int = 0):
        if not sequences:
            raise DataError("no sequences to read activations from")
        if batch_size < 1 or prompt_batch_size < 1:
            raise ConfigError("batch sizes must be positive")
        if not hook_names:
            raise ConfigError("no hook points requested")
        self.hooks = [parse_hook_point(h, handle.n_layers).name for h in hook_names]
        self.handle, self.sequences, self.batch_size = handle, list(sequences), batch_size
        self.prompt_batch_size, self.filt = prompt_batch_size, filt or PositionFilter()
        # a buffer larger than the corpus only delays the first batch (the whole corpus is then shuffled anyway)
        corpus_tokens = sum(len(s) for s in self.sequences)
        self.buffer_tokens = max(2 * batch_size, min(buffer_tokens, corpus_tokens))
        self.epochs, self.seed, self.drop_last = epochs, seed, drop_last
        self.cache_bytes = cache_bytes
        self.stats = {h: SourceStats() for h in self.hooks}
        self.forward_epochs = 0  # passes that ran the model (the rest were replayed from memory)

    def token_chunks(self) -> Iterator[dict[str, torch.Tensor]]:
        """Kept activations ``[n, d_model]`` per hook, one entry per prompt batch, in (seeded) order."""
        epoch = 0
        # keyed by the batch's sequence indices: a replayed epoch yields exactly what a recomputed one would
        cache: dict[tuple[int, ...], tuple[dict[str, torch.Tensor], dict[str, SourceStats]]] | None
        cache = {} if self.cache_bytes > 0 else None
        cached_bytes = 0
        while self.epochs is None or epoch < self.epochs:
            rng = random.Random(self.seed * 1_000_003 + epoch)
            if epoch > 0 and cache is not None:
                for idx in batch_groups(self.sequences, self.prompt_batch_size, rng):
                    out, deltas = cache[tuple(idx)]
                    for h in self.hooks:
                        self.stats[h].add(deltas[h])
                    yield out
                epoch += 1
                continue
            kept_this_epoch = dict.fromkeys(self.hooks, 0)
            for idx, batch in indexed_batches(self.handle, self.sequences, self.prompt_batch_size, rng):
                acts = self.handle.cache_activations(batch, self.hooks)
                out, deltas = {}, {}
                for h in self.hooks:
                    out[h], deltas[h] = self._keep(h, acts[h], batch.attention_mask)
                    kept_this_epoch[h] += len(out[h])
                if cache is not None:
                    cached_bytes += sum(x.numel() * x.element_size() for x in out.values())
                    if cached_bytes <= self.cache_bytes:
                        cache[tuple(idx)] = (out, deltas)
                    else:  # the corpus does not fit: every epoch runs the model
                        cache = None
                yield out
            self.forward_epochs += 1
            empty = [h for h, n in kept_this_epoch.items() if n == 0]
            if empty:
                raise DataError(f"no ordinary token positions left at {', '.join(empty)} (all padding or massive-norm)")
            epoch += 1

    def _keep(self, hook: str, acts: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, SourceStats]:
        first, outlier = massive_masks(acts, attention_mask, self.filt)
        real = attention_mask.bool()
        keep = real & ~first & ~outlier
        delta = SourceStats(tokens=int(real.sum()), excluded_first=int(first.sum()),
                            excluded_outlier=int((outlier & ~first).sum()), kept=int(keep.sum()))
        self.stats[hook].add(delta)
        x = acts[keep].float()
        check_finite(x, hook)
        return x, delta

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        mixers = {h: _Mixer(self.buffer_tokens, gen) for h in self.hooks}
        bs = self.batch_size
        for chunk in self.token_chunks():
            for h, x in chunk.items():
                mixers[h].add(x)
            while all(m.n_ready >= bs for m in mixers.values()):
                yield {h: m.take(bs) for h, m in mixers.items()}
        for m in mixers.values():
            m.flush()
        while all(m.n_ready >= bs for m in mixers.values()):
            yield {h: m.take(bs) for h, m in mixers.items()}
        if not self.drop_last and any(m.n_ready for m in mixers.values()):
            yield {h: m.take(m.n_ready) for h, m in mixers.items()}
