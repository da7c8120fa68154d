"""Settings of SAE training and of the text it reads (torch-free: the CLI reads its defaults here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from refusal_sae.errors import ConfigError

TRAIN_DATASETS = ("harmful_train", "harmless_train")
DEFAULT_WIDTH, DEFAULT_K = 4608, 32  # train-sae defaults (the committed SAEs use 2560 and 48-128: README)


@dataclass
class CorpusConfig:
    datasets: tuple[str, ...] = TRAIN_DATASETS
    n_prompts: int | None = 256  # per dataset; None = all
    with_responses: bool = True
    max_new_tokens: int = 64
    max_len: int = 256  # tokens per sequence (prompt + response), truncated on the right
    gen_batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        self.datasets = tuple(self.datasets)
        if not self.datasets:
            raise ConfigError("no datasets given for the SAE corpus")
        if self.n_prompts is not None and self.n_prompts < 1:
            raise ConfigError(f"n_prompts must be positive, got {self.n_prompts}")
        if self.max_len < 2:
            raise ConfigError(f"max_len must be at least 2, got {self.max_len}")

    def to_dict(self) -> dict:
        return asdict(self)



@dataclass
class PositionFilter:
    exclude_first: bool = True  # each sequence's first real token (BOS or the first template token)
    outlier_factor: float | None = 10.0  # norm > factor x median norm of the batch at that layer; None = off

    def __post_init__(self) -> None:
        if self.outlier_factor is not None and self.outlier_factor <= 1:
            raise ConfigError(f"outlier_factor must be > 1 (or None), got {self.outlier_factor}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SaeTrainConfig:
    training_tokens: int = 1_000_000  # per SAE (kept tokens, after padding / massive-norm exclusion)
    batch_size: int = 4096  # tokens per optimiser step
    lr: float = 2e-4
    warmup_fraction: float = 0.05
    decay_fraction: float = 0.2  # linear decay to 0 over the last fraction of steps
    aux_loss_coefficient: float = 1.0  # TopK auxiliary (dead-latent) loss, sae-lens' default
    dead_tokens: int = 200_000  # a latent counts as dead (and enters the aux loss) after this many tokens unfired
    normalize_activations: bool = True  # sae-lens "expected_average_only_in", folded into the weights at the end
    norm_estimate_batches: int = 8
    layers_per_chunk: int = 4
    prompt_batch_size: int = 16
    buffer_tokens: int = 32768
    activation_cache_gb: float = 4.0  # replay the corpus' activations from memory after epoch 1 when they fit
    save_dtype: str = "float16"  # weights on disk; cfg.json keeps float32, so sae-lens loads them as fp32
    seed: int = 0
    positions: PositionFilter = field(default_factory=PositionFilter)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)

    def __post_init__(self) -> None:
        if isinstance(self.positions, dict):
            self.positions = PositionFilter(**self.positions)
        if isinstance(self.corpus, dict):
            self.corpus = CorpusConfig(**self.corpus)
        if self.save_dtype not in ("float16", "float32", "bfloat16"):
            raise ConfigError(f"save_dtype must be float16, bfloat16 or float32, got {self.save_dtype!r}")
        if self.batch_size < 1 or self.training_tokens < self.batch_size:
            raise ConfigError(f"training_tokens ({self.training_tokens}) must be at least one batch ({self.batch_size})")
        if self.layers_per_chunk < 1:
            raise ConfigError("layers_per_chunk must be positive")

    @property
    def steps(self) -> int:
        return self.training_tokens // self.batch_size

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SaeMetricsConfig:
    """The held-out text the SAEs are measured on and how (the settings of `refusal-sae sae-metrics`)."""

    datasets: tuple[str, ...] = ("harmful_val", "harmless_val")  # non-test, non-training prompt sets
    n_prompts: int = 32  # per dataset
    max_new_tokens: int = 64  # greedy response tokens appended to each prompt (cached in <run>/responses)
    max_len: int = 256  # tokens per sequence (prompt + response), truncated beyond
    batch_size: int = 8  # sequences per forward batch
    outlier_factor: float | None = 10.0  # massive-norm positions excluded (None: off)
    keep_first: bool = False  # keep each sequence's first token (excluded by default: BOS-like, massive norm)
    seed: int = 0  # sampling seed
    ce_batches: int | None = None  # batches for loss recovered (None: every batch)

    def __post_init__(self) -> None:
        self.datasets = tuple(self.datasets)
        self.corpus()  # its checks
        self.positions()
        if self.batch_size < 1 or (self.ce_batches is not None and self.ce_batches < 1):
            raise ConfigError("batch_size and ce_batches must be positive")

    def corpus(self) -> CorpusConfig:
        return CorpusConfig(datasets=self.datasets, n_prompts=self.n_prompts, max_new_tokens=self.max_new_tokens,
                            max_len=self.max_len, seed=self.seed)

    def positions(self) -> PositionFilter:
        return PositionFilter(exclude_first=not self.keep_first, outlier_factor=self.outlier_factor)

    def to_dict(self) -> dict:
        return asdict(self)
