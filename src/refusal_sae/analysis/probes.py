"""§3 of stage 5: linear probes of "will the model refuse" that generalise out of distribution (Yeo et al.).

Logistic regressions (scikit-learn, standardised inputs, C chosen on validation) on the *last prompt token*:

- **(a)** the SAE codes of refusal features (the search's greedy minimal set, its global set, and the upstream
  analysis's shared refusal features, whichever exist);
- **(b)** ``n_random`` random sets of the same per-layer sizes, drawn from the features active at the last token of
  the training prompts (a dead feature is a constant column, which would make the control trivially weak);
- **(c)** the dense residual stream at the layer with the best validation accuracy. The reference notebook scores
  the dense probe of whichever layer its training loop ended on (the last); here the chosen layer's probe is the one
  tested, and every layer's validation score is kept.

Target: 1 = the model refuses (judged greedy answer), 0 = it does not. Training: refused harmful_train vs not-refused
harmless_train; validation: harmful_val / harmless_val likewise; in distribution: held-out plain instructions the model
refuses vs harmless_test it answers; out of distribution: held-out jailbreak-wrapped prompts the model does not refuse
(0) vs the held-out plain refused ones (1) — or any prompt file with labels from the model's judged answers. Accuracy
and AUC with 95% bootstrap intervals (resampling test prompts), and the OOD gain of (a) over (b) and (c) with paired
bootstrap intervals (the same resamples for both probes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from refusal_sae.analysis.config import TEST_SETS, ProbeConfig
from refusal_sae.analysis.jailbreaks import CONTROL, AnswerCache, JailbreakResult, answer_cache
from refusal_sae.data import load_dataset
from refusal_sae.errors import ConfigError, DataError
from refusal_sae.models.formatting import length_sorted_batches
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import hook_name
from refusal_sae.runs import Float, RunDir, StageResult
from refusal_sae.scoring.judge import REFUSED
from refusal_sae.search.featureset import FeatureSet, random_sets
from refusal_sae.search.result import CandidatesResult, ChoiceResult, GreedyResult

SET_WHAT = {"minimal": "the search's greedy minimal set", "global": "the search's global set (top K*)",
            "shared": "the upstream analysis's refusal features (shared by most per-prompt sets)"}


# --- activations ----------------------------------------------------------------------------------------------------------
@dataclass
class LastToken:
    """Last-prompt-token activations: the residual stream after every layer and the SAE codes at ``sae_layers``."""

    resid: torch.Tensor  # [N, n_layers, d_model]
    codes: torch.Tensor  # [N, n_sae_layers, d_sae]
    sae_layers: list[int]

    def features(self, fs: FeatureSet) -> np.ndarray:
        """``[N, len(fs)]`` codes of the features of ``fs``."""
        idx = [self.sae_layers.index(L) for L, _ in fs]
        ids = [f for _, f in fs]
        return self.codes[:, idx, ids].numpy()

    def alive(self) -> dict[int, torch.Tensor]:
        """Layer → features active at the last token of at least one prompt."""
        on = (self.codes > 0).any(0)
        return {L: on[i].nonzero().flatten() for i, L in enumerate(self.sae_layers)}


@torch.no_grad()
def last_token(handle: ModelHandle, saes: Mapping[int, object], sae_layers: Sequence[int], prompts: Sequence[str],
               batch_size: int = 32) -> LastToken:
    names = [hook_name(L) for L in range(handle.n_layers)]
    formatted = [handle.format(p) for p in prompts]
    d_sae = int(saes[sae_layers[0]].cfg.d_sae)
    resid = torch.zeros(len(prompts), handle.n_layers, handle.d_model)
    codes = torch.zeros(len(prompts), len(sae_layers), d_sae)
    for idx in length_sorted_batches([len(p) for p in formatted], batch_size):
        acts = handle.cache_activations(handle.batch([formatted[i] for i in idx]), names)
        resid[idx] = torch.stack([acts[n][:, -1].float().cpu() for n in names], dim=1)
        for j, L in enumerate(sae_layers):
            sae = saes[L]
            codes[idx, j] = sae.encode(acts[names[L]][:, -1].to(sae.W_dec.dtype)).float().cpu()
    return LastToken(resid, codes, list(sae_layers))


# --- probes ---------------------------------------------------------------------------------------------------------------
def fit_probe(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, cs: Sequence[float], seed: int = 0):
    """Standardised logistic regression; C from ``cs`` by validation accuracy (then AUC, then the smaller C).
    Returns (pipeline, C, validation accuracy, validation AUC)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best = None
    for c in cs:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=seed))
        model.fit(x, y)
        p = model.predict_proba(x_val)[:, 1]
        key = (accuracy(p, y_val), auc(p, y_val), -c)
        if best is None or key > best[0]:
            best = (key, model, c)
    (acc, au, _), model, c = best
    return model, c, acc, au


def accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float(((p > 0.5) == (y == 1)).mean())


def auc(p: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def bootstrap(probs: Mapping[str, list[np.ndarray]], y: np.ndarray, n_boot: int, seed: int
              ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per probe, the accuracy and AUC on ``n_boot`` resamples of the test prompts (the same resamples for every
    probe, so differences are paired). A probe with several draws (the random sets) scores the mean over its draws."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))
    out = {}
    for name, draws in probs.items():
        accs, aucs = np.zeros(n_boot), np.zeros(n_boot)
        for b in range(n_boot):
            yb = y[idx[b]]
            accs[b] = np.mean([accuracy(p[idx[b]], yb) for p in draws])
            aucs[b] = np.mean([auc(p[idx[b]], yb) for p in draws])
        out[name] = (accs, aucs)
    return out


def interval(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if not len(v):
        return (float("nan"), float("nan"))
    return (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))


# --- data -------------------------------------------------------------------------------------------------------------------
@dataclass
class Split:
    prompts: list[str]
    y: np.ndarray
    groups: list[str]  # what each prompt is (harmful / harmless / a jailbreak family's judgement ...)
    dropped: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {"n": len(self.prompts), "positive": int(self.y.sum()), "negative": int(len(self.y) - self.y.sum()),
                **{f"dropped {k}": v for k, v in self.dropped.items()}}


def labelled(cache: AnswerCache, harmful: Sequence[str], harmless: Sequence[str], desc: str) -> Split:
    """Refused harmful prompts (1) and not-refused harmless prompts (0); the others are dropped and counted."""
    hl = cache.labels(harmful, f"{desc} harmful answers") if harmful else []
    nl = cache.labels(harmless, f"{desc} harmless answers") if harmless else []
    pos = [p for p, lab in zip(harmful, hl, strict=True) if lab == REFUSED]
    neg = [p for p, lab in zip(harmless, nl, strict=True) if lab != REFUSED]
    return Split(pos + neg, np.array([1] * len(pos) + [0] * len(neg)), ["harmful"] * len(pos) + ["harmless"] * len(neg),
                 {"harmful not refused": len(harmful) - len(pos), "harmless refused": len(harmless) - len(neg)})


def ood_from_jailbreaks(jb: JailbreakResult, positives: Sequence[str]) -> Split:
    """Wrapped prompts the model does not refuse (0, grouped by their judgement) and the held-out refused plain
    instructions (1). The neutral control wrapper is no jailbreak and is left out."""
    neg = [r for r in jb.rows if r["judgement"] != REFUSED and r["family"] != CONTROL]
    return Split(list(positives) + [r["prompt"] for r in neg], np.array([1] * len(positives) + [0] * len(neg)),
                 ["plain refused"] * len(positives) + [f"wrapped {r['judgement']}" for r in neg],
                 {"wrapped refused": sum(r["judgement"] == REFUSED and r["family"] != CONTROL for r in jb.rows)})


def ood_from_file(cache: AnswerCache, prompts: Sequence[str], families: Sequence[str]) -> Split:
    labels = cache.labels(prompts, "OOD answers")
    y = np.array([int(lab == REFUSED) for lab in labels])
    return Split(list(prompts), y, [f"{fam} {lab}" for fam, lab in zip(families, labels, strict=True)])


# --- results ---------------------------------------------------------------------------------------------------------------
@dataclass
class ProbeRow:
    probe: str
    what: str
    test: str  # in_distribution | ood
    n_features: int
    C: float
    layer: int | None
    val_accuracy: float
    n: int
    n_positive: int
    accuracy: float
    accuracy_ci: tuple[Float, Float]
    auc: Float
    auc_ci: tuple[Float, Float]
    group_accuracy: dict[str, float]
    draws: list[float] | None = None  # random sets: accuracy of each draw


@dataclass
class GainRow:
    test: str
    a: str
    b: str
    accuracy_diff: float
    accuracy_ci: tuple[Float, Float]
    auc_diff: Float
    auc_ci: tuple[Float, Float]


@dataclass
class ProbeResult(StageResult):
    """``analysis/probes``: the probe table (in and out of distribution), gains, and every test prediction."""

    kind = "analysis_probes"
    jsonl_fields = ("predictions",)

    labels: str
    ood_source: str
    feature_sets: dict[str, FeatureSet]
    random_sets: dict[str, list[FeatureSet]]
    skipped: dict[str, str]
    dense_layer: int
    dense_layers: list[dict]  # per layer: C, validation accuracy and AUC
    counts: dict[str, dict[str, int]]
    rows: list[ProbeRow]
    gains: list[GainRow]
    predictions: list[dict] = field(default_factory=list)  # {test, prompt, label, group, <probe>: P(refuse)}


# --- the analysis ----------------------------------------------------------------------------------------------------------
@dataclass
class ProbeInputs:
    train: Split
    val: Split
    test: Split
    ood: Split
    ood_source: str
    feature_sets: dict[str, FeatureSet]
    skipped: dict[str, str]


def probe_analysis(handle: ModelHandle, saes: Mapping[int, object], sae_layers: Sequence[int], inputs: ProbeInputs,
                   cfg: ProbeConfig, progress: bool = True) -> ProbeResult:
    """Activations of every split, then :func:`score_probes`."""
    from tqdm.auto import tqdm

    splits = {"train": inputs.train, "val": inputs.val, "in_distribution": inputs.test, "ood": inputs.ood}
    for name, s in splits.items():
        if s.y.sum() == 0 or s.y.sum() == len(s.y):
            raise DataError(f"the {name} prompts hold one class only ({s.counts()}): no probe can be fitted or scored")
    acts = {name: last_token(handle, saes, sae_layers, s.prompts, cfg.batch_size)
            for name, s in tqdm(splits.items(), desc="last-token activations", disable=not progress)}
    return score_probes(acts, inputs, cfg)


def score_probes(acts: Mapping[str, LastToken], inputs: ProbeInputs, cfg: ProbeConfig) -> ProbeResult:
    """Fit every probe on ``acts["train"]`` (C, and the dense layer, on ``acts["val"]``), score it on
    ``acts["in_distribution"]`` and ``acts["ood"]`` with bootstrap intervals, and the gains of each feature set over
    its random sets and over the dense probe."""
    splits = {"train": inputs.train, "val": inputs.val, "in_distribution": inputs.test, "ood": inputs.ood}
    n_layers, d_model = acts["train"].resid.shape[1:]
    tr, va = inputs.train, inputs.val
    alive = acts["train"].alive()
    probs: dict[str, dict[str, list[np.ndarray]]] = {"in_distribution": {}, "ood": {}}
    meta: dict[str, dict] = {}
    draws_of: dict[str, list[FeatureSet]] = {}

    def add(name: str, what: str, sets: list[FeatureSet] | None, layer: int | None = None) -> None:
        rows_p = {"in_distribution": [], "ood": []}
        cs, vals = [], []
        for fs in sets if sets is not None else [None]:
            get = (lambda a, fs=fs: a.features(fs)) if fs is not None else (lambda a: a.resid[:, layer].numpy())
            model, c, vacc, _ = fit_probe(get(acts["train"]), tr.y, get(acts["val"]), va.y, cfg.cs, cfg.seed)
            cs.append(c)
            vals.append(vacc)
            for t in rows_p:
                rows_p[t].append(model.predict_proba(get(acts[t]))[:, 1])
        for t in rows_p:
            probs[t][name] = rows_p[t]
        meta[name] = {"what": what, "n_features": len(sets[0]) if sets else int(d_model), "C": float(np.median(cs)),
                      "layer": layer, "val_accuracy": float(np.mean(vals))}

    for name, fs in inputs.feature_sets.items():
        add(name, SET_WHAT[name], [fs])
        draws_of[name] = random_sets(alive, fs, cfg.n_random, cfg.seed + len(fs))
        if any(len(d) < len(fs) for d in draws_of[name]):
            raise DataError(f"too few active features at some layer to draw random sets as large as {name}")
        add(f"random ({name} size)", f"{cfg.n_random} random sets of the per-layer sizes of {name}, from features "
            "active at the last token of the training prompts", draws_of[name])
    dense_rows = []
    for L in range(int(n_layers)):
        _, c, vacc, vauc = fit_probe(acts["train"].resid[:, L].numpy(), tr.y, acts["val"].resid[:, L].numpy(), va.y,
                                     cfg.cs, cfg.seed)
        dense_rows.append({"layer": L, "C": c, "val_accuracy": vacc, "val_auc": vauc})
    best = max(dense_rows, key=lambda r: (r["val_accuracy"], np.nan_to_num(r["val_auc"]), -r["layer"]))
    add("dense", f"residual stream after layer {best['layer']} (chosen on validation)", None, best["layer"])
    rows, gains, preds = [], [], []
    for t, split in (("in_distribution", inputs.test), ("ood", inputs.ood)):
        boots = bootstrap(probs[t], split.y, cfg.n_boot, cfg.seed)
        for name, ps in probs[t].items():
            m = meta[name]
            accs = [accuracy(p, split.y) for p in ps]
            members = {g: np.array([x == g for x in split.groups]) for g in dict.fromkeys(split.groups)}
            groups = {g: float(np.mean([accuracy(p[mask], split.y[mask]) for p in ps])) for g, mask in members.items()}
            rows.append(ProbeRow(name, m["what"], t, m["n_features"], m["C"], m["layer"], m["val_accuracy"],
                                 len(split.y), int(split.y.sum()), float(np.mean(accs)), interval(boots[name][0]),
                                 float(np.mean([auc(p, split.y) for p in ps])), interval(boots[name][1]), groups,
                                 accs if len(ps) > 1 else None))
        for a in inputs.feature_sets:
            for b in (f"random ({a} size)", "dense"):
                da = float(np.mean([accuracy(p, split.y) for p in probs[t][a]])
                           - np.mean([accuracy(p, split.y) for p in probs[t][b]]))
                du = float(np.mean([auc(p, split.y) for p in probs[t][a]]) - np.mean([auc(p, split.y) for p in probs[t][b]]))
                gains.append(GainRow(t, a, b, da, interval(boots[a][0] - boots[b][0]), du,
                                     interval(boots[a][1] - boots[b][1])))
        for i, (p, y, g) in enumerate(zip(split.prompts, split.y, split.groups, strict=True)):
            preds.append({"test": t, "prompt": p, "label": int(y), "group": g,
                          **{name: float(np.mean([q[i] for q in ps])) for name, ps in probs[t].items()}})
    counts = {name: s.counts() for name, s in splits.items()}
    return ProbeResult("judged greedy answers of the model (refused = 1), " + f"{cfg.max_new_tokens} new tokens, judge "
                       f"{cfg.judge}", inputs.ood_source, dict(inputs.feature_sets), draws_of, inputs.skipped,
                       best["layer"], dense_rows, counts, rows, gains, preds)


def _stored_set(run: RunDir, cls: type, stage: str, command: str, empty: str,
                get: Callable[[object], FeatureSet]) -> tuple[FeatureSet | None, str | None]:
    """``get(result)`` of the ``cls`` result saved at ``stage``, or ``None`` and why (no result, or an empty set)."""
    res = run.load(cls, stage)
    if res is None:
        return None, f"no {stage} result: run `{command}`"
    fs = get(res)
    return (fs, None) if len(fs) else (None, empty)


def feature_sets(run: RunDir, cfg: ProbeConfig) -> tuple[dict[str, FeatureSet], dict[str, str], list[int]]:
    """The requested sets that exist in the run (and why the others are skipped), and the search's SAE layers."""
    hint = f"refusal-sae search --run-dir {run.root}"
    cands = run.require(CandidatesResult, hint, "search/candidates")
    choice = run.require(ChoiceResult, hint, "search/choice")
    sets, skipped = {}, {}
    for name in cfg.feature_sets:
        if name == "global":
            sets[name] = cands.ours.take(choice.k)
            continue
        if name == "minimal":
            fs, why = _stored_set(run, GreedyResult, "search/greedy", hint, "the greedy minimal set is empty",
                                  lambda r: r.minimal)
        else:
            from refusal_sae.analysis.upstream import UpstreamResult

            fs, why = _stored_set(run, UpstreamResult, "analysis/upstream", f"refusal-sae upstream --run-dir {run.root}",
                                  "the upstream analysis found no shared refusal feature", lambda r: r.refusal_features)
        if fs is None:
            skipped[name] = why
        else:
            sets[name] = fs
    if not sets:
        raise ConfigError("no feature set to probe: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return sets, skipped, list(cands.layers)


@dataclass
class ProbePlan:
    """What the probes read, checked before the model loads."""

    sets: dict[str, FeatureSet]
    skipped: dict[str, str]
    layers: list[int]
    jailbreaks: JailbreakResult | None
    ood: object | None  # a PromptSet
    train: tuple[list[str], list[str]]
    val: tuple[list[str], list[str]]
    harmless_test: list[str]
    ood_identity: str | None


def prepare_probes(run: RunDir, cfg: ProbeConfig, data_dir=None) -> ProbePlan:
    """Settings, earlier results (the search; the jailbreak table unless an OOD file is given) and prompt files."""
    from refusal_sae.analysis.jailbreaks import load_jailbreaks
    from refusal_sae.data import dataset_names
    from refusal_sae.runs import file_sha256

    cfg.validate()
    sets, skipped, layers = feature_sets(run, cfg)
    jb = run.load(JailbreakResult, cfg.jailbreaks)
    if cfg.ood_dataset is None and jb is None:
        load_jailbreaks(run, cfg.jailbreaks)  # raises the error naming the command
    if jb is not None and not jb.is_test:
        raise ConfigError(f"the jailbreak table {cfg.jailbreaks} is not built from held-out test instructions; the "
                          "probes are tested on held-out prompts only")
    ood = load_dataset(cfg.ood_dataset, data_dir, cfg.n_ood, cfg.seed) if cfg.ood_dataset else None
    ood_id = None
    if cfg.ood_dataset and cfg.ood_dataset not in dataset_names():
        ood_id = file_sha256(cfg.ood_dataset)
    d = {name: load_dataset(name, data_dir) for name in ("harmful_train", "harmless_train", "harmful_val",
                                                           "harmless_val", "harmless_test")}
    return ProbePlan(sets, skipped, layers, jb, ood,
                     (d["harmful_train"].sample(cfg.n_train, cfg.seed).instructions,
                      d["harmless_train"].sample(cfg.n_train, cfg.seed).instructions),
                     (d["harmful_val"].sample(cfg.n_val, cfg.seed).instructions,
                      d["harmless_val"].sample(cfg.n_val, cfg.seed).instructions),
                     d["harmless_test"].sample(cfg.n_test, cfg.seed).instructions, ood_id)


def run_probe_stage(handle: ModelHandle, saes, run: RunDir, cfg: ProbeConfig, data_dir=None, progress: bool = True,
                    force: bool = False) -> ProbeResult:
    """The probe analysis in ``run`` (``analysis/probes``)."""
    from refusal_sae.errors import MismatchError

    plan = prepare_probes(run, cfg, data_dir)
    saes.validate(handle)
    missing = [L for L in plan.layers if L not in saes.layers()]
    if missing:
        raise MismatchError(f"the search used SAEs at layers {missing}, which the given SAEs lack")
    jb = plan.jailbreaks
    stages = run.manifest().get("stages", {})
    identity = cfg.to_dict() | {
        "model_revision": handle.revision, "saes": saes.identity(),
        "sets": {k: list(v.items) for k, v in plan.sets.items()}, "ood_file": plan.ood_identity,
        "upstream": {n: (stages.get(n) or {}).get("config_hash") for n in ("search/candidates", cfg.jailbreaks)}}

    def compute() -> ProbeResult:
        cache = answer_cache(run, handle, cfg.max_new_tokens, cfg.judge, cfg.batch_size, progress)
        if jb is not None:  # the jailbreak table's held-out plain instructions the model refuses
            positives = jb.refused_plain()
        else:
            held = [x for name in TEST_SETS for x in load_dataset(name, data_dir).sample(cfg.n_test, cfg.seed).instructions]
            labels = cache.labels(held, "held-out harmful answers")
            positives = [p for p, lab in zip(held, labels, strict=True) if lab == REFUSED]
        tr, va = labelled(cache, *plan.train, "training"), labelled(cache, *plan.val, "validation")
        hl = cache.labels(plan.harmless_test, "harmless_test answers")
        neg = [p for p, lab in zip(plan.harmless_test, hl, strict=True) if lab != REFUSED]
        test = Split(list(positives) + neg, np.array([1] * len(positives) + [0] * len(neg)),
                     ["harmful (held out)"] * len(positives) + ["harmless (held out)"] * len(neg),
                     {"harmless refused": len(plan.harmless_test) - len(neg)})
        if plan.ood is not None:
            fams = [r.jailbreak_family or str(r.extra.get("family") or "prompt") for r in plan.ood]
            ood, source = ood_from_file(cache, plan.ood.instructions, fams), cfg.ood_dataset
        else:
            ood, source = ood_from_jailbreaks(jb, positives), f"{cfg.jailbreaks} (wrapped, not refused) + plain refused"
        return probe_analysis(handle, saes, plan.layers, ProbeInputs(tr, va, test, ood, source, plan.sets, plan.skipped),
                              cfg, progress)

    return run.run(ProbeResult, identity, compute, name="analysis/probes", force=force)
