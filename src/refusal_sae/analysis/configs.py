"""Settings of the jailbreak, upstream → downstream and probe analyses (torch-free: the CLI reads its defaults here
and checks every setting before the model loads).

Each config has ``validate()`` (raises :class:`~refusal_sae.errors.ConfigError` / :class:`~refusal_sae.errors.DataError`
before any work) and ``to_dict()`` (its part of the stage identity).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from refusal_sae.errors import ConfigError
from refusal_sae.runs.io import slug

#: Held-out harmful instructions the jailbreak table wraps by default (never fitted or selected on).
TEST_SETS = ("jailbreakbench", "harmbench_test")
JAILBREAKS_STAGE = "analysis/jailbreaks"
PROBE_FEATURE_SETS = ("minimal", "global", "shared")


def jailbreak_stage_name(datasets: tuple[str, ...] = TEST_SETS, dataset: str | None = None) -> str:
    """The run-directory folder of a jailbreak table: ``analysis/jailbreaks`` for the default held-out sets, else
    one folder per prompt source (so tables of training instructions or of a user's file sit beside it)."""
    if dataset is not None:
        return f"{JAILBREAKS_STAGE}-file-{slug(dataset, 60)}"
    if tuple(datasets) == TEST_SETS:
        return JAILBREAKS_STAGE
    return f"{JAILBREAKS_STAGE}-{slug('+'.join(datasets), 60)}"


def _positive(**values: int | None) -> None:
    bad = [f"{k}={v}" for k, v in values.items() if v is not None and v < 1]
    if bad:
        raise ConfigError(f"these settings must be positive: {', '.join(bad)}")


def _check_judge(spec: str) -> None:
    from refusal_sae.scoring.judge import get_judge

    get_judge(spec)  # cheap (models load on first use); an unknown or malformed spec is a ConfigError


@dataclass
class JailbreaksConfig:
    """§1: which jailbreak families make the model comply.

    Default mode: ``datasets`` (registered names) are shuffled with ``seed``; their plain instructions are answered
    (greedy, judged) in chunks until ``n_instructions`` refused ones are found; each refused instruction is wrapped in
    every family of ``families`` (and in a neutral control wrapper that adds polite text and no attack) and answered.
    File mode (``dataset``): every prompt of a JSON/JSONL/CSV file is the jailbreak prompt itself (its optional
    ``family`` / ``jailbreak_family`` field names the family; an optional ``plain`` / ``plain_instruction`` /
    ``vanilla`` field the unwrapped instruction, which is then answered too, to form pairs); ``n`` prompts sampled.
    """

    datasets: tuple[str, ...] = TEST_SETS
    dataset: str | None = None
    families: tuple[str, ...] | None = None  # None: every registered family (file mode: every family in the file)
    n_instructions: int = 40  # refused plain instructions wrapped in every family
    n: int | None = None  # file mode: prompts (seeded sample; None: all)
    neutral_control: bool = True
    seed: int = 0
    max_new_tokens: int = 64
    batch_size: int = 32
    judge: str = "default"

    def __post_init__(self) -> None:
        self.datasets = tuple(self.datasets)
        self.families = None if self.families is None else tuple(dict.fromkeys(self.families))

    def validate(self) -> None:
        from refusal_sae.data.jailbreaks import get_family
        from refusal_sae.data.registry import get_spec

        _positive(n_instructions=self.n_instructions, n=self.n, max_new_tokens=self.max_new_tokens,
                  batch_size=self.batch_size)
        _check_judge(self.judge)
        if self.dataset is None:
            if not self.datasets:
                raise ConfigError("no datasets to wrap")
            for d in self.datasets:
                get_spec(d)
            for f in self.families or ():
                get_family(f)
        if self.families is not None and not self.families:
            raise ConfigError("no jailbreak families given")

    @property
    def stage(self) -> str:
        return jailbreak_stage_name(self.datasets, self.dataset)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class UpstreamConfig:
    """§2: upstream features → downstream refusal features.

    Per-prompt sets: each prompt's top ``k`` (None: the search's K*) features by LA-IG (``ig_steps``) within the
    search's decoder-cosine prefilter. Refusal features: the features in at least a share X of the per-prompt sets of
    ``n_train`` refused harmful_train prompts, X from ``thresholds`` chosen by the rule in
    :func:`refusal_sae.analysis.upstream.choose_threshold` on ``n_val`` refused harmful_val prompts. Upstream features
    of a prompt: its set minus the refusal features, each ablated (×``clamp``; None: the search's chosen clamp) from
    its highest-attribution position outside the last ``last`` tokens (``position_frac`` < 1: the earliest position
    whose attribution reaches that share of the peak) on; ``n_random`` random same-layer sets from the same positions
    are the control. ``max_instructions`` caps the plain instructions of the jailbreak pairs analysed (seeded).
    """

    jailbreaks: str = JAILBREAKS_STAGE  # the jailbreak table whose pairs are analysed (a folder of the run)
    n_train: int = 32
    n_val: int = 32
    thresholds: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    k: int | None = None
    clamp: float | None = -3.0
    last: int = 5
    position_frac: float = 1.0
    n_random: int = 3
    ig_steps: int = 10
    max_instructions: int | None = None
    top_tokens: int = 10
    seed: int = 0
    max_new_tokens: int = 64
    batch_size: int = 8
    judge: str = "default"

    def __post_init__(self) -> None:
        self.thresholds = tuple(sorted({float(x) for x in self.thresholds}))

    def validate(self) -> None:
        _positive(n_train=self.n_train, n_val=self.n_val, k=self.k, last=self.last, n_random=self.n_random,
                  ig_steps=self.ig_steps, max_instructions=self.max_instructions, top_tokens=self.top_tokens,
                  max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
        _check_judge(self.judge)
        if not self.thresholds or not all(0 < x <= 1 for x in self.thresholds):
            raise ConfigError(f"thresholds are shares of per-prompt sets in (0, 1], got {self.thresholds}")
        if self.clamp is not None and (not math.isfinite(self.clamp) or self.clamp == 1.0):
            raise ConfigError(f"clamp must be a finite multiplier other than 1 (0 zero-ablates), got {self.clamp}")
        if not 0 < self.position_frac <= 1:
            raise ConfigError(f"position_frac must lie in (0, 1], got {self.position_frac}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProbeConfig:
    """§3: linear probes of "will the model refuse" on last-token activations.

    Training: ``n_train`` harmful_train prompts the model refuses (1) and ``n_train`` harmless_train prompts it does
    not refuse (0), labels from judged greedy answers (``max_new_tokens``); validation (C of every probe, and the
    dense probe's layer): ``n_val`` each of harmful_val / harmless_val. In distribution: the jailbreak table's held-out
    plain instructions the model refuses (1) and ``n_test`` harmless_test prompts it does not refuse (0). Out of
    distribution: the jailbreak table's wrapped prompts the model does not refuse (0) and the same held-out refused
    plain instructions (1), or any prompt file (``ood_dataset``: label = judged refused). Probes: each feature set of
    ``feature_sets``, ``n_random`` random sets of the same per-layer sizes from the features alive at the last token
    of the training prompts, and the dense residual stream (layer and C chosen on validation).
    """

    jailbreaks: str = JAILBREAKS_STAGE
    ood_dataset: str | None = None
    feature_sets: tuple[str, ...] = PROBE_FEATURE_SETS
    n_train: int = 64
    n_val: int = 32
    n_test: int = 64
    n_ood: int | None = None  # ood_dataset: prompts (seeded sample; None: all)
    n_random: int = 10
    cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)  # inverse regularisation strengths tried on validation
    n_boot: int = 1000
    seed: int = 0
    max_new_tokens: int = 64
    batch_size: int = 32
    judge: str = "default"

    def __post_init__(self) -> None:
        self.feature_sets = tuple(dict.fromkeys(self.feature_sets))
        self.cs = tuple(sorted({float(c) for c in self.cs}))

    def validate(self) -> None:
        _positive(n_train=self.n_train, n_val=self.n_val, n_test=self.n_test, n_ood=self.n_ood,
                  n_random=self.n_random, n_boot=self.n_boot, max_new_tokens=self.max_new_tokens,
                  batch_size=self.batch_size)
        _check_judge(self.judge)
        bad = [f for f in self.feature_sets if f not in PROBE_FEATURE_SETS]
        if bad or not self.feature_sets:
            raise ConfigError(f"feature sets must be among {PROBE_FEATURE_SETS}, got {list(self.feature_sets)}")
        if not self.cs or not all(c > 0 and math.isfinite(c) for c in self.cs):
            raise ConfigError(f"regularisation strengths C must be positive, got {self.cs}")

    def to_dict(self) -> dict:
        return asdict(self)
