"""Settings of the hardening analysis (torch-free: the CLI reads its defaults here and checks them before any work).

See :mod:`refusal_sae.analysis.harden` for what each setting does to the measurement.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from refusal_sae.errors import ConfigError

FEATURE_SOURCES = ("minimal", "global")  # the search's greedy minimal set | its global set (top K* of ours)
STEER_MODES = ("floor", "set")  # f' = max(f, m·μ) | f' = m·μ
TARGET_STATS = ("max", "mean")  # μ per refused prompt: max | mean of the code over the target positions
TARGET_POSITIONS = ("post_inst", "content")  # … the post-instruction tokens | every real token after the first
ATTACKS = ("prefill", "none")  # the attack that works on this model, beside the natural jailbreak prompts
FITTING_SPLITS = ("harmful_train", "harmless_train")  # calibration and gate fitting read these: never measured on


@dataclass
class HardenConfig:
    """Stage 6, section 4: clamp the refusal features up on jailbreak prompts, against activation addition.

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

    features: str = "minimal"
    multipliers: tuple[float, ...] = (1.0, 2.0, 4.0)
    steer_mode: str = "floor"
    target_stat: str = "max"
    target_positions: str = "post_inst"
    n_calib: int = 32  # harmful_train prompts; the refused ones give each feature's mean activation μ
    # 1: the embedded model's calibrated coefficient (0.92 of 100 harmless_val prompts refused,
    # docs/refusal-direction.md); the smaller ones fill in the low over-refusal end of the baseline's curve
    actadd_coeffs: tuple[float, ...] = (0.25, 0.5, 1.0)
    random_multipliers: tuple[float, ...] = (4.0,)
    n_random: int = 1  # random sets per random multiplier
    gate_layers: tuple[int, ...] | None = None  # None: the SAE layers before the first steered layer (all when none)
    gate_sizes: tuple[int, ...] = (1, 3, 5, 10)  # harm features per gate candidate (top decoder cosines)
    n_gate: int = 48  # harmful_train (plain and wrapped) vs harmless_train prompts choosing the gate; as many val
    jailbreak_datasets: tuple[str, ...] = ("jailbreakbench", "harmbench_test")
    n_jailbreak: int = 48
    families: tuple[str, ...] | None = None  # None: every registered jailbreak family
    attack: str = "prefill"
    prefill: str = "Sure, here is"
    n_xstest: int = 64
    n_harmless: int = 48
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
