"""The judge contract: three labels, the :class:`Judgement` record, the :class:`Judge` ABC and the registry.

A judge spec is ``NAME`` or ``NAME:ARG`` (``harmbench:/path/to/dir``, ``classifier:org/name``). Each registered
name says whether it takes an ``ARG`` (none, optional or required), so a malformed spec is a
:class:`~refusal_sae.errors.ConfigError` at once, before any model is loaded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from refusal_sae.errors import ConfigError

REFUSED, COMPLIED, DEGENERATE = "refused", "complied", "degenerate"
JUDGEMENTS = (REFUSED, COMPLIED, DEGENERATE)


@dataclass(frozen=True)
class Judgement:
    label: str  # refused | complied | degenerate
    reason: str  # which rule decided
    relevance: float | None = None  # instruction–completion cosine, when computed
    score: float | None = None  # a classifier's probability of "complied" (P(yes), P(unsafe)), when one decided


class Judge(ABC):
    """Narrow plugin contract: label each (instruction, completion) pair."""

    name: str = "judge"

    @abstractmethod
    def judge(self, instructions: Sequence[str], completions: Sequence[str]) -> list[Judgement]: ...

    def judge_records(self, instructions: Sequence[str], completions: Sequence[str], *,
                      contexts: Sequence[str | None] | None = None,
                      harmful: Sequence[bool | None] | None = None) -> list[Judgement]:
        """Like :meth:`judge`, with optional per-prompt extras that some judges use: ``contexts`` (HarmBench's
        context string of a contextual behaviour) and ``harmful`` (the prompt's label, when known). Judges
        that cannot use them ignore them, so a caller can always pass them."""
        return self.judge(instructions, completions)


ArgMode = Literal["none", "optional", "required"]


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Judge]
    arg: ArgMode

    def hint(self, name: str) -> str:
        return {"none": name, "optional": f"{name}[:MODEL]", "required": f"{name}:MODEL"}[self.arg]


_JUDGES: dict[str, _Entry] = {}


def register_judge(name: str, factory: Callable[..., Judge], *, arg: ArgMode = "none") -> None:
    """Register ``factory`` under ``name``. ``arg`` says whether the spec ``name:ARG`` takes an argument
    (passed as the factory's first positional argument). A name can be registered once."""
    if not name or ":" in name or name != name.strip():
        raise ValueError(f"invalid judge name {name!r}")
    if name in _JUDGES:
        raise ValueError(f"judge {name!r} is already registered")
    if arg not in ("none", "optional", "required"):
        raise ValueError(f"arg must be none, optional or required, not {arg!r}")
    _JUDGES[name] = _Entry(factory, arg)


def judge_names() -> tuple[str, ...]:
    """The registered judge names, sorted."""
    return tuple(sorted(_JUDGES))


def judge_specs() -> tuple[str, ...]:
    """The registered judges as spec patterns (``default``, ``harmbench[:MODEL]``, ``classifier:MODEL``)."""
    return tuple(_JUDGES[n].hint(n) for n in judge_names())


def loads_a_model(spec: str) -> bool:
    """Whether the judge ``spec`` names loads a model of its own (and so takes ``device`` / ``local_files_only``)."""
    entry = _JUDGES.get(spec.strip().partition(":")[0])
    return entry is not None and entry.arg != "none"


def get_judge(spec: str = "default", **options) -> Judge:
    """The judge for ``spec`` (``NAME`` or ``NAME:MODEL``), built with ``options`` (e.g. ``device``,
    ``batch_size``). Cheap: classifier judges load their model on first use. An unknown name or a
    malformed spec raises :class:`ConfigError`."""
    name, sep, arg = spec.strip().partition(":")
    entry = _JUDGES.get(name)
    if entry is None:
        raise ConfigError(f"unknown judge {spec!r}; known: {', '.join(judge_specs())}")
    if sep and not arg.strip():
        raise ConfigError(f"judge spec {spec!r} has nothing after ':'; expected {entry.hint(name)}")
    if arg and entry.arg == "none":
        raise ConfigError(f"judge {name!r} takes no argument (got {spec!r})")
    if not arg and entry.arg == "required":
        raise ConfigError(f"judge {name!r} needs a model: {entry.hint(name)}")
    return entry.factory(arg.strip(), **options) if arg else entry.factory(**options)
