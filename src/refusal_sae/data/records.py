"""Typed prompt records and prompt sets."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class PromptRecord:
    instruction: str
    label: str  # "harmful" | "harmless" | "unknown"
    source: str  # dataset name
    category: str | None = None
    jailbreak_family: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def family(self) -> str | None:
        """The prompt's family: its ``jailbreak_family``, else the ``family`` a dataset row gave (``extra``)."""
        fam = self.jailbreak_family or self.extra.get("family")
        return str(fam) if fam else None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PromptSet:
    name: str
    records: list[PromptRecord]
    is_test: bool = False  # test splits are never used for training or selection

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[PromptRecord]:
        return iter(self.records)

    def __getitem__(self, i: int) -> PromptRecord:
        return self.records[i]

    @property
    def instructions(self) -> list[str]:
        return [r.instruction for r in self.records]

    def sample(self, n: int | None, seed: int = 0) -> PromptSet:
        """The first ``n`` records of a seeded shuffle (the same seed always gives the same set)."""
        if n is None or n >= len(self.records):
            return self
        rng = random.Random(seed)
        idx = sorted(rng.sample(range(len(self.records)), n))
        return PromptSet(self.name, [self.records[i] for i in idx], self.is_test)
