"""Settings of stages 3–5 (torch-free: the CLI reads its defaults here and checks them before the model loads).

- :class:`InteractionsConfig`: the factorization machine over the features left active by the minimal set's
  clamp, its linear-probe baseline, and the K sweep on held-out refused prompts (:mod:`.interactions`);
- :class:`DormantConfig`: critical-but-silent features, newly active features and the rounds of re-search
  (:mod:`.dormant`).

Both read held-out prompts (``datasets``: JailbreakBench + HarmBench test by default) only to evaluate: nothing in
these stages is fitted or chosen on them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from refusal_sae.errors import ConfigError

REDUCTIONS = ("max", "mean")
SET_NAMES = ("global", "minimal")
SCREENS = ("score", "none")
HELDOUT = ("jailbreakbench", "harmbench_test")


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
    n_heldout: int | None = None  # a seeded sample of each held-out set (None: every prompt)
    reduce: str = "max"  # over the post-instruction tokens: max | mean
    pool_size: int = 200  # features beside the minimal set
    label_threshold: float = 0.0  # refused ⇔ refusal score > this
    rank: int = 20  # FM embedding dimension (the paper: 20)
    lr: float = 1e-3  # the paper: 1e-3
    epochs: int = 20  # the paper: 20 (the epoch with the lowest validation loss is kept)
    fm_batch_size: int = 32
    weight_decay: float = 1e-4
    probe_cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)  # logistic-regression C grid, chosen by validation AUC
    n_boot: int = 1000  # bootstrap resamples (by prompt) for accuracy / AUC intervals
    top_pairs: int = 10
    heatmap_size: int = 30  # top FM features in the saved interaction matrix
    k_values: tuple[int, ...] | None = None  # K sweep; None: minimal size × 1, 2, 4, … and the pool size
    n_sweep: int = 80  # held-out refused prompts sampled for the K sweep
    n_random: int = 3  # random same-size sets per K (per-layer counts of the FM set, drawn from the pool)
    max_new_tokens: int = 64
    batch_size: int = 32
    judge: str = "default"
    seed: int = 0

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
                                  f"minimal set + pool_size); lower --k or raise --pool-size")
        _check_heldout(self.datasets)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DormantConfig:
    """Stages 4–5: features that carry refusal while silent, features the clamp wakes, and rounds of re-search.

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

    datasets: tuple[str, ...] = HELDOUT
    n_heldout: int | None = None  # a seeded sample of each held-out set (None: every prompt)
    n_prompts: int = 80
    sets: tuple[str, ...] = SET_NAMES
    screen: str = "score"
    label_threshold: float = 0.0
    max_rounds: int = 3
    min_drop: float = 0.1
    n_attribution: int | None = None  # harmful_train prompts per round (None: the search's)
    n_val: int | None = None  # harmful_val prompts per round, of which the refused ones are judged (None: the search's)
    ig_steps: int | None = None  # None: the search's
    n_random: int = 2
    max_new_tokens: int = 64
    batch_size: int = 32
    judge: str = "default"
    seed: int = 0

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
