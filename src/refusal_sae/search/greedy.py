"""Greedy filtering of a feature set to a minimal one (Prakash et al., "Beyond I'm Sorry, I Can't", stage 2).

Start from the clamped set; in a seeded random order, drop blocks of ``block`` features whose removal (the rest
still clamped) moves the mean refusal score by at most ``tau``; then, inside the blocks that stayed, drop single
features the same way. Several orders (seeds) run, and the minimal set is the intersection of what they keep.

The refusal score guides the pruning because it is cheap: every chain (seed, and the tau sweep) proposes one set
per round and all proposals of a round are scored in one stacked pass of the
:class:`~refusal_sae.interventions.InterventionEngine`. The kept set is then confirmed on judged generations by the
caller.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from refusal_sae.interventions.engine import InterventionEngine
from refusal_sae.search.featureset import FeatureSet, clamp_set


@dataclass
class PathPoint:
    size: int  # features still clamped after this step
    score: float  # mean refusal score with them clamped
    flipped: float  # share of prompts whose refusal score is below 0


@dataclass
class GreedyTrace:
    seed: int
    tau: float
    kept: FeatureSet
    path: list[PathPoint] = field(default_factory=list)


class _Chain:
    """One pruning order (seed) at one tau: proposes the next removal, and keeps it or not once it is scored."""

    def __init__(self, start: FeatureSet, seed: int, tau: float, block: int, start_score: float, flipped: float):
        self.trace = GreedyTrace(seed, tau, start, [PathPoint(len(start), start_score, flipped)])
        self.current, self.score = start, start_score
        order = list(start.items)
        random.Random(seed).shuffle(order)
        self.blocks = [order[i : i + block] for i in range(0, len(order), block)]
        self.queue: list[list[tuple[int, int]]] = list(self.blocks)
        self.phase = "blocks"
        self.proposal: FeatureSet | None = None

    def propose(self) -> FeatureSet | None:
        while True:
            if not self.queue and self.phase == "blocks":
                kept = set(self.current.items)
                self.queue = [[x] for b in self.blocks for x in b if x in kept]
                self.phase = "features"
            if not self.queue:
                return None
            unit = self.queue.pop(0)
            if any(x in set(self.current.items) for x in unit):
                self.proposal = self.current.without(unit)
                return self.proposal

    def decide(self, score: float, flipped: float) -> None:
        if abs(score - self.score) <= self.trace.tau:  # no real effect: drop it
            self.current, self.score = self.proposal, score
            self.trace.path.append(PathPoint(len(self.current), score, flipped))
        self.trace.kept = self.current


def greedy_filter(engine: InterventionEngine, saes: Mapping[int, object], prompts: Sequence[str],
                  refusal_tokens: Sequence[int], start: FeatureSet, c: float, chains: Sequence[tuple[int, float]],
                  block: int = 5, progress: bool = True) -> list[GreedyTrace]:
    """Run the chains ``(seed, tau)`` in lockstep from ``start`` (clamped at ``c``); one trace per chain."""
    from tqdm.auto import tqdm

    def evaluate(sets: list[FeatureSet]) -> list[tuple[float, float]]:
        scores = engine.score(prompts, [clamp_set(saes, s, c) if len(s) else [] for s in sets], refusal_tokens)
        return [(float(row.mean()), float((row < 0).double().mean())) for row in scores]

    (s0, f0), = evaluate([start])
    live = [_Chain(start, seed, tau, block, s0, f0) for seed, tau in chains]
    bar = tqdm(desc="greedy filtering", unit="round", disable=not progress)
    while True:
        active = [(ch, p) for ch in live if (p := ch.propose()) is not None]
        if not active:
            break
        for (ch, _), (score, flipped) in zip(active, evaluate([p for _, p in active]), strict=True):
            ch.decide(score, flipped)
        bar.update(1)
    bar.close()
    return [ch.trace for ch in live]


def intersect(traces: Sequence[GreedyTrace]) -> FeatureSet:
    """The features every trace kept, in the order of the first."""
    out = traces[0].kept
    for t in traces[1:]:
        out = out.intersection(t.kept)
    return out


def flip_curve(trace: GreedyTrace) -> list[tuple[int, float]]:
    """(set size, share of prompts flipped) along a trace's pruning path."""
    return [(p.size, p.flipped) for p in trace.path]

