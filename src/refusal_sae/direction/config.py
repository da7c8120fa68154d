"""Settings of the direction stage (torch-free: the CLI reads its defaults here without importing torch).

Every argument is checked against the model in :meth:`DirectionConfig.validate` before any forward pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from refusal_sae.errors import ConfigError


@dataclass
class SelectionConfig:
    """How a candidate direction is chosen on the validation splits (Arditi et al.)."""

    prune_layer_fraction: float = 0.2  # candidates in this last fraction of layers are discarded
    max_kl: float = 0.1  # discard candidates whose ablation moves harmless next-token distributions more (KL)
    min_induce: float = 0.0  # discard candidates whose addition induces less refusal
    layers: tuple[int, ...] | None = None  # None: every layer (restrict to save time on CPU)
    positions: tuple[int, ...] | None = None  # None: every post-instruction position (negative offsets)
    batch_size: int = 32  # prompts per forward batch

    def __post_init__(self) -> None:
        self.layers = None if self.layers is None else tuple(self.layers)
        self.positions = None if self.positions is None else tuple(self.positions)


@dataclass
class DirectionConfig:
    n_train: int = 128  # per class, from harmful_train / harmless_train
    n_val: int = 32  # per class, from harmful_val / harmless_val
    seed: int = 0  # sampling seed
    massive_k: int = 4  # massive-activation directions projected out of the candidates (0: Arditi et al. as is)
    massive_ratio: float = 5.0  # a position is massive when its norm is ≥ this × the prompt's median norm
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    def __post_init__(self) -> None:
        if isinstance(self.selection, dict):
            self.selection = SelectionConfig(**self.selection)
        # counts need no model: checked here, so a bad config fails before the model loads
        if self.n_train < 1 or self.n_val < 1:
            raise ConfigError(f"n_train and n_val must be positive, got {self.n_train} and {self.n_val}")

    def validate(self, n_layers: int, n_post_inst: int, harm_layers: tuple[int, ...] = ()) -> None:
        """Every setting against a model with ``n_layers`` layers and ``n_post_inst`` post-instruction tokens."""
        s = self.selection
        if self.n_train < 1 or self.n_val < 1:
            raise ConfigError(f"n_train and n_val must be positive, got {self.n_train} and {self.n_val}")
        if s.batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {s.batch_size}")
        if self.massive_k < 0 or self.massive_ratio <= 1:
            raise ConfigError(f"need massive_k >= 0 and massive_ratio > 1, got {self.massive_k} and {self.massive_ratio}")
        if not 0 <= s.prune_layer_fraction < 1:
            raise ConfigError(f"prune_layer_fraction must lie in [0, 1), got {s.prune_layer_fraction}")
        if s.max_kl < 0:
            raise ConfigError(f"max_kl must be non-negative, got {s.max_kl}")
        for what, layers in (("candidate layers", s.layers or ()), ("harm layers", harm_layers)):
            bad = [L for L in layers if not 0 <= L < n_layers]
            if bad:
                raise ConfigError(f"{what} {bad} out of range: the model has layers 0-{n_layers - 1}")
        if s.layers is not None and not s.layers:
            raise ConfigError("no candidate layers given")
        bad = [p for p in s.positions or () if not -n_post_inst <= p <= -1]
        if bad:
            raise ConfigError(f"positions {bad} out of range: the chat template has {n_post_inst} post-instruction "
                              f"tokens, so positions lie in -{n_post_inst}..-1")

    def to_dict(self) -> dict:
        return asdict(self)

    def identity(self, model: str, revision: str | None) -> dict:
        """The stage's identity: its settings and the exact weights (a re-tuned model never reuses old results)."""
        return self.to_dict() | {"model": model, "model_revision": revision}


@dataclass
class CalibrationConfig:
    """Activation-addition coefficient calibration: the smallest of ``coeffs`` whose addition of the refusal direction
    (at its layer, every position) makes at least ``target`` of ``n`` harmless prompts refused, judged on greedy
    generations. Calibrated on a validation split, never on a test split."""

    coeffs: tuple[float, ...] = (1.0, 1.25, 1.5, 2.0)  # activation-addition coefficients to try, e.g. '1,1.25,1.5,2'
    dataset: str = "harmless_val"  # harmless calibration prompts (never a test split)
    n: int = 100  # prompts sampled from the dataset
    seed: int = 0  # sampling seed
    target: float = 0.9  # refusal rate the coefficient must reach
    judge: str = "default"  # judge of the generations (see `refusal-sae eval --help`)
    max_new_tokens: int = 64
    batch_size: int = 32

    def __post_init__(self) -> None:
        self.coeffs = tuple(sorted(set(self.coeffs)))

    def validate(self, data_dir=None) -> None:
        from refusal_sae.data.registry import is_test_split

        if not self.coeffs:
            raise ConfigError("no activation-addition coefficients to try")
        if self.n < 1:
            raise ConfigError(f"n must be a positive number of prompts, got {self.n}")
        if not 0 < self.target <= 1:
            raise ConfigError(f"target must lie in (0, 1], got {self.target}")
        if is_test_split(self.dataset):
            raise ConfigError(f"{self.dataset} is a held-out test split; calibrate on a validation split (e.g. harmless_val)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HarmVsRefusalConfig:
    """Harm (t_inst) vs refusal direction per layer (uses the direction section's prompts)."""

    layers: tuple[int, ...] | None = None  # layers to compare (None: every layer)

    def __post_init__(self) -> None:
        if self.layers is not None:
            self.layers = tuple(self.layers)
            if not self.layers:
                raise ConfigError("layers is empty (omit it for every layer)")
