"""Stage 2 end to end: candidates → choice of ``K*`` and ``c`` → greedy minimal set → feature cards, each a typed
result in ``<run>/search/`` that is skipped when complete for the same settings, weights, SAEs and direction.

The shape of :mod:`refusal_sae.direction.runner`: a torch-free config (:mod:`.config`), the prompts it reads
(:class:`SearchPrompts`, training and validation splits only), functions ``(handle, saes, prompts, config) ->
Result`` for each sub-stage, and :func:`run_search_stage`, which validates everything before the first forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from refusal_sae.data import load_dataset
from refusal_sae.direction.diff_in_means import DirectionCandidates
from refusal_sae.direction.result import DirectionResult
from refusal_sae.direction.runner import CANDIDATES
from refusal_sae.errors import ConfigError
from refusal_sae.interventions.directional import DirectionAblation
from refusal_sae.interventions.engine import EngineConfig, InterventionEngine
from refusal_sae.models.handle import ModelHandle
from refusal_sae.runs import RunDir, config_hash
from refusal_sae.runs.checkpoint import Checkpoint
from refusal_sae.runs.identity import settings_of
from refusal_sae.saes.config import CorpusConfig
from refusal_sae.saes.loading import SaeSet
from refusal_sae.scoring.judge import get_judge
from refusal_sae.search.activations import prompt_codes
from refusal_sae.search.attribution import la_ig
from refusal_sae.search.candidates import act_diff, decoder_cosines, prefilter_mask, ranked
from refusal_sae.search.choose import choose_k_and_clamp, counts, judged, val_refused
from refusal_sae.search.config import SearchConfig
from refusal_sae.search.featureset import clamp_set
from refusal_sae.search.greedy import greedy_filter, intersect
from refusal_sae.search.result import CandidatesResult, ChoiceResult, FeatureCards, GreedyResult
from refusal_sae.search.table import SearchTable, build_table

RULE = ("eligible: degenerate ≤ the bound (max_degenerate, or the direction ablation's degenerate share when higher) "
        "and mean random-set flip ≤ max_random_flip; chosen: most complied, then smaller K, then milder clamp")

CHOICE_PARTIAL = "choice.partial.json"  # the choice's judged sets so far (removed when the choice is saved)


@dataclass
class SearchPrompts:
    """Seeded samples of training and validation splits (the held-out table reads the test splits, not this)."""

    attribution: list[str]  # harmful_train: global attribution, ActDiff, greedy pruning
    harmless: list[str]  # harmless_train: ActDiff
    val: list[str]  # harmful_val: K*, c and the greedy confirmation

    @classmethod
    def load(cls, cfg: SearchConfig, data_dir=None) -> SearchPrompts:
        return cls(load_dataset("harmful_train", data_dir).sample(cfg.n_attribution, cfg.seed).instructions,
                   load_dataset("harmless_train", data_dir).sample(cfg.n_harmless, cfg.seed).instructions,
                   load_dataset("harmful_val", data_dir).sample(cfg.n_val, cfg.seed).instructions)


def per_layer_directions(direction: DirectionResult, cands: DirectionCandidates, layers: list[int],
                         n_layers: int) -> dict[int, torch.Tensor]:
    """Each SAE layer's own difference-in-means vector at the chosen position: ``resid_post`` of layer L is
    ``resid_pre`` of L + 1 (the last layer keeps the selected direction)."""
    return {L: (cands.get(direction.pos, L + 1) if L + 1 < n_layers else direction.direction).float() for L in layers}


def find_candidates(handle: ModelHandle, saes: SaeSet, prompts: SearchPrompts, cfg: SearchConfig,
                    direction: DirectionResult, cands: DirectionCandidates, progress: bool = True) -> CandidatesResult:
    layers = list(cfg.layers or saes.layers())
    cos_sel = decoder_cosines(saes, layers, dict.fromkeys(layers, direction.direction))
    cos_pl = decoder_cosines(saes, layers, per_layer_directions(direction, cands, layers, handle.n_layers))
    cos = cos_sel if cfg.direction_source == "selected" else cos_pl
    mask = prefilter_mask(cos, cfg.k_per_layer)
    attr = la_ig(handle, saes, layers, direction.direction, prompts.attribution, direction.refusal_tokens,
                 cfg.ig_steps, max(1, cfg.batch_size // 2), progress).mean(0)
    harmful = prompt_codes(handle, saes, layers, prompts.attribution, cfg.batch_size)
    harmless = prompt_codes(handle, saes, layers, prompts.harmless, cfg.batch_size)
    diff = act_diff(harmful.max_codes, harmless.max_codes)
    k_max = max(cfg.top_k)
    positive = attr.clamp(min=0)
    share = {name: float(positive[prefilter_mask(c, cfg.k_per_layer)].sum() / positive.sum().clamp_min(1e-12))
             for name, c in (("selected", cos_sel), ("per_layer", cos_pl))}
    return CandidatesResult(
        layers=layers, direction_source=cfg.direction_source, n_attribution=len(prompts.attribution),
        n_harmless=len(prompts.harmless), refusal_tokens=list(direction.refusal_tokens), cosines=cos_sel,
        cosines_per_layer=cos_pl, attribution=attr, act_diff=diff,
        prefilter=ranked(cos, layers, int(mask.sum()), mask), ours=ranked(attr, layers, int(mask.sum()), mask),
        cossim=ranked(cos, layers, k_max), actdiff=ranked(diff, layers, k_max), ap=ranked(attr, layers, k_max),
        alive={L: ids.tolist() for L, ids in harmful.fired().items()}, prefilter_attribution_share=share)


def choose(handle: ModelHandle, saes: SaeSet, prompts: SearchPrompts, cfg: SearchConfig, cands: CandidatesResult,
           direction: DirectionResult, checkpoint: Checkpoint | None = None) -> ChoiceResult:
    """K* and c on the validation prompts; ``checkpoint`` keeps every judged set as it is made (an interrupted
    choice — the search's longest part — resumes at the next grid cell or random control)."""
    engine = InterventionEngine(handle, EngineConfig(prompt_batch_size=cfg.batch_size))
    judge = get_judge(cfg.judge)
    refused = val_refused(engine, judge, prompts.val, cfg.max_new_tokens, cfg.batch_size)
    (abl,) = judged(engine, judge, refused, [[DirectionAblation(direction.direction)]], cfg.max_new_tokens,
                    cfg.batch_size, "direction ablation", checkpoint, ["ablation"])
    ablation = dict(zip(("complied", "degenerate", "refused"), counts(abl), strict=True))
    bound = cfg.max_degenerate
    if cfg.degenerate_bound == "ablation":
        bound = max(bound, ablation["degenerate"] / len(refused))
    alive = {L: torch.tensor(ids) for L, ids in cands.alive.items()}
    rows, best, met = choose_k_and_clamp(engine, judge, saes, refused, cands.ours, alive, cfg.top_k, cfg.clamps,
                                         cfg.n_random, cfg.max_random_flip, bound, cfg.seed,
                                         cfg.max_new_tokens, cfg.batch_size, checkpoint)
    return ChoiceResult(len(prompts.val), len(refused), rows, best.k, best.c, met, RULE, bound, ablation,
                        prompts=list(refused), ablation_labels=list(abl))


def minimal_set(handle: ModelHandle, saes: SaeSet, prompts: SearchPrompts, cfg: SearchConfig, cands: CandidatesResult,
                choice: ChoiceResult, progress: bool = True) -> GreedyResult:
    engine = InterventionEngine(handle, EngineConfig(prompt_batch_size=cfg.batch_size))
    start = cands.ours.take(choice.k)
    chains = [(s, cfg.greedy_tau) for s in range(cfg.seed, cfg.seed + cfg.greedy_seeds)]
    chains += [(cfg.seed, tau) for tau in cfg.greedy_taus if tau != cfg.greedy_tau]
    traces = greedy_filter(engine, saes, prompts.attribution, cands.refusal_tokens, start, choice.c, chains,
                           cfg.greedy_block, progress)
    at_tau = traces[: cfg.greedy_seeds]
    minimal = intersect(at_tau)
    sweep = sorted(({"tau": t.tau, "size": len(t.kept), "score": t.path[-1].score, "flipped": t.path[-1].flipped}
                    for t in [traces[0], *traces[cfg.greedy_seeds:]]), key=lambda r: r["tau"])
    judge = get_judge(cfg.judge)
    refused = val_refused(engine, judge, prompts.val, cfg.max_new_tokens, cfg.batch_size)
    full, small = judged(engine, judge, refused, [clamp_set(saes, start, choice.c), clamp_set(saes, minimal, choice.c)],
                         cfg.max_new_tokens, cfg.batch_size, "greedy confirmation")
    confirm = {name: dict(zip(("complied", "degenerate", "refused"), counts(lab), strict=True))
               for name, lab in (("full", full), ("minimal", small))}
    ratio = confirm["minimal"]["complied"] / max(confirm["full"]["complied"], 1)
    return GreedyResult(start, choice.c, cfg.greedy_tau, traces, minimal, sweep, confirm, ratio)


def feature_cards(handle: ModelHandle, saes: SaeSet, run: RunDir, cfg: SearchConfig, cands: CandidatesResult,
                  greedy: GreedyResult, data_dir=None) -> FeatureCards:
    from refusal_sae.saes.corpus import build_sequences
    from refusal_sae.saes.features import top_activations

    corpus = CorpusConfig(n_prompts=cfg.n_card_prompts, seed=cfg.seed)
    seqs = build_sequences(handle, corpus, data_dir, run.path("responses"), progress=False)
    cards, cosine = [], {}
    for L, ids in greedy.minimal.by_layer().items():
        cards += top_activations(handle, saes[L], saes.hook_of(L), ids, seqs, top_n=8, window=8, progress=False)
        row = cands.layers.index(L)
        cosine |= {f"{L}:{f}": float(cands.cosines[row, f]) for f in ids}
    return FeatureCards(cards, cosine)


def identity(handle: ModelHandle, saes: SaeSet, direction: DirectionResult, cfg: SearchConfig, result: str) -> dict:
    """What a sub-result depends on: the weights, the SAEs, the direction, and the settings its fields declare
    (:func:`refusal_sae.runs.identity.settings_of`)."""
    return {"model": handle.name, "model_revision": handle.revision, "saes": saes.identity(),
            "direction_hash": config_hash({"d": direction.direction.tolist()}), **settings_of(cfg, result)}


def run_search_stage(handle: ModelHandle, saes: SaeSet, run: RunDir, cfg: SearchConfig, data_dir=None,
                     progress: bool = True) -> tuple[CandidatesResult, ChoiceResult, GreedyResult, FeatureCards]:
    """The whole search in ``run`` (``search/candidates``, ``search/choice``, ``search/greedy``, ``search/cards``)."""
    saes.validate(handle)
    cfg.validate(saes.layers())
    get_judge(cfg.judge)
    direction = DirectionResult.from_run(run.root)
    cands_path = run.root / DirectionResult.kind / CANDIDATES
    prompts = SearchPrompts.load(cfg, data_dir)
    run.record_model(handle)
    run.record_saes(saes)

    def ident(result: str) -> dict:
        return identity(handle, saes, direction, cfg, result)

    cands = run.run(CandidatesResult, ident("candidates"), lambda: find_candidates(
        handle, saes, prompts, cfg, direction, DirectionCandidates.load(cands_path), progress), name="search/candidates")
    partial = Checkpoint(run.path("search/choice") / CHOICE_PARTIAL, ident("choice"))
    choice = run.run(ChoiceResult, ident("choice"),
                     lambda: choose(handle, saes, prompts, cfg, cands, direction, partial), name="search/choice")
    partial.clear()
    chosen = {"k": choice.k, "c": choice.c}
    greedy = run.run(GreedyResult, ident("greedy") | chosen,
                     lambda: minimal_set(handle, saes, prompts, cfg, cands, choice, progress), name="search/greedy")
    cards = run.run(FeatureCards, ident("cards") | chosen,
                    lambda: feature_cards(handle, saes, run, cfg, cands, greedy, data_dir), name="search/cards")
    return cands, choice, greedy, cards


TEST_SETS = ("jailbreakbench", "harmbench_test")


def run_table_stage(handle: ModelHandle, saes: SaeSet, run: RunDir, datasets: tuple[str, ...] = TEST_SETS,
                    n_harmless: int = 64, data_dir=None, progress: bool = True, n: int | None = None) -> SearchTable:
    """The held-out comparison table (``search/table``) from the run's search results; the only sub-stage that reads
    test splits, and it reads them after every choice was made. ``n``: a seeded sample of that many prompts of each
    held-out set (None: all of them)."""
    saes.validate(handle)
    if not datasets:
        raise ConfigError("no held-out datasets given")
    if n_harmless < 1:
        raise ConfigError(f"n_harmless must be positive, got {n_harmless}")
    if n is not None and n < 1:
        raise ConfigError(f"n must be positive, got {n}")
    direction = DirectionResult.from_run(run.root)
    hint = f"refusal-sae search --run-dir {run.root}"
    cands = run.require(CandidatesResult, hint, "search/candidates")
    choice = run.require(ChoiceResult, hint, "search/choice")
    greedy = run.require(GreedyResult, hint, "search/greedy")
    used = {**(ChoiceResult.read_meta(run.root / "search/choice") or {}).get("config", {}),  # the search's settings
            **(GreedyResult.read_meta(run.root / "search/greedy") or {}).get("config", {})}
    cfg = SearchConfig(**{k: v for k, v in used.items() if k in SearchConfig.__dataclass_fields__})
    prompts = [p for d in datasets for p in load_dataset(d, data_dir).sample(n, cfg.seed).instructions]
    harmless = load_dataset("harmless_test", data_dir).sample(n_harmless, cfg.seed).instructions
    identity = {"model_revision": handle.revision, "saes": saes.identity(), "datasets": list(datasets),
                "n_harmless": n_harmless, "upstream": {s: (run.manifest().get("stages", {}).get(s) or {}).get("config_hash")
                                                       for s in ("direction", "search/candidates", "search/choice",
                                                                 "search/greedy")},
                **({"n": n} if n is not None else {})}  # only when sampled: full-size tables keep their hash
    engine = InterventionEngine(handle, EngineConfig(prompt_batch_size=cfg.batch_size))

    def compute() -> SearchTable:
        return build_table(handle, saes, engine, get_judge(cfg.judge), direction, cands, choice, greedy, prompts,
                           harmless, datasets, cfg.n_random, cfg.ig_steps, cfg.k_per_layer, cfg.seed,
                           cfg.max_new_tokens, cfg.batch_size, progress)

    return run.run(SearchTable, identity, compute, name="search/table")
