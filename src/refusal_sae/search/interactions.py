"""Stage 3 (Prakash et al., "Beyond I'm Sorry, I Can't"): refusal rests on interactions between SAE features.

A second-order factorization machine (:mod:`.fm`) predicts, from SAE features, whether the model refuses; a linear
probe on the same inputs is its baseline; the FM's feature ranking is then tested causally (the K sweep).

**Rows.** Per prompt, two conditions: unclamped, and with the search's greedy minimal set clamped at the search's
``c`` (with the set clamped most harmful prompts are no longer refused, so the harmful prompts alone give both
classes). Fit: harmful_train + harmless_train; validation (early stopping, the probe's C): harmful_val +
harmless_val; held out: JailbreakBench + HarmBench test prompts the unclamped model refuses (judged) + harmless_test.

**Inputs.** Each pool feature's SAE code, max over the post-instruction tokens (the template tokens between the
instruction and the answer, where the refusal score and the refusal direction are read). Max, not mean: a feature
that fires on one of the five post-instruction tokens is present for the decision at the last one, and a mean would
scale it by how many of them it fires on; it is also the per-prompt reduction of the search's activation
statistics. Codes are read where the clamp acts (:mod:`.clamped`): a clamped feature enters with the value the
model carries on, ``c`` × its code; each feature is divided by its root mean square on the training rows (no
centring: zero keeps meaning "silent", which the FM's products rely on).

**Label.** Refused ⇔ refusal score > 0 (the log-odds of the refusal tokens at the last prompt position, from the
intervention engine), for every row: cheap for all four conditions, and the quantity the greedy search prunes by.
The K sweep's compliance, in contrast, is judged on greedy answers (the default judge).

**Pool.** The minimal set plus the ``pool_size`` features at the searched layers that fire (post-instruction max >
0) on the most harmful training prompts under the minimal set's clamp: the features "that stay active after
ablating the minimal set", ranked without the label so the pool is not chosen by the target, and frequent enough
that the FM sees them co-occur.

**K sweep.** On a seeded sample of the held-out refused prompts, the top K features of the FM ranking, of the
probe ranking, and ``n_random`` random sets (per-layer counts of the FM set, drawn from the pool) are clamped at
``c``; judged answers, Wilson intervals, McNemar-paired FM vs probe and FM vs each random set.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from refusal_sae.data import load_dataset
from refusal_sae.direction.result import DirectionResult
from refusal_sae.errors import ConfigError, DataError, MismatchError
from refusal_sae.interventions.engine import EngineConfig, InterventionEngine
from refusal_sae.models.handle import ModelHandle
from refusal_sae.runs import RunDir, StageResult, config_hash
from refusal_sae.runs.identity import settings_of
from refusal_sae.saes.loading import SaeSet
from refusal_sae.scoring.compare import PairedRow
from refusal_sae.scoring.judge import COMPLIED, DEGENERATE, REFUSED, Judge, get_judge
from refusal_sae.scoring.stats import wilson_interval
from refusal_sae.search.choose import val_refused
from refusal_sae.search.clamped import effective, reduced_codes
from refusal_sae.search.config import InteractionsConfig, SearchConfig, heldout_key, table_judged_same
from refusal_sae.search.featureset import FeatureSet, clamp_set
from refusal_sae.search.fm import (
    EpochRow,
    PairedDelta,
    SplitMetrics,
    fit_fm,
    fit_probe,
    pair_strengths,
    paired_delta,
    split_metrics,
    top_pairs,
)
from refusal_sae.search.result import CandidatesResult, ChoiceResult, GreedyResult

DATA = "search/interactions/data"
FM = "search/interactions/fm"
SWEEP = "search/interactions/ksweep"
HELDOUT_STAGE = "search/heldout"
SPLITS = ("train", "val", "test")


# --- what the search left in the run directory ------------------------------------------------------------------------
class EmptyMinimalSetError(DataError):
    """The search's greedy filtering kept no feature: stages 3 and 4 have no set to clamp (a result of the search, not a
    mistake in the settings; ``refusal-sae run`` reports it and goes on)."""


@dataclass
class SearchContext:
    """The feature search's results in a run directory, and the settings it ran with."""

    direction: DirectionResult
    cands: CandidatesResult
    choice: ChoiceResult
    greedy: GreedyResult
    cfg: SearchConfig
    upstream: dict

    @property
    def minimal(self) -> FeatureSet:
        return self.greedy.minimal

    @property
    def c(self) -> float:
        return self.greedy.c

    @property
    def layers(self) -> list[int]:
        return list(self.cands.layers)

    @classmethod
    def load(cls, run: RunDir) -> SearchContext:
        """Everything the search stage wrote, or one clear error naming the command that makes it."""
        direction = DirectionResult.from_run(run.root)
        hint = f"refusal-sae search --run-dir {run.root}"
        cands = run.require(CandidatesResult, hint, "search/candidates", "search result (search/candidates)")
        choice = run.require(ChoiceResult, hint, "search/choice", "search result (search/choice)")
        greedy = run.require(GreedyResult, hint, "search/greedy", "search result (search/greedy)")
        if not len(greedy.minimal):
            raise EmptyMinimalSetError(f"the search's minimal set in {run.root / 'search/greedy'} is empty: nothing to "
                                       "ablate")
        used = (GreedyResult.read_meta(run.root / "search/greedy") or {}).get("config", {})
        cfg = SearchConfig(**{k: v for k, v in used.items() if k in SearchConfig.__dataclass_fields__})
        stages = run.manifest().get("stages", {})
        upstream = {n: (stages.get(n) or {}).get("config_hash")
                    for n in ("direction", "search/candidates", "search/choice", "search/greedy")}
        return cls(direction, cands, choice, greedy, cfg, upstream)

    def check_saes(self, saes: SaeSet) -> None:
        missing = [L for L in self.layers if L not in saes.layers()]
        if missing:
            raise MismatchError(f"the search ran at SAE layers {self.layers}, but the SAEs given lack layers {missing}")

    def identity(self, handle: ModelHandle, saes: SaeSet) -> dict:
        return {"model_revision": handle.revision, "saes": saes.identity(), "upstream": self.upstream,
                "minimal": [list(x) for x in self.minimal], "c": self.c}


# --- held-out prompts the model refuses ----------------------------------------------------------------------------
@dataclass
class RefusedPrompts(StageResult):
    """``search/heldout``: the held-out harmful prompts the unclamped model refuses (judged greedy answers)."""

    kind = "refused_prompts"

    datasets: list[str]
    n_total: int
    refused: list[str]
    source: str  # where the judgements come from


def heldout_refused(handle: ModelHandle, run: RunDir, engine: InterventionEngine, judge: Judge,
                    datasets: Sequence[str], judge_name: str, max_new_tokens: int, batch_size: int,
                    data_dir=None, n: int | None = None, seed: int = 0) -> RefusedPrompts:
    """Loaded when complete; else taken from the search's held-out table when it judged the same prompts the same
    way, else judged here. ``n``: a seeded sample (``seed``) of that many prompts of each set (None: all)."""
    from refusal_sae.search.table import SearchTable

    held = heldout_key(datasets, judge_name, max_new_tokens, n, seed)
    identity = {"model_revision": handle.revision} | held

    def compute() -> RefusedPrompts:
        prompts = [p for d in datasets for p in load_dataset(d, data_dir).sample(n, seed).instructions]
        table = run.load(SearchTable, "search/table")
        used = (SearchTable.read_meta(run.root / "search/table") or {}).get("config", {})
        search = (GreedyResult.read_meta(run.root / "search/greedy") or {}).get("config", {})
        if (table is not None and table_judged_same(held, {"datasets": table.datasets, "n": used.get("n")}, search)
                and table.n_total == len(prompts) and used.get("model_revision") == handle.revision):
            first = table.rows[0].name
            refused = [g["instruction"] for g in table.generations if g["row"] == first]
            return RefusedPrompts(list(datasets), len(prompts), refused, "search/table (unclamped answers judged there)")
        refused = val_refused(engine, judge, prompts, max_new_tokens, batch_size)
        return RefusedPrompts(list(datasets), len(prompts), refused, "judged here")

    return run.run(RefusedPrompts, identity, compute, name=HELDOUT_STAGE)


def sample_prompts(prompts: Sequence[str], n: int, seed: int) -> list[str]:
    """A seeded sample of ``n`` prompts, in their original order (all of them when ``n`` ≥ their number)."""
    if n >= len(prompts):
        return list(prompts)
    return [prompts[i] for i in sorted(random.Random(seed).sample(range(len(prompts)), n))]


# --- the FM's rows ----------------------------------------------------------------------------------------------------
@dataclass
class InteractionData(StageResult):
    """``search/interactions/data``: the pool, and the inputs, refusal scores and labels of every row.

    Rows of a split with ``P`` prompts: ``r = condition × P + prompt`` (condition 0: unclamped, 1: minimal set
    clamped); ``x`` is already divided by ``scale``."""

    kind = "interactions_data"
    tensor_fields = ("x_train", "x_val", "x_test", "score_train", "score_val", "score_test", "y_train", "y_val", "y_test",
                     "freq", "scale")

    layers: list[int]
    c: float
    reduce: str
    label_threshold: float
    minimal: FeatureSet
    pool: FeatureSet  # the minimal set first, then the others by frequency under the clamp
    n_active: int  # features at the searched layers active under the clamp on ≥ 1 harmful training prompt
    prompts: dict[str, list[str]]
    harmful: dict[str, list[bool]]
    balance: dict[str, dict[str, int]]  # split → rows / refused, and refused per (harmful|harmless, clean|clamped)
    x_train: torch.Tensor
    x_val: torch.Tensor
    x_test: torch.Tensor
    score_train: torch.Tensor
    score_val: torch.Tensor
    score_test: torch.Tensor
    y_train: torch.Tensor  # 1: refused (refusal score > label_threshold)
    y_val: torch.Tensor
    y_test: torch.Tensor
    freq: torch.Tensor  # [n_pool] share of harmful training prompts each pool feature fires on under the clamp
    scale: torch.Tensor  # [n_pool] root mean square on the training rows

    def x(self, split: str) -> torch.Tensor:
        return getattr(self, f"x_{split}")

    def y(self, split: str) -> torch.Tensor:
        return getattr(self, f"y_{split}")

    def groups(self, split: str) -> np.ndarray:
        P = len(self.prompts[split])
        return np.arange(2 * P) % P


def labels(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Refused (1) ⇔ refusal score > ``threshold``."""
    return (scores > threshold).float()


def balance(y: torch.Tensor, harmful: Sequence[bool]) -> dict[str, int]:
    y = y.view(2, -1)
    h = torch.tensor(list(harmful))
    out = {"rows": int(y.numel()), "refused": int(y.sum())}
    for cond, name in enumerate(("clean", "clamped")):
        out[f"harmful_{name}_refused"] = int(y[cond][h].sum())
        out[f"harmless_{name}_refused"] = int(y[cond][~h].sum())
    out["n_harmful"], out["n_harmless"] = int(h.sum()), int((~h).sum())
    return out


def select_pool(clamped_harmful: torch.Tensor, layers: Sequence[int], minimal: FeatureSet, size: int
                ) -> tuple[FeatureSet, torch.Tensor, int]:
    """The minimal set plus the ``size`` features that fire on the most prompts of ``clamped_harmful`` ``[P,
    n_layers, d_sae]`` (ties: the larger mean code), with each pool feature's firing share and the number of
    features firing at all."""
    fires = (clamped_harmful > 0).float()
    freq = fires.mean(0)
    score = freq + 1e-6 * clamped_harmful.mean(0) / (clamped_harmful.mean(0).max() + 1e-12)
    for L, f in minimal:
        score[list(layers).index(L), f] = -1.0
    n_active = int((freq > 0).sum())
    others = int(((freq > 0) & (score >= 0)).sum())
    top = score.flatten().topk(min(size, others)).indices
    d = clamped_harmful.shape[-1]
    rest = [(layers[int(i) // d], int(i) % d) for i in top]
    pool = FeatureSet(tuple(minimal.items) + tuple(rest))
    return pool, torch.tensor([float(freq[list(layers).index(L), f]) for L, f in pool]), n_active


def pool_columns(codes: torch.Tensor, layers: Sequence[int], pool: FeatureSet) -> torch.Tensor:
    """``[P, n_pool]`` columns of ``codes [P, n_layers, d_sae]``."""
    rows = torch.tensor([list(layers).index(L) for L, _ in pool])
    cols = torch.tensor([f for _, f in pool])
    return codes[:, rows, cols]


def build_data(handle: ModelHandle, saes: Mapping[int, object], engine: InterventionEngine, ctx: SearchContext,
               cfg: InteractionsConfig, prompts: dict[str, tuple[list[str], list[str]]], progress: bool = True
               ) -> InteractionData:
    """Codes under both conditions, the pool, scores and labels (``prompts``: split → (harmful, harmless)).
    Raises :class:`DataError` before anything is saved when a split holds one class only."""
    layers, minimal, c = ctx.layers, ctx.minimal, ctx.c
    tokens = ctx.cands.refusal_tokens
    sets = [[], clamp_set(saes, minimal, c)]
    raw, scores, harmful_flags, texts = {}, {}, {}, {}
    for split in SPLITS:
        harmful, harmless = prompts[split]
        texts[split] = [*harmful, *harmless]
        harmful_flags[split] = [True] * len(harmful) + [False] * len(harmless)
        clean = reduced_codes(handle, saes, layers, texts[split], None, c, cfg.reduce, cfg.batch_size, progress,
                              f"{split}: SAE codes, unclamped")
        clamped = reduced_codes(handle, saes, layers, texts[split], minimal, c, cfg.reduce, cfg.batch_size, progress,
                                f"{split}: SAE codes, minimal set clamped")
        raw[split] = (clean, effective(clamped, layers, minimal, c))
        scores[split] = engine.score(texts[split], sets, tokens).float().flatten()  # condition-major rows
    n_h = len(prompts["train"][0])
    pool, freq, n_active = select_pool(raw["train"][1][:n_h], layers, minimal, cfg.pool_size)
    xs = {s: torch.cat([pool_columns(raw[s][0], layers, pool), pool_columns(raw[s][1], layers, pool)])
          for s in SPLITS}
    scale = xs["train"].pow(2).mean(0).sqrt()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    ys = {s: labels(scores[s], cfg.label_threshold) for s in SPLITS}
    bal = {s: balance(ys[s], harmful_flags[s]) for s in SPLITS}
    for s in SPLITS:
        y = ys[s]
        if y.min() == y.max():
            which = "refused" if y[0] > 0 else "not refused"
            raise DataError(f"the {s} split has one class only: all {len(y)} rows are {which} (label: refusal score > "
                            f"{cfg.label_threshold:g}, with and without the minimal set clamped at c = {c:g}); the FM "
                            "cannot be fitted or scored on it. Is the model a refusing chat model, and does the minimal "
                            "set flip its refusals? (--label-threshold moves the cut)")
    return InteractionData(
        layers=layers, c=c, reduce=cfg.reduce, label_threshold=cfg.label_threshold, minimal=minimal, pool=pool,
        n_active=n_active, prompts=texts, harmful=harmful_flags, balance=bal,
        x_train=xs["train"] / scale, x_val=xs["val"] / scale, x_test=xs["test"] / scale,
        score_train=scores["train"], score_val=scores["val"], score_test=scores["test"], y_train=ys["train"],
        y_val=ys["val"], y_test=ys["test"], freq=freq, scale=scale)


# --- the model -------------------------------------------------------------------------------------------------------
@dataclass
class PairRow:
    a: tuple[int, int]
    b: tuple[int, int]
    weight: float  # ⟨v_a, v_b⟩
    mean_term: float  # ⟨v_a, v_b⟩ · mean x_a x_b on the training rows (its mean push on the logit)
    strength: float  # |⟨v_a, v_b⟩| · mean |x_a x_b|
    both_active: float  # share of training rows where both fire


@dataclass
class InteractionModel(StageResult):
    """``search/interactions/fm``: the fitted FM and probe, their accuracy / AUC, rankings, top pairs, heatmap."""

    kind = "interactions_fm"
    tensor_fields = ("fm_w0", "fm_w", "fm_v", "probe_coef", "fm_contribution", "probe_contribution", "heatmap")

    rank: int
    curve: list[EpochRow]
    best_epoch: int
    probe_c: float
    probe_val_auc: dict[str, float]
    metrics: dict[str, dict[str, SplitMetrics]]  # model ("FM" / "linear probe") → split → metrics
    paired: dict[str, PairedDelta]  # split → FM − probe
    fm_ranking: FeatureSet  # pool by FM contribution to refusal, largest first
    probe_ranking: FeatureSet
    pairs: list[PairRow]
    heatmap_features: FeatureSet  # the top FM-ranked features, rows/columns of `heatmap`
    fm_w0: torch.Tensor
    fm_w: torch.Tensor
    fm_v: torch.Tensor
    probe_coef: torch.Tensor
    fm_contribution: torch.Tensor  # [n_pool] mean φ_i over refused training rows (pool order)
    probe_contribution: torch.Tensor
    heatmap: torch.Tensor  # [h, h] mean pair terms ⟨v_i, v_j⟩ · mean x_i x_j of the heatmap features


def ranking(pool: FeatureSet, contribution: torch.Tensor) -> FeatureSet:
    order = torch.argsort(contribution, descending=True, stable=True)
    return FeatureSet(tuple(pool.items[int(i)] for i in order))


def fit_models(data: InteractionData, cfg: InteractionsConfig) -> InteractionModel:
    torch.manual_seed(cfg.seed)
    x = {s: data.x(s).float() for s in SPLITS}
    y = {s: data.y(s) for s in SPLITS}
    fit = fit_fm(x["train"], y["train"], x["val"], y["val"], cfg.rank, cfg.lr, cfg.epochs, cfg.fm_batch_size,
                 cfg.weight_decay, cfg.seed)
    fm = fit.model
    probe = fit_probe(x["train"].numpy(), y["train"].numpy(), x["val"].numpy(), y["val"].numpy(), cfg.probe_cs,
                      cfg.seed)
    metrics: dict[str, dict[str, SplitMetrics]] = {"FM": {}, "linear probe": {}}
    paired = {}
    with torch.no_grad():
        for s in SPLITS:
            yy, g = y[s].numpy(), data.groups(s)
            lf = fm(x[s]).double().numpy()
            lp = probe.logits(x[s].double().numpy())
            metrics["FM"][s] = split_metrics(yy, lf, g, cfg.n_boot, cfg.seed)
            metrics["linear probe"][s] = split_metrics(yy, lp, g, cfg.n_boot, cfg.seed)
            paired[s] = paired_delta(yy, lf, lp, g, cfg.n_boot, cfg.seed)
        refused = y["train"] > 0.5
        fm_contrib = fm.contributions(x["train"][refused]).mean(0)
        probe_contrib = (x["train"][refused].double() * torch.from_numpy(probe.coef)).mean(0).float()
        gram = fm.gram()
        strength, term = pair_strengths(gram, x["train"])
        active = (x["train"] != 0).float()
        both = (active.T @ active) / len(active)
    pool = data.pool
    fm_rank, probe_rank = ranking(pool, fm_contrib), ranking(pool, probe_contrib)
    pairs = [PairRow(pool.items[i], pool.items[j], float(gram[i, j]), float(term[i, j]), float(strength[i, j]),
                     float(both[i, j])) for i, j in top_pairs(strength, cfg.top_pairs)]
    heat = fm_rank.take(cfg.heatmap_size)
    idx = torch.tensor([pool.items.index(f) for f in heat])
    return InteractionModel(
        rank=cfg.rank, curve=fit.curve, best_epoch=fit.best_epoch, probe_c=probe.c, probe_val_auc=probe.val_auc,
        metrics=metrics, paired=paired, fm_ranking=fm_rank, probe_ranking=probe_rank, pairs=pairs,
        heatmap_features=heat, fm_w0=fm.w0.detach().reshape(1), fm_w=fm.w.detach(), fm_v=fm.v.detach(),
        probe_coef=torch.from_numpy(probe.coef).float(), fm_contribution=fm_contrib, probe_contribution=probe_contrib,
        heatmap=term[idx][:, idx].contiguous())


# --- the K sweep -----------------------------------------------------------------------------------------------------
def k_values(cfg: InteractionsConfig, n_minimal: int, n_pool: int) -> list[int]:
    """The configured K values, or the minimal-set size doubled until the pool, and the pool size; every K must fit
    in the pool."""
    if cfg.k_values is not None:
        ks = list(cfg.k_values)
        if max(ks) > n_pool:
            raise ConfigError(f"K = {max(ks)} is larger than the pool ({n_pool} features: the minimal set and the "
                              f"{n_pool - n_minimal} features active under its clamp); lower --k-values")
        return ks
    ks, k = [], max(1, n_minimal)
    while k < n_pool:
        ks.append(k)
        k *= 2
    return [*ks, n_pool]


def pool_draws(pool: FeatureSet, like: FeatureSet, n: int, seed: int) -> list[FeatureSet]:
    """``n`` random sets with ``like``'s per-layer counts, drawn from the pool's features at each layer (``like``'s
    own features may be drawn: the null is "any K of the pool")."""
    rng = random.Random(seed)
    by_layer = pool.by_layer()
    return [FeatureSet(tuple((L, f) for L, count in like.layer_counts().items()
                             for f in rng.sample(list(by_layer[L]), count))) for _ in range(n)]


@dataclass
class KSweepPoint(StageResult):
    """``search/interactions/ksweep/k<K>`` (and ``…/reference``: the minimal set): the sets clamped at one K and
    their judged answers (resumable per K)."""

    kind = "interactions_ksweep_point"
    jsonl_fields = ("generations",)

    k: int
    sets: dict[str, FeatureSet]
    labels: dict[str, list[str]]
    generations: list[dict] = field(default_factory=list)  # {set, instruction, completion, judgement}


def sweep_point(engine: InterventionEngine, judge: Judge, saes: Mapping[int, object], prompts: Sequence[str],
                k: int, sets: dict[str, FeatureSet], c: float, max_new_tokens: int, batch_size: int,
                progress: bool = True) -> KSweepPoint:
    """Judged answers under each named set; identical sets are generated once."""
    unique: dict[frozenset, FeatureSet] = {}
    for fs in sets.values():
        unique.setdefault(frozenset(fs.items), fs)
    keys = list(unique)
    outs = engine.generate(prompts, [clamp_set(saes, unique[key], c) for key in keys], max_new_tokens, batch_size,
                           progress, f"K = {k}")
    judged = {key: [j.label for j in judge.judge(prompts, o)] for key, o in zip(keys, outs, strict=True)}
    texts = dict(zip(keys, outs, strict=True))
    labels_by = {name: judged[frozenset(fs.items)] for name, fs in sets.items()}
    gens = [{"set": name, "instruction": p, "completion": o, "judgement": lab}
            for name, fs in sets.items()
            for p, o, lab in zip(prompts, texts[frozenset(fs.items)], labels_by[name], strict=True)]
    return KSweepPoint(k, dict(sets), labels_by, gens)


@dataclass
class SweepRow:
    k: int
    ranking: str  # FM | linear probe | random | minimal set | unintervened
    n_features: int
    n: int
    complied: int
    degenerate: int
    refused: int
    complied_ci: tuple[float, float]
    degenerate_ci: tuple[float, float]
    draws: list[float] = field(default_factory=list)  # random: complied rate of each draw
    overlap_fm: int | None = None  # features shared with the FM's top K


@dataclass
class KSweepResult(StageResult):
    """``search/interactions/ksweep``: compliance per K of FM top-K vs probe top-K vs random, held out."""

    kind = "interactions_ksweep"

    datasets: list[str]
    n_refused: int  # held-out prompts the unclamped model refuses
    prompts: list[str]  # the seeded sample judged at every K
    c: float
    ks: list[int]
    rows: list[SweepRow]
    paired: list[PairedRow]  # each with its k


def sweep_row(k: int, name: str, n_features: int, labs: Sequence[str], overlap: int | None = None) -> SweepRow:
    n = len(labs)
    c, d, r = (sum(x == lab for x in labs) for lab in (COMPLIED, DEGENERATE, REFUSED))
    return SweepRow(k, name, n_features, n, c, d, r, wilson_interval(c, n), wilson_interval(d, n), overlap_fm=overlap)


def summarize_sweep(points: Sequence[KSweepPoint], reference: KSweepPoint, prompts: Sequence[str], datasets,
                    n_refused: int, c: float) -> KSweepResult:
    n = len(prompts)
    rows = [SweepRow(0, "unintervened", 0, n, 0, 0, n, wilson_interval(0, n), wilson_interval(0, n))]
    m = reference.sets["minimal set"]
    rows.append(sweep_row(len(m), "minimal set", len(m), reference.labels["minimal set"]))
    paired = []
    for pt in points:
        fm_set = pt.sets["FM"]
        rows.append(sweep_row(pt.k, "FM", len(fm_set), pt.labels["FM"], pt.k))
        probe = pt.sets["linear probe"]
        rows.append(sweep_row(pt.k, "linear probe", len(probe), pt.labels["linear probe"],
                              len(set(probe.items) & set(fm_set.items))))
        draws = [name for name in pt.sets if name.startswith("random")]
        pooled = [x for name in draws for x in pt.labels[name]]
        row = sweep_row(pt.k, "random", pt.k, pooled)
        row.n_features = pt.k
        row.draws = [sum(x == COMPLIED for x in pt.labels[name]) / n for name in draws]
        row.overlap_fm = round(sum(len(set(pt.sets[name].items) & set(fm_set.items)) for name in draws) / len(draws))
        rows.append(row)
        paired += [PairedRow.compare("FM", name, prompts, pt.labels["FM"], pt.labels[name], k=pt.k)
                   for name in ("linear probe", *draws)]
    return KSweepResult(list(datasets), n_refused, list(prompts), c, [pt.k for pt in points], rows, paired)


# --- the stage -----------------------------------------------------------------------------------------------------------
def load_prompts(cfg: InteractionsConfig, heldout: RefusedPrompts, data_dir=None) -> dict[str, tuple[list[str], list[str]]]:
    """split → (harmful, harmless) prompts: training and validation splits to fit and choose, the held-out ones to
    score."""
    def sample(name: str, n: int) -> list[str]:
        return load_dataset(name, data_dir).sample(n, cfg.seed).instructions

    return {"train": (sample("harmful_train", cfg.n_train), sample("harmless_train", cfg.n_train)),
            "val": (sample("harmful_val", cfg.n_val), sample("harmless_val", cfg.n_val)),
            "test": (list(heldout.refused), sample("harmless_test", cfg.n_test_harmless))}




def run_interactions_stage(handle: ModelHandle, saes: SaeSet, run: RunDir, cfg: InteractionsConfig, data_dir=None,
                           progress: bool = True) -> tuple[InteractionData, InteractionModel, KSweepResult]:
    """Stage 3 in ``run`` (``search/heldout``, ``search/interactions/{data,fm,ksweep}``), each sub-stage (and each
    K of the sweep) skipped when complete for the same settings and upstream results."""
    saes.validate(handle)
    ctx = SearchContext.load(run)
    cfg.validate(len(ctx.minimal) + cfg.pool_size)
    ctx.check_saes(saes)
    judge = get_judge(cfg.judge)
    run.record_model(handle)
    engine = InterventionEngine(handle, EngineConfig(prompt_batch_size=cfg.batch_size))
    base = ctx.identity(handle, saes)
    heldout = heldout_refused(handle, run, engine, judge, cfg.datasets, cfg.judge, cfg.max_new_tokens, cfg.batch_size,
                              data_dir, cfg.n_heldout, cfg.seed)
    data_id = base | settings_of(cfg, "data") | {"heldout": config_hash({"p": heldout.refused})}
    data = run.run(InteractionData, data_id,
                   lambda: build_data(handle, saes, engine, ctx, cfg, load_prompts(cfg, heldout, data_dir), progress),
                   name=DATA)
    ks = k_values(cfg, len(ctx.minimal), len(data.pool))
    fm_id = data_id | settings_of(cfg, "fm")
    model = run.run(InteractionModel, fm_id, lambda: fit_models(data, cfg), name=FM)
    prompts = sample_prompts(heldout.refused, cfg.n_sweep, cfg.seed)
    sweep_id = fm_id | settings_of(cfg, "sweep")

    def point(k: int, sets: dict[str, FeatureSet], folder: str) -> KSweepPoint:
        return run.run(KSweepPoint, sweep_id | {"k": k, "sets": {n: [list(x) for x in s] for n, s in sets.items()}},
                       lambda: sweep_point(engine, judge, saes, prompts, k, sets, ctx.c, cfg.max_new_tokens,
                                           cfg.batch_size, progress), name=f"{SWEEP}/{folder}")

    reference = point(len(ctx.minimal), {"minimal set": ctx.minimal}, "reference")
    points = []
    for k in tqdm(ks, desc="K sweep", unit="K", disable=not progress):
        fm_set = model.fm_ranking.take(k)
        sets = {"FM": fm_set, "linear probe": model.probe_ranking.take(k)}
        sets |= {f"random {i + 1}": s for i, s in enumerate(pool_draws(data.pool, fm_set, cfg.n_random, cfg.seed + k))}
        points.append(point(k, sets, f"k{k}"))
    summary = run.run(KSweepResult, sweep_id | {"ks": ks},
                      lambda: summarize_sweep(points, reference, prompts, cfg.datasets, len(heldout.refused), ctx.c),
                      name=SWEEP)
    return data, model, summary
