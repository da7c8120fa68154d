"""Settings of stages 2-4 (torch-free: the CLI reads its defaults here and checks them before any work): the feature
search and its held-out table (:class:`SearchConfig`, :class:`SearchTableConfig`), and on top of them
- :class:`InteractionsConfig`: the factorization machine over the features left active by the minimal set's
  clamp, its linear-probe baseline, and the K sweep on held-out refused prompts (:mod:`.interactions`);
- :class:`DormantConfig`: critical-but-silent features, newly active features and the rounds of re-search
  (:mod:`.dormant`).

Both read held-out prompts (``datasets``: JailbreakBench + HarmBench test by default) only to evaluate: nothing in
these stages is fitted or chosen on them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from refusal_sae.errors import ConfigError
from refusal_sae.runs.identity import part_of

DIRECTION_SOURCES = ("selected", "per_layer")
# which of the search's sub-results (candidates → choice → greedy → cards) a setting changes; unmarked: all of them
FROM_CHOICE, CHOICE_ONLY = part_of("choice", "greedy", "cards"), part_of("choice")
FROM_GREEDY, NO_RESULT = part_of("greedy", "cards"), part_of()
DEGENERATE_BOUNDS = ("ablation", "fixed")


@dataclass
class SearchConfig:
    """Stage 2: SAE features that carry refusal.

    Candidates: the ``k_per_layer`` features of each searched SAE whose decoder rows are closest (cosine) to the
    refusal direction, ranked by LA-IG attribution (``ig_steps`` interpolation steps between the clean run and the
    run with the direction ablated everywhere). The global set is the top ``K*`` by mean attribution over
    ``n_attribution`` harmful_train prompts; ``K*`` and the clamp ``c`` are chosen on ``n_val`` harmful_val prompts
    by a rule fixed here (:mod:`refusal_sae.search.choose`); greedy filtering then prunes the global set to a minimal
    one. Nothing in this stage reads a test split; the held-out table is :mod:`refusal_sae.search.table`.
    """

    layers: tuple[int, ...] | None = None  # SAE layers to search (None: every SAE of the set)
    k_per_layer: int = 10  # decoder-cosine prefilter: candidates per layer
    direction_source: str = "selected"  # selected: the run's direction at every layer | per_layer: each layer's own
    ig_steps: int = 10  # LA-IG interpolation steps
    n_attribution: int = 32  # harmful_train prompts attributed for the global set and the baselines
    n_harmless: int = 64  # harmless_train prompts for the ActDiff baseline
    n_val: int = field(default=39, metadata=FROM_CHOICE)  # harmful_val prompts for choosing K* and c (all 39 by
    #   default)
    top_k: tuple[int, ...] = (10, 20, 30, 40, 50)  # the K* grid
    clamps: tuple[float, ...] = field(default=(0.0, -1.0, -3.0), metadata=CHOICE_ONLY)  # c: 0 = zero-ablate, else
    #   multiply the activations by c
    n_random: int = field(default=5, metadata=CHOICE_ONLY)  # random feature sets (same size, same layers, same
    #   clamp) per control
    max_random_flip: float = field(default=0.05, metadata=CHOICE_ONLY)  # a (K*, c) whose random sets flip more
    #   validation prompts is not eligible
    max_degenerate: float = field(default=0.10, metadata=CHOICE_ONLY)  # … nor one whose own clamp leaves more
    #   degenerate answers than this
    degenerate_bound: str = field(default="ablation", metadata=CHOICE_ONLY)  # ablation: the bound is the higher of
    #   max_degenerate and the direction
    #   ablation's own degenerate share on the same prompts | fixed: max_degenerate alone
    greedy_block: int = field(default=5, metadata=FROM_GREEDY)  # features removed together in the block pass
    greedy_tau: float = field(default=0.1, metadata=FROM_GREEDY)  # a block / feature is kept when removing it moves
    #   the mean refusal score by more
    greedy_taus: tuple[float, ...] = field(default=(0.05, 0.1, 0.2, 0.4), metadata=FROM_GREEDY)  # the tau sweep
    #   recorded beside the chosen tau
    greedy_seeds: int = field(default=3, metadata=FROM_GREEDY)  # random orders; the minimal set is their intersection
    n_card_prompts: int = field(default=32, metadata=part_of("cards", only_when_changed=True))  # feature cards:
    #   prompts per corpus dataset (harmful_train, harmless_train) + responses
    max_new_tokens: int = field(default=64, metadata=FROM_CHOICE)
    batch_size: int = field(default=32, metadata=NO_RESULT)
    judge: str = field(default="default", metadata=FROM_CHOICE)
    seed: int = 0

    def __post_init__(self) -> None:
        self.layers = None if self.layers is None else tuple(self.layers)
        self.top_k = tuple(sorted(set(self.top_k)))
        self.clamps = tuple(dict.fromkeys(float(c) for c in self.clamps))
        self.greedy_taus = tuple(sorted(set(self.greedy_taus) | {self.greedy_tau}))

    def validate(self, sae_layers: tuple[int, ...] | None = None) -> None:
        """Every setting (and, given the SAE layers, the searched layers and the size of the pool) before any work."""
        ints = {"k_per_layer": self.k_per_layer, "ig_steps": self.ig_steps, "n_attribution": self.n_attribution,
                "n_harmless": self.n_harmless, "n_val": self.n_val, "n_random": self.n_random,
                "greedy_block": self.greedy_block, "greedy_seeds": self.greedy_seeds,
                "n_card_prompts": self.n_card_prompts,
                "max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size}
        bad = [f"{k}={v}" for k, v in ints.items() if v < 1]
        if bad:
            raise ConfigError(f"these settings must be positive: {', '.join(bad)}")
        if self.direction_source not in DIRECTION_SOURCES:
            raise ConfigError(f"direction_source must be one of {DIRECTION_SOURCES}, not {self.direction_source!r}")
        if self.degenerate_bound not in DEGENERATE_BOUNDS:
            raise ConfigError(f"degenerate_bound must be one of {DEGENERATE_BOUNDS}, not {self.degenerate_bound!r}")
        if not self.top_k or min(self.top_k) < 1:
            raise ConfigError(f"top_k sizes must be positive, got {self.top_k}")
        if not self.clamps or not all(math.isfinite(c) for c in self.clamps):
            raise ConfigError(f"clamps must be finite numbers, got {self.clamps}")
        if any(c == 1.0 for c in self.clamps):
            raise ConfigError("a clamp of 1 leaves the features unchanged; use 0 (zero-ablate) or a negative multiplier")
        if self.greedy_tau < 0 or min(self.greedy_taus) < 0:
            raise ConfigError("greedy tau must be non-negative")
        for name in ("max_random_flip", "max_degenerate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must lie in [0, 1]")
        if sae_layers is None:
            return
        layers = self.layers if self.layers is not None else sae_layers
        missing = [L for L in layers if L not in sae_layers]
        if missing:
            raise ConfigError(f"no SAE at layers {missing}; the SAEs cover layers {list(sae_layers)}")
        if not layers:
            raise ConfigError("no SAE layers to search")
        pool = self.k_per_layer * len(layers)
        if max(self.top_k) > pool:
            raise ConfigError(f"K* = {max(self.top_k)} is larger than the candidate pool ({self.k_per_layer} per layer × "
                              f"{len(layers)} layers = {pool}); lower --top-k or raise --k-per-layer")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchTableConfig:
    """The feature search's held-out comparison table (:mod:`refusal_sae.search.table`): the only search step that
    reads test splits, after every choice was made on training and validation splits."""

    datasets: tuple[str, ...] = ("jailbreakbench", "harmbench_test")  # held-out harmful sets
    n: int | None = None  # a seeded sample of this many prompts of each held-out set (None: every prompt)
    n_harmless: int = 64  # harmless_test prompts for the capability cost

    def __post_init__(self) -> None:
        self.datasets = tuple(self.datasets)
        if not self.datasets:
            raise ConfigError("datasets is empty: name the held-out harmful sets, e.g. [jailbreakbench]")
        if self.n is not None and self.n < 1:
            raise ConfigError(f"n must be positive, got {self.n}")
        if self.n_harmless < 1:
            raise ConfigError(f"n_harmless must be positive, got {self.n_harmless}")


# --- stages 3-4: interactions, dormant features -----------------------------------------------------------------
REDUCTIONS = ("max", "mean")
SET_NAMES = ("global", "minimal")
SCREENS = ("score", "none")
HELDOUT = ("jailbreakbench", "harmbench_test")
# which sub-results a setting changes (interactions: data → fm → sweep; unmarked settings: every one)
FM_ON, SWEEP_ONLY = part_of("fm", "sweep"), part_of("sweep")


def _check_heldout(datasets: tuple[str, ...]) -> None:
    from refusal_sae.data.registry import dataset_names, is_test_split

    if not datasets:
        raise ConfigError("no held-out datasets given")
    known = set(dataset_names())
    bad = [d for d in datasets if d in known and not is_test_split(d)]
    if bad:
        raise ConfigError(f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not held-out test split(s); the "
                          "held-out evaluation needs prompts no fit or choice has seen (e.g. jailbreakbench, "
                          "harmbench_test, or a file of your own)")


def _check_positive(**values) -> None:
    bad = [f"{k}={v}" for k, v in values.items() if v is not None and v < 1]
    if bad:
        raise ConfigError(f"these settings must be positive: {', '.join(bad)}")


@dataclass
class InteractionsConfig:
    """Stage 3: a second-order factorization machine (FM) predicts refusal from SAE features; its ranking is
    tested causally against a linear probe's and random sets'.

    Rows: ``n_train`` harmful_train and ``n_train`` harmless_train prompts (fit), ``n_val`` of harmful_val and of
    harmless_val (early stopping, the probe's regularisation), the held-out refused prompts and ``n_test_harmless``
    harmless_test prompts (held-out accuracy and AUC only), each under two conditions: unclamped and with the
    search's minimal set clamped at its chosen ``c``. Inputs: each pool feature's SAE code reduced (``reduce``) over
    the post-instruction tokens; a clamped feature enters with its clamped value (``c`` × code). Label: refusal
    score (log-odds of the refusal tokens at the last prompt position) > ``label_threshold``.

    ``n_heldout``: a seeded sample (``seed``) of that many prompts of each held-out set, as the search's table takes
    one (``search_table.n``); with the same sample, judge and answer length the table's judgements are reused.

    Pool: the minimal set plus the ``pool_size`` features (at the searched layers) that fire most often on the
    harmful training prompts under the minimal set's clamp (label-free, so the pool is not chosen by the target).
    """

    n_train: int = 128  # per class: harmful_train, harmless_train
    n_val: int = 39  # per class: harmful_val (39 in all), harmless_val
    n_test_harmless: int = 64  # harmless_test prompts among the held-out rows
    datasets: tuple[str, ...] = HELDOUT  # held-out harmful prompts (those the model refuses are used)
    n_heldout: int | None = field(default=None, metadata=NO_RESULT)  # a seeded sample of each held-out set (None:
    #   every prompt)
    reduce: str = "max"  # over the post-instruction tokens: max | mean
    pool_size: int = 200  # features beside the minimal set
    label_threshold: float = 0.0  # refused ⇔ refusal score > this
    rank: int = field(default=20, metadata=FM_ON)  # FM embedding dimension (the paper: 20)
    lr: float = field(default=1e-3, metadata=FM_ON)  # the paper: 1e-3
    epochs: int = field(default=20, metadata=FM_ON)  # the paper: 20 (the epoch with the lowest validation loss is kept)
    fm_batch_size: int = field(default=32, metadata=FM_ON)
    weight_decay: float = field(default=1e-4, metadata=FM_ON)
    probe_cs: tuple[float, ...] = field(default=(0.01, 0.1, 1.0, 10.0), metadata=FM_ON)  # logistic-regression C
    #   grid, chosen by validation AUC
    n_boot: int = field(default=1000, metadata=FM_ON)  # bootstrap resamples (by prompt) for accuracy / AUC intervals
    top_pairs: int = field(default=10, metadata=FM_ON)
    heatmap_size: int = field(default=30, metadata=FM_ON)  # top FM features in the saved interaction matrix
    k_values: tuple[int, ...] | None = field(default=None, metadata=NO_RESULT)  # K sweep; None: minimal size × 1,
    #   2, 4, … and the pool size
    n_sweep: int = field(default=80, metadata=SWEEP_ONLY)  # held-out refused prompts sampled for the K sweep
    n_random: int = field(default=3, metadata=SWEEP_ONLY)  # random same-size sets per K (per-layer counts of the FM
    #   set, drawn from the pool)
    max_new_tokens: int = field(default=64, metadata=SWEEP_ONLY)  # greedy tokens per judged answer
    batch_size: int = 32  # prompts per forward batch
    judge: str = field(default="default", metadata=SWEEP_ONLY)  # judge of the generations
    seed: int = 0  # sampling / FM / random-set seed

    def __post_init__(self) -> None:
        self.datasets = tuple(self.datasets)
        self.probe_cs = tuple(float(c) for c in self.probe_cs)
        self.k_values = None if self.k_values is None else tuple(sorted(set(self.k_values)))

    def validate(self, pool_max: int | None = None) -> None:
        """Every setting; given ``pool_max`` (minimal-set size + ``pool_size``), the K values against it."""
        if self.rank < 1:
            raise ConfigError(f"the FM rank (embedding dimension) must be positive, got {self.rank}")
        _check_positive(n_train=self.n_train, n_val=self.n_val, n_test_harmless=self.n_test_harmless,
                        n_heldout=self.n_heldout, pool_size=self.pool_size, epochs=self.epochs,
                        fm_batch_size=self.fm_batch_size, n_boot=self.n_boot, top_pairs=self.top_pairs,
                        heatmap_size=self.heatmap_size, n_sweep=self.n_sweep, n_random=self.n_random,
                        max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
        if self.reduce not in REDUCTIONS:
            raise ConfigError(f"reduce must be one of {REDUCTIONS}, not {self.reduce!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be non-negative, got {self.weight_decay}")
        if not math.isfinite(self.label_threshold):
            raise ConfigError("label_threshold must be a finite number")
        if not self.probe_cs or min(self.probe_cs) <= 0:
            raise ConfigError(f"probe C values must be positive, got {self.probe_cs}")
        if self.k_values is not None:
            if not self.k_values or min(self.k_values) < 1:
                raise ConfigError(f"K values must be positive, got {self.k_values}")
            if pool_max is not None and max(self.k_values) > pool_max:
                raise ConfigError(f"K = {max(self.k_values)} is larger than the pool (at most {pool_max} features: the "
                                  f"minimal set + pool_size); lower --k-values or raise --pool-size")
        _check_heldout(self.datasets)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DormantConfig:
    """Stage 4: features that carry refusal while silent, features the clamp wakes, and rounds of re-search.

    - **held out**: the prompts of ``datasets`` (a seeded sample of ``n_heldout`` each) the unclamped model refuses,
      judged once and shared with :class:`InteractionsConfig` (``search/heldout``);
    - **critical-but-silent**: on ``n_prompts`` held-out refused prompts (the K sweep's sample), each set of
      ``sets`` (``global``: the search's top K*; ``minimal``: the greedy minimal set) is clamped at ``c`` and
      judged; on the prompts it flips, every member's removal is scored (refusal score) and, with ``screen =
      "score"``, the removals that bring the score above ``label_threshold`` are judged on greedy answers
      (``"none"``: every removal is judged). A member is silent on a prompt when its code is zero at every prompt
      position of the unclamped run.
    - **newly active**: features zero at every prompt position of the unclamped run that fire under the minimal
      set's clamp, by position kind; beside ``n_random`` random sets of the same per-layer sizes.
    - **rounds**: up to ``max_rounds`` rounds of LA-IG candidates (on the clamped model) + greedy filtering,
      stopping when the mean refusal score on the training prompts falls by less than ``min_drop``; each round
      judged on the validation prompts the model refuses (``n_val`` harmful_val prompts sampled; ``max_rounds =
      0``: no rounds).
    """

    datasets: tuple[str, ...] = field(default=HELDOUT, metadata=part_of("silent", "newly"))  # held-out harmful sets
    #   (comma-separated); the prompts the unclamped model
    #   refuses are used
    n_heldout: int | None = field(default=None, metadata=NO_RESULT)  # a seeded sample of each held-out set (None:
    #   every prompt)
    n_prompts: int = field(default=80, metadata=part_of("silent", "newly"))  # held-out refused prompts (seeded
    #   sample; the K sweep's with the same seed)
    sets: tuple[str, ...] = field(default=SET_NAMES, metadata=part_of("silent"))  # found sets tested for critical-
    #   but-silent members: global (top K*), minimal
    screen: str = field(default="score", metadata=part_of("silent"))  # score: judge only the removals whose refusal
    #   score exceeds the threshold | none: judge
    #   every removal
    label_threshold: float = field(default=0.0, metadata=part_of("silent"))  # refusal-score threshold of the screen
    max_rounds: int = field(default=3, metadata=part_of("rounds"))  # rounds of re-search on top of the minimal set
    #   (0: none)
    min_drop: float = field(default=0.1, metadata=part_of("rounds"))  # rounds stop when the mean refusal score
    #   falls by less
    n_attribution: int | None = field(default=None, metadata=part_of("rounds"))  # harmful_train prompts per round
    #   (None: the search's)
    n_val: int | None = field(default=None, metadata=part_of("rounds"))  # harmful_val prompts per round, of which
    #   the refused ones are judged (None: the search's)
    ig_steps: int | None = field(default=None, metadata=part_of("rounds"))  # None: the search's
    n_random: int = field(default=2, metadata=part_of("newly", "rounds"))  # random same-size sets per control
    max_new_tokens: int = field(default=64, metadata=part_of("silent", "rounds"))  # greedy tokens per judged answer
    batch_size: int = 32  # prompts per forward batch
    judge: str = field(default="default", metadata=part_of("silent", "rounds"))  # judge of the generations
    seed: int = 0  # sampling / random-set seed

    def __post_init__(self) -> None:
        self.datasets = tuple(self.datasets)
        self.sets = tuple(dict.fromkeys(self.sets))

    def validate(self) -> None:
        _check_positive(n_heldout=self.n_heldout, n_prompts=self.n_prompts, n_random=self.n_random,
                        max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                        n_attribution=self.n_attribution, ig_steps=self.ig_steps, n_val=self.n_val)
        if self.max_rounds < 0:
            raise ConfigError(f"max_rounds must be non-negative, got {self.max_rounds}")
        if not self.sets or any(s not in SET_NAMES for s in self.sets):
            raise ConfigError(f"sets must be taken from {SET_NAMES}, got {self.sets}")
        if self.screen not in SCREENS:
            raise ConfigError(f"screen must be one of {SCREENS}, not {self.screen!r}")
        if not (math.isfinite(self.min_drop) and self.min_drop >= 0):
            raise ConfigError(f"min_drop must be non-negative, got {self.min_drop}")
        if not math.isfinite(self.label_threshold):
            raise ConfigError("label_threshold must be a finite number")
        _check_heldout(self.datasets)

    def to_dict(self) -> dict:
        return asdict(self)


def heldout_key(datasets, judge: str, max_new_tokens: int, n: int | None = None, seed: int = 0) -> dict:
    """What the shared ``search/heldout`` result (the held-out prompts the unclamped model refuses) depends on; the
    sample's size and seed only when sampled (full-size results keep their hash)."""
    return {"datasets": list(datasets), "judge": judge, "max_new_tokens": max_new_tokens,
            **({"n": n, "seed": seed} if n is not None else {})}


def heldout_settings(cfg: InteractionsConfig | DormantConfig) -> dict:
    return heldout_key(cfg.datasets, cfg.judge, cfg.max_new_tokens, cfg.n_heldout, cfg.seed)


def table_judged_same(held: dict, table: dict, search: dict) -> bool:
    """Whether the search's held-out table (``table``: its ``datasets`` and ``n``; ``search``: the search's ``seed``,
    ``judge`` and ``max_new_tokens``) judged the prompts of ``held`` (:func:`heldout_settings`) the same way, so its
    unclamped judgements can be reused."""
    n = held.get("n")
    return (list(table.get("datasets") or ()) == held["datasets"] and table.get("n") == n
            and search.get("judge") == held["judge"] and search.get("max_new_tokens") == held["max_new_tokens"]
            and (n is None or search.get("seed") == held["seed"]))
