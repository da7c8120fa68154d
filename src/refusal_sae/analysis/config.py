"""Settings of stage 5, the analyses: jailbreak families, upstream → downstream features, probes and hardening
(torch-free: the CLI reads its defaults here and checks every setting before the model loads).

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

    datasets: tuple[str, ...] = TEST_SETS  # harmful datasets whose refused plain instructions are wrapped (default:
    #   the held-out test sets)
    dataset: str | None = None  # A JSON/JSONL/CSV prompt file used as the jailbreak set as is (optional 'family' and
    #   'plain' fields), e.g. WildJailbreak
    families: tuple[str, ...] | None = None  # None: every registered family (file mode: every family in the file)
    n_instructions: int = 40  # refused plain instructions wrapped in every family
    n: int | None = None  # file mode: prompts (seeded sample; None: all)
    neutral_control: bool = True  # also wrap in the neutral control wrapper (paired McNemar per family)
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
    n_train: int = 32  # harmful_train prompts (those refused define the refusal features)
    n_val: int = 32  # harmful_val prompts (those refused choose the threshold X)
    thresholds: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # grid of X: shares of per-prompt sets a
    #   refusal feature is in
    k: int | None = None  # per-prompt set size (default: the search's K*)
    clamp: float | None = -3.0  # multiplier of the upstream features (0 zero-ablates), or 'search' for the search's
    #   chosen clamp
    last: int = 5  # refusal features are read over the last N tokens; upstream positions lie before them
    position_frac: float = 1.0  # clamp from the earliest position whose attribution reaches this share of the peak
    #   (1: the peak)
    n_random: int = 3  # random same-layer sets clamped from the same positions (the control)
    ig_steps: int = 10  # LA-IG interpolation steps
    max_instructions: int | None = None  # analyse the pairs of at most this many plain instructions (seeded)
    top_tokens: int = 10  # suppressing tokens listed per family
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
    ood_dataset: str | None = None  # any prompt file (or dataset name) as the OOD test; labels from the model's
    #   judged answers
    feature_sets: tuple[str, ...] = PROBE_FEATURE_SETS  # feature sets to probe: minimal, global, shared (those
    #   missing from the run are skipped and listed)
    n_train: int = 64  # harmful_train and harmless_train prompts each
    n_val: int = 32  # harmful_val and harmless_val prompts each (C and the dense layer)
    n_test: int = 64  # harmless_test prompts of the in-distribution test
    n_ood: int | None = None  # ood_dataset: prompts (seeded sample; None: all)
    n_random: int = 10  # random feature sets per size
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


# --- hardening (refusal_sae.analysis.harden) ---------------------------------------------------------------------
FEATURE_SOURCES = ("minimal", "global")  # the search's greedy minimal set | its global set (top K* of ours)
STEER_MODES = ("floor", "set")  # f' = max(f, m·μ) | f' = m·μ
TARGET_STATS = ("max", "mean")  # μ per refused prompt: max | mean of the code over the target positions
TARGET_POSITIONS = ("post_inst", "content")  # … the post-instruction tokens | every real token after the first
ATTACKS = ("prefill", "none")  # the attack that works on this model, beside the natural jailbreak prompts
FITTING_SPLITS = ("harmful_train", "harmless_train")  # calibration and gate fitting read these: never measured on


@dataclass
class HardenConfig:
    """Stage 5, section 4: clamp the refusal features up on jailbreak prompts, against activation addition.

    Steering: each feature of the chosen set is raised to ``m × μ`` (``μ``: its mean, over the ``n_calib``
    harmful_train prompts the model refuses, of the per-prompt ``target_stat`` over the ``target_positions``),
    at every position, for each ``m`` of ``multipliers``. Conditional steering applies the same edit only to prompts
    where an upstream harm feature fires (a gate chosen on training prompts, checked on validation prompts).
    Baseline: activation addition of the refusal direction at its layer, every position, for each coefficient of
    ``actadd_coeffs``. Control: ``n_random`` random feature sets of the same per-layer sizes, steered the same way at
    each ``m`` of ``random_multipliers``. Measured on held-out prompts only: ``n_jailbreak`` instructions of
    ``jailbreak_datasets`` wrapped in jailbreak templates (and, plain, under the ``attack``), ``n_xstest`` XSTest
    safe prompts and ``n_harmless`` harmless_test prompts (over-refusal), and the loss increase on the clean model's
    own answers to the harmless prompts (capability cost).
    """

    features: str = "minimal"  # refusal features to steer: minimal (the search's greedy minimal set) | global (its
    #   top K*)
    multipliers: tuple[float, ...] = (1.0, 2.0, 4.0)  # steering sweep: each feature raised to m × its mean activation
    #   on refused prompts, e.g. '1,2,4'
    steer_mode: str = "floor"  # floor: f' = max(f, m·μ) | set: f' = m·μ
    target_stat: str = "max"  # μ per refused prompt: max | mean of the code over the target positions
    target_positions: str = "post_inst"  # post_inst (the template tokens after the instruction) | content (every real
    #   token after the first)
    n_calib: int = 32  # harmful_train prompts; the refused ones give each feature's mean activation μ
    # 1: the embedded model's calibrated coefficient (0.92 of 100 harmless_val prompts refused,
    # docs/refusal-direction.md); the smaller ones fill in the low over-refusal end of the baseline's curve
    actadd_coeffs: tuple[float, ...] = (0.25, 0.5, 1.0)  # activation-addition baseline: coefficients of the refusal
    #   direction, e.g. '0.25,0.5,1'
    random_multipliers: tuple[float, ...] = (4.0,)  # random-feature control at these m ('' for none)
    n_random: int = 1  # random sets per random multiplier
    gate_layers: tuple[int, ...] | None = None  # None: the SAE layers before the first steered layer (all when none)
    gate_sizes: tuple[int, ...] = (1, 3, 5, 10)  # harm features per gate candidate (top decoder cosines)
    n_gate: int = 48  # harmful_train (plain and wrapped) vs harmless_train prompts choosing the gate; as many val
    jailbreak_datasets: tuple[str, ...] = ("jailbreakbench", "harmbench_test")  # held-out harmful sets wrapped in
    #   jailbreak templates, comma-separated
    n_jailbreak: int = 48  # held-out instructions sampled for the jailbreak prompts (and the attack)
    families: tuple[str, ...] | None = None  # None: every registered jailbreak family
    attack: str = "prefill"  # prefill: the assistant turn starts with --prefill (an attack that works on small
    #   models) | none
    prefill: str = "Sure, here is"  # forced start of the answer for the prefill attack
    n_xstest: int = 64  # XSTest safe prompts (over-refusal)
    n_harmless: int = 48  # harmless_test prompts (over-refusal and the loss increase)
    max_new_tokens: int = 64
    batch_size: int = 32
    n_boot: int = 1000  # bootstrap resamples of the loss increase
    judge: str = "default"
    seed: int = 0

    def __post_init__(self) -> None:
        self.multipliers = tuple(sorted({float(m) for m in self.multipliers}))
        self.actadd_coeffs = tuple(sorted({float(c) for c in self.actadd_coeffs}))
        self.random_multipliers = tuple(sorted({float(m) for m in self.random_multipliers}))
        self.gate_layers = None if self.gate_layers is None else tuple(self.gate_layers)
        self.gate_sizes = tuple(sorted(set(self.gate_sizes)))
        self.jailbreak_datasets = tuple(self.jailbreak_datasets)
        self.families = None if self.families is None else tuple(self.families)

    def validate(self, sae_layers: tuple[int, ...] | None = None) -> None:
        """Every setting (and, given the SAE layers, the gate layers) before any work."""
        ints = {"n_calib": self.n_calib, "n_gate": self.n_gate, "n_jailbreak": self.n_jailbreak,
                "n_xstest": self.n_xstest, "n_harmless": self.n_harmless, "max_new_tokens": self.max_new_tokens,
                "batch_size": self.batch_size}
        bad = [f"{k}={v}" for k, v in ints.items() if v < 1]
        if bad:
            raise ConfigError(f"these settings must be positive: {', '.join(bad)}")
        if self.n_random < 0 or self.n_boot < 0:
            raise ConfigError("n_random and n_boot must not be negative")
        for name, allowed in (("features", FEATURE_SOURCES), ("steer_mode", STEER_MODES),
                              ("target_stat", TARGET_STATS), ("target_positions", TARGET_POSITIONS),
                              ("attack", ATTACKS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        if not self.multipliers:
            raise ConfigError("no steering multipliers given (e.g. --multipliers 1,2,4)")
        for name, vals in (("steering multipliers", self.multipliers), ("random-control multipliers",
                                                                        self.random_multipliers),
                           ("activation-addition coefficients", self.actadd_coeffs)):
            wrong = [v for v in vals if not math.isfinite(v) or v <= 0]
            if wrong:
                raise ConfigError(f"{name} must be positive finite numbers (a multiple of the mean activation; a "
                                  f"coefficient > 0 adds refusal), got {wrong}")
        if not self.actadd_coeffs:
            raise ConfigError("no activation-addition coefficients given: the baseline needs at least one")
        if self.n_random > 0 and not self.random_multipliers:
            raise ConfigError("random controls need at least one multiplier (--random-multipliers), or --n-random 0")
        if not self.gate_sizes or min(self.gate_sizes) < 1:
            raise ConfigError(f"gate sizes must be positive numbers of features, got {self.gate_sizes}")
        if not self.jailbreak_datasets:
            raise ConfigError("no held-out datasets for the jailbreak prompts")
        fitted = [d for d in self.jailbreak_datasets if d in FITTING_SPLITS]
        if fitted:
            raise ConfigError(f"{fitted} choose the steering targets and the gate; measure on held-out prompts "
                              "(e.g. jailbreakbench, harmbench_test, or a prompt file)")
        if self.families is not None:
            from refusal_sae.data.jailbreaks import get_family  # torch-free

            if not self.families:
                raise ConfigError("no jailbreak families given")
            for f in self.families:
                get_family(f)
        if self.attack == "prefill" and not self.prefill.strip():
            raise ConfigError("the prefill attack needs a non-empty --prefill text")
        if sae_layers is not None and self.gate_layers is not None:
            missing = [L for L in self.gate_layers if L not in sae_layers]
            if missing or not self.gate_layers:
                raise ConfigError(f"no SAE at gate layers {missing or '(none given)'}; the SAEs cover layers "
                                  f"{list(sae_layers)}")

    def to_dict(self) -> dict:
        return asdict(self)
