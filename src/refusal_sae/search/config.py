"""Settings of the feature search (torch-free: the CLI reads its defaults here and checks them before any work)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from refusal_sae.errors import ConfigError

DIRECTION_SOURCES = ("selected", "per_layer")
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
    n_val: int = 39  # harmful_val prompts for choosing K* and c (all 39 by default)
    top_k: tuple[int, ...] = (10, 20, 30, 40, 50)  # the K* grid
    clamps: tuple[float, ...] = (0.0, -1.0, -3.0)  # c: 0 = zero-ablate, else multiply the activations by c
    n_random: int = 5  # random feature sets (same size, same layers, same clamp) per control
    max_random_flip: float = 0.05  # a (K*, c) whose random sets flip more validation prompts is not eligible
    max_degenerate: float = 0.10  # … nor one whose own clamp leaves more degenerate answers than this
    degenerate_bound: str = "ablation"  # ablation: the bound is the higher of max_degenerate and the direction
    #   ablation's own degenerate share on the same prompts | fixed: max_degenerate alone
    greedy_block: int = 5  # features removed together in the block pass
    greedy_tau: float = 0.1  # a block / feature is kept when removing it moves the mean refusal score by more
    greedy_taus: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)  # the tau sweep recorded beside the chosen tau
    greedy_seeds: int = 3  # random orders; the minimal set is their intersection
    n_card_prompts: int = 32  # feature cards: prompts per corpus dataset (harmful_train, harmless_train) + responses
    max_new_tokens: int = 64
    batch_size: int = 32
    judge: str = "default"
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
