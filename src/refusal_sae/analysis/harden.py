"""Hardening refusal by SAE feature steering, and what it costs (stage 5, section 4).

O'Brien et al. ("Steering Language Model Refusal with Sparse Autoencoders", Phi-3 Mini) clamp refusal features up:
jailbreaks succeed less, but over-refusal and loss on ordinary text rise. This module measures that trade-off on a
model with a refusal feature search behind it, against activation addition of the refusal direction, and asks
whether a conditional gate (steer only when an upstream harm feature fires) buys the hardening for less.

**What is steered.** The search's refusal features (``search/greedy`` minimal set by default, or the global set
``ours.take(K*)``), each raised to ``m × μ`` at every position, generated tokens included
(:class:`~refusal_sae.interventions.feature_steer.FeatureSteer`, SAE error term kept). ``μ`` is the feature's
typical activation where the model refuses: on the ``n_calib`` harmful_train prompts that the unsteered model refuses
(judged greedy answers), the per-prompt maximum (or mean) of its code over the post-instruction positions (or every
content position), averaged over those prompts. ``floor`` mode sets ``f' = max(f, m·μ)`` (never lowers a feature),
``set`` mode ``f' = m·μ``.

**Conditional steering** (after CAST, Lee et al. 2024, "Programming Refusal with Conditional Activation
Steering": the condition is read on the prompt, the behaviour applied to everything after). The gate is a
per-prompt decision from the prompt's own forward pass: the sum, over a few harm features at one SAE layer, of each
feature's maximum code over the prompt's content positions (every real token after the first; for the prefill
attack the forced answer prefix is part of the prompt), above a threshold. Harm features: the SAE features whose
decoder rows have the highest cosine with the direction stage's harm direction (``DirectionResult.harm``, read at
``t_inst``) at that layer. The layer (by default only SAE layers before the first steered layer: upstream), the
number of features and the threshold are chosen on training prompts (harmful_train, plain and jailbreak-wrapped,
against harmless_train) by balanced accuracy; the validation splits report how it generalises. A gated prompt runs
under the steer, any other under no intervention at all, so a conditional point is assembled exactly from the
unconditional point and the unsteered one, prompt by prompt, without generating again. The gate reads the clean
prompt; with every steered layer after the gate layer (the default) this is what the prefill of the steered
generation would read.

**Measured** on held-out prompts only (nothing here is chosen on them): ``n_jailbreak`` JailbreakBench + HarmBench
test instructions wrapped by :func:`~refusal_sae.data.jailbreaks.jailbreak_set` (*jailbreak success* = the judged
complied rate); the same instructions, plain, under an attack that works on this model (the *prefill attack*: the
assistant turn starts with ``prefill``, e.g. "Sure, here is", and the model continues; the judge reads prefill +
continuation) — the embedded model is rarely jailbroken by the templates alone, so hardening is also read as "does
steering restore refusal when the answer is forced to start compliantly"; over-refusal as the judged refused rate on
``n_xstest`` XSTest safe prompts and ``n_harmless`` harmless_test prompts; the capability cost as the **loss
increase**: the mean next-token NLL (nats per token) of the unsteered model's own greedy answers to the harmless
prompts, under the intervention minus unsteered, with a bootstrap CI over prompts, and the KL(clean ‖ steered) of
those next-token distributions beside it. Rates carry Wilson 95% CIs; every point is compared with the unsteered
model on the same prompts (McNemar exact). Controls: ``n_random`` random feature sets of the same per-layer sizes,
drawn among features that fire at the target positions of the refused prompts (``μ > 0``: a dead
feature's steer does nothing, which would make the control trivially weak), steered the same way.

**Baseline**: activation addition of the refusal direction at its layer, every position, per coefficient; each
steering point is matched to the activation-addition coefficient with the same XSTest over-refusal by linear
interpolation along the coefficient sweep (coefficient 0 = the unsteered model), giving the baseline's jailbreak
success and loss increase at matched over-refusal.

Resumable: each generated point (all prompt groups under one intervention) is kept in ``<run>/analysis/harden/points``
and reused when the settings it depends on are unchanged (adding a multiplier re-runs only the new point).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from refusal_sae.analysis.config import HardenConfig
from refusal_sae.data import load_dataset
from refusal_sae.data.jailbreaks import family_names, jailbreak_set
from refusal_sae.data.records import PromptSet
from refusal_sae.direction.result import DirectionResult
from refusal_sae.errors import DataError, MismatchError
from refusal_sae.interventions.engine import EngineConfig, InterventionEngine
from refusal_sae.interventions.feature_steer import FeatureSteer
from refusal_sae.models.formatting import FormattedPrompt, length_sorted_batches
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import hook_name
from refusal_sae.ops import cosine_to_rows
from refusal_sae.runs import RunDir, StageResult, completed, config_hash, mark_complete, slug
from refusal_sae.scoring.compare import PairedRow
from refusal_sae.scoring.judge import COMPLIED, DEGENERATE, REFUSED, Judge, get_judge
from refusal_sae.scoring.stats import wilson_interval
from refusal_sae.search.activations import content_mask
from refusal_sae.search.featureset import FeatureSet, random_sets
from refusal_sae.search.result import CandidatesResult, ChoiceResult, GreedyResult

GROUPS = ("jailbreak", "attack", "xstest", "harmless")
NAME = "analysis/harden"
LOSS_DEFINITION = ("loss increase: mean next-token NLL (nats/token) of the unsteered model's greedy answers to the "
                   "harmless_test prompts under the intervention, minus the same under no intervention")
GATE_RULE = ("per prompt: sum over the gate features of their max code over the prompt's content positions > "
             "threshold; layer, number of features (top decoder cosine with the t_inst harm direction) and threshold "
             "chosen by balanced accuracy on harmful_train (plain + jailbreak-wrapped) vs harmless_train; ties: fewer "
             "features, then the earlier layer, then the higher threshold")


# --- prompts ---------------------------------------------------------------------------------------------------------
@dataclass
class HardenPrompts:
    """Training / validation prompts for the targets and the gate; held-out prompts for every measurement."""

    calib: list[str]  # harmful_train: the refused ones give each feature's mean activation
    gate_train: tuple[list[str], list[str]]  # (harmful_train plain + wrapped, harmless_train)
    gate_val: tuple[list[str], list[str]]  # (harmful_val plain + wrapped, harmless_val)
    jailbreak: list[str]  # held-out instructions wrapped in jailbreak templates
    jailbreak_family: list[str]
    plain: list[str]  # the same held-out instructions, unwrapped (the attack's prompts)
    xstest: list[str]
    harmless: list[str]
    families: list[str]

    @classmethod
    def load(cls, cfg: HardenConfig, data_dir=None) -> HardenPrompts:
        fams = list(cfg.families or family_names())

        def plus_wrapped(ps: PromptSet, seed: int) -> list[str]:
            return ps.instructions + jailbreak_set(ps, fams, seed).instructions

        train = load_dataset("harmful_train", data_dir)
        gate_seed = cfg.seed + 1
        records, seen = [], set()
        for name in cfg.jailbreak_datasets:
            ds = load_dataset(name, data_dir)
            for r in ds.records:
                if r.instruction not in seen:  # JailbreakBench and HarmBench share a few behaviours
                    seen.add(r.instruction)
                    records.append(r)
        held = PromptSet("+".join(cfg.jailbreak_datasets), records).sample(cfg.n_jailbreak, cfg.seed)
        wrapped = jailbreak_set(held, fams, cfg.seed)
        return cls(
            calib=train.sample(cfg.n_calib, cfg.seed).instructions,
            gate_train=(plus_wrapped(train.sample(cfg.n_gate, gate_seed), gate_seed),
                        load_dataset("harmless_train", data_dir).sample(cfg.n_gate, gate_seed).instructions),
            gate_val=(plus_wrapped(load_dataset("harmful_val", data_dir).sample(cfg.n_gate, gate_seed), gate_seed),
                      load_dataset("harmless_val", data_dir).sample(cfg.n_gate, gate_seed).instructions),
            jailbreak=wrapped.instructions, jailbreak_family=[r.jailbreak_family or "" for r in wrapped.records],
            plain=held.instructions,
            xstest=load_dataset("xstest_safe", data_dir).sample(cfg.n_xstest, cfg.seed).instructions,
            harmless=load_dataset("harmless_test", data_dir).sample(cfg.n_harmless, cfg.seed).instructions,
            families=fams)


def with_prefill(handle: ModelHandle, instruction: str, prefill: str) -> FormattedPrompt:
    """The chat prompt of ``instruction`` with the assistant's answer already started by ``prefill``."""
    f = handle.format(instruction)
    ids = handle.tokenizer(prefill, add_special_tokens=False)["input_ids"]
    return FormattedPrompt(instruction, tuple(f.input_ids) + tuple(ids), f.inst_start, f.inst_end)


def join_prefill(prefill: str, continuation: str) -> str:
    """The whole answer the user sees: the forced prefix and what the model wrote after it."""
    if not continuation or continuation[0] in ".,:;!?)":
        return prefill + continuation
    return f"{prefill} {continuation}"


# --- SAE codes per prompt ---------------------------------------------------------------------------------------------
@torch.no_grad()
def code_stats(handle: ModelHandle, saes: Mapping, layers: Sequence[int], prompts: Sequence[str | FormattedPrompt],
               where: str = "content", stat: str = "max", batch_size: int = 32) -> dict[int, torch.Tensor]:
    """``{layer: [n_prompts, d_sae]}``: each feature's maximum (``stat="max"``) or mean code over each prompt's
    content positions (``where="content"``: real tokens after the first, see
    :func:`~refusal_sae.search.activations.content_mask`) or its post-instruction positions (``"post_inst"``)."""
    layers = sorted(set(layers))
    formatted = [p if isinstance(p, FormattedPrompt) else handle.format(p) for p in prompts]
    out = {L: torch.zeros(len(formatted), int(saes[L].cfg.d_sae)) for L in layers}
    names = {L: hook_name(L, "resid_post") for L in layers}
    for idx in length_sorted_batches([len(p) for p in formatted], batch_size):
        batch = handle.batch([formatted[i] for i in idx])
        if where == "content":
            keep = content_mask(batch)
        else:
            keep = torch.zeros_like(batch.attention_mask, dtype=torch.bool)
            keep[:, -batch.n_post_inst:] = True
        keep = keep[..., None].to(batch.input_ids.device)
        acts = handle.cache_activations(batch, list(names.values()))
        for L in layers:
            sae = saes[L]
            codes = sae.encode(acts[names[L]].to(sae.W_dec.dtype))
            if stat == "max":
                red = codes.masked_fill(~keep, 0).amax(1)
            else:
                red = (codes * keep).sum(1) / keep.sum(1).clamp_min(1)
            out[L][idx] = red.float().cpu()
    return out


def steering_targets(stats: Mapping[int, torch.Tensor], rows: Sequence[int]) -> dict[tuple[int, int], float]:
    """``μ`` of every feature at the layers of ``stats``: the mean of its per-prompt statistic over ``rows``."""
    return {(L, f): float(v) for L, s in stats.items() for f, v in enumerate(s[list(rows)].mean(0).tolist())}


def steer_set(saes: Mapping, features: FeatureSet, mu: Mapping[tuple[int, int], float], m: float,
              mode: str = "floor") -> list[FeatureSteer]:
    """One :class:`FeatureSteer` per layer raising each feature of ``features`` to ``m × μ``."""
    return [FeatureSteer(saes[L], ids, tuple(m * mu[(L, f)] for f in ids), mode)
            for L, ids in features.by_layer().items()]


def live_random_sets(mu: Mapping[tuple[int, int], float], like: FeatureSet, n: int, seed: int) -> list[FeatureSet]:
    """``n`` random sets with ``like``'s per-layer sizes among the features with ``μ > 0`` (they fire where the model
    refuses, so steering them to ``m × μ`` does something), never ``like``'s own."""
    live: dict[int, list[int]] = {}
    for (L, f), v in sorted(mu.items()):
        if v > 0:
            live.setdefault(L, []).append(f)
    return random_sets({L: torch.tensor(fs) for L, fs in live.items()}, like, n, seed)


# --- the gate ---------------------------------------------------------------------------------------------------------
@dataclass
class GateCandidate:
    layer: int
    features: list[int]
    cosines: list[float]
    threshold: float
    train_tpr: float
    train_fpr: float

    @property
    def train_bacc(self) -> float:
        return (self.train_tpr + 1 - self.train_fpr) / 2


@dataclass
class GateFit:
    """The chosen gate and how often it fires on training and validation prompts."""

    layer: int
    features: list[int]
    threshold: float
    upstream: bool  # the gate layer lies before every steered layer
    n_train: tuple[int, int]  # harmful (plain + wrapped), harmless
    n_val: tuple[int, int]
    train_tpr: float
    train_fpr: float
    val_tpr: float  # harmful_val plain + wrapped
    val_tpr_wrapped: float  # … the wrapped half alone
    val_fpr: float  # harmless_val
    candidates: list[GateCandidate]
    rule: str = GATE_RULE

    def fires(self, stats: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """``[n_prompts]`` bool from :func:`code_stats` (content, max) at the gate layer."""
        return gate_score(stats[self.layer], self.features) > self.threshold


def gate_score(stats: torch.Tensor, features: Sequence[int]) -> torch.Tensor:
    return stats[:, list(features)].sum(1)


def best_threshold(pos: torch.Tensor, neg: torch.Tensor) -> tuple[float, float, float]:
    """``(threshold, tpr, fpr)`` of the rule ``score > threshold`` with the best balanced accuracy (ties: the highest
    threshold). Candidates: below every score, and midway between consecutive distinct scores."""
    vals = torch.cat([pos, neg]).unique().sort().values
    cands = torch.cat([vals[:1] - 1.0, (vals[1:] + vals[:-1]) / 2])
    tpr = (pos[None] > cands[:, None]).double().mean(1)
    fpr = (neg[None] > cands[:, None]).double().mean(1)
    bacc = (tpr + 1 - fpr) / 2
    best = int((bacc >= bacc.max() - 1e-12).nonzero().max())
    return float(cands[best]), float(tpr[best]), float(fpr[best])


def harm_features(sae, harm_direction: torch.Tensor, n: int) -> tuple[list[int], list[float]]:
    """The ``n`` features whose decoder rows have the highest cosine with ``harm_direction``."""
    cos = cosine_to_rows(sae.W_dec.detach(), harm_direction).cpu()
    top = cos.topk(n)
    return top.indices.tolist(), top.values.tolist()


def harm_direction_at(harm: torch.Tensor, layer: int) -> torch.Tensor:
    """The t_inst harm direction in ``resid_post`` of ``layer``: ``harm`` is read at ``resid_pre``, and ``resid_post``
    of L is ``resid_pre`` of L + 1 (the last layer keeps its own)."""
    return harm[min(layer + 1, harm.shape[0] - 1)].float()


def fit_gate(train_pos: Mapping[int, torch.Tensor], train_neg: Mapping[int, torch.Tensor],
             val_pos: Mapping[int, torch.Tensor], val_neg: Mapping[int, torch.Tensor], saes: Mapping,
             harm: torch.Tensor, sizes: Sequence[int], upstream: bool) -> GateFit:
    """Choose the gate (see :data:`GATE_RULE`) from :func:`code_stats` of the four prompt groups at each candidate
    layer; ``val_pos`` holds the plain prompts first, then as many wrapped ones."""
    cands = []
    for L in sorted(train_pos):
        ids, cos = harm_features(saes[L], harm_direction_at(harm, L), max(sizes))
        for n in sizes:
            thr, tpr, fpr = best_threshold(gate_score(train_pos[L], ids[:n]), gate_score(train_neg[L], ids[:n]))
            cands.append(GateCandidate(L, ids[:n], cos[:n], thr, tpr, fpr))
    best = max(cands, key=lambda c: (round(c.train_bacc, 12), -len(c.features), -c.layer))
    L = best.layer
    vp = gate_score(val_pos[L], best.features) > best.threshold
    vn = gate_score(val_neg[L], best.features) > best.threshold
    half = len(vp) // 2
    return GateFit(L, best.features, best.threshold, upstream, (len(train_pos[L]), len(train_neg[L])),
                   (len(vp), len(vn)), best.train_tpr, best.train_fpr, float(vp.double().mean()),
                   float(vp[half:].double().mean()), float(vn.double().mean()), cands)


# --- capability cost -----------------------------------------------------------------------------------------------------
def loss_increase(delta: torch.Tensor, tokens: torch.Tensor, n_boot: int, seed: int
                  ) -> tuple[float, tuple[float, float]]:
    """Token-weighted mean of per-prompt NLL increases ``delta`` (sums), with a 95% percentile bootstrap over prompts."""
    total = float(tokens.sum())
    point = float(delta.sum()) / max(total, 1.0)
    if n_boot == 0 or len(delta) < 2:
        return point, (point, point)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(delta), (n_boot, len(delta)), generator=g)
    boots = delta[idx].sum(1) / tokens[idx].sum(1).clamp_min(1.0)
    lo, hi = torch.quantile(boots, torch.tensor([0.025, 0.975], dtype=boots.dtype)).tolist()
    return point, (lo, hi)


# --- results --------------------------------------------------------------------------------------------------------------
@dataclass
class Rate:
    k: int
    n: int
    ci: tuple[float, float]

    @property
    def rate(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @classmethod
    def of(cls, labels: Sequence[str], label: str) -> Rate:
        k = sum(x == label for x in labels)
        return cls(k, len(labels), wilson_interval(k, len(labels)))


@dataclass
class HardenPoint:
    """One point of a hardening curve: an intervention, its jailbreak success, over-refusal and capability cost."""

    name: str
    method: str  # none | steer | conditional | actadd | random
    value: float  # the multiplier m, or the activation-addition coefficient (0: none)
    jailbreak: Rate  # complied, held-out instructions wrapped in jailbreak templates
    attack: Rate | None  # complied, the same instructions under the attack (None: no attack)
    xstest_refused: Rate
    harmless_refused: Rate
    degenerate: dict[str, Rate]  # per prompt group
    loss_increase: float  # nats / token (LOSS_DEFINITION)
    loss_ci: tuple[float, float]
    kl: float  # mean KL(clean ‖ intervention) per answer token
    gated: dict[str, Rate] | None = None  # conditional: prompts whose gate fired, per group
    draw: int | None = None  # random controls: which draw


@dataclass
class MatchedRow:
    """A steering point beside activation addition at the same XSTest over-refusal (interpolated)."""

    point: str
    over_refusal: float
    jailbreak: float
    attack: float | None
    loss_increase: float
    actadd_coeff: float | None  # None: the point's over-refusal lies beyond the activation-addition sweep
    actadd_jailbreak: float | None = None
    actadd_attack: float | None = None
    actadd_loss_increase: float | None = None


@dataclass
class HardeningResult(StageResult):
    """``analysis/harden``: the hardening curves of feature steering, conditional steering and activation addition."""

    kind = "analysis_harden"
    jsonl_fields = ("generations",)

    features_source: str  # minimal | global
    features: FeatureSet
    targets: list[float]  # μ of each feature of ``features``, in order
    target_stat: str
    target_positions: str
    steer_mode: str
    n_calib: int
    n_calib_refused: int
    zero_targets: int  # steered features with μ = 0 (their steer does nothing)
    random_features: list[FeatureSet]
    actadd_layer: int
    gate: GateFit
    gate_fired: dict[str, list[bool]]  # per measured group, per prompt
    datasets: list[str]
    families: list[str]
    attack: str
    prefill: str
    sizes: dict[str, int]
    points: list[HardenPoint]
    paired: list[PairedRow]
    matched: list[MatchedRow]
    loss_definition: str = LOSS_DEFINITION
    generations: list[dict] = field(default_factory=list)  # {point, group, prompt, completion, judgement}

    def point(self, name: str) -> HardenPoint:
        return next(p for p in self.points if p.name == name)

    def curve(self, method: str) -> list[HardenPoint]:
        return [p for p in self.points if p.method == method]


# --- assembling points -------------------------------------------------------------------------------------------------
Labels = dict[str, list[str]]  # group → judgement per prompt


def point_rates(name: str, method: str, value: float, labels: Labels, delta: torch.Tensor, kl: torch.Tensor,
                tokens: torch.Tensor, n_boot: int, seed: int, attack: bool, gated: dict[str, Rate] | None = None,
                draw: int | None = None) -> HardenPoint:
    loss, ci = loss_increase(delta, tokens, n_boot, seed)
    return HardenPoint(name, method, value, Rate.of(labels["jailbreak"], COMPLIED),
                       Rate.of(labels["attack"], COMPLIED) if attack else None,
                       Rate.of(labels["xstest"], REFUSED), Rate.of(labels["harmless"], REFUSED),
                       {g: Rate.of(lab, DEGENERATE) for g, lab in labels.items() if lab},
                       loss, ci, float(kl.sum()) / max(float(tokens.sum()), 1.0), gated, draw)


def paired_rows(a: str, b: str, la: Labels, lb: Labels, prompts: Mapping[str, Sequence[str]]) -> list[PairedRow]:
    """``a`` vs ``b`` on the same prompts: jailbreak / attack success (complied) and over-refusal (refused)."""
    rows = []
    for group, label in (("jailbreak", COMPLIED), ("attack", COMPLIED), ("xstest", REFUSED), ("harmless", REFUSED)):
        if not la.get(group):
            continue
        rows.append(PairedRow.compare(a, b, prompts[group], la[group], lb[group], label, group))
    return rows


def interpolate(xs: tuple[float, float], ys: tuple[float, float], x: float) -> float:
    """Linear interpolation of ``ys`` at ``x`` between ``xs`` (the first value when the segment is flat)."""
    return ys[0] if xs[1] == xs[0] else ys[0] + (ys[1] - ys[0]) * (x - xs[0]) / (xs[1] - xs[0])


def match_actadd(point: HardenPoint, actadd: Sequence[HardenPoint], none: HardenPoint) -> MatchedRow:
    """The activation-addition coefficient whose XSTest over-refusal equals the point's: the first crossing along the
    coefficient sweep (linear between swept coefficients; coefficient 0 is ``none``, and a point that over-refuses no
    more than ``none`` is matched to it); the baseline's jailbreak success, attack success and loss increase are
    interpolated there. ``actadd_coeff`` stays ``None`` when the point's over-refusal lies beyond the sweep."""
    target = point.xstest_refused.rate
    curve = [none, *sorted(actadd, key=lambda p: p.value)]
    coeffs = [0.0] + [p.value for p in curve[1:]]
    orr = [p.xstest_refused.rate for p in curve]
    row = MatchedRow(point.name, target, point.jailbreak.rate, point.attack.rate if point.attack else None,
                     point.loss_increase, None)
    if target <= orr[0]:
        seg, i = (orr[0], orr[0]), 0
    else:
        i = next((i for i in range(1, len(curve)) if min(orr[i - 1], orr[i]) <= target <= max(orr[i - 1], orr[i])), None)
        if i is None:
            return row
        seg = (orr[i - 1], orr[i])
    a, b = curve[max(i - 1, 0)], curve[i]
    ca, cb = coeffs[max(i - 1, 0)], coeffs[i]
    row.actadd_coeff = interpolate(seg, (ca, cb), target)
    row.actadd_jailbreak = interpolate(seg, (a.jailbreak.rate, b.jailbreak.rate), target)
    if a.attack is not None and b.attack is not None:
        row.actadd_attack = interpolate(seg, (a.attack.rate, b.attack.rate), target)
    row.actadd_loss_increase = interpolate(seg, (a.loss_increase, b.loss_increase), target)
    return row


def nearest_actadd(point: HardenPoint, actadd: Sequence[HardenPoint]) -> HardenPoint:
    """The swept activation-addition point whose XSTest over-refusal is closest to ``point``'s (ties: the smaller
    coefficient): a real generated point on the same prompts, for a paired test beside the interpolated match."""
    return min(actadd, key=lambda a: (abs(a.xstest_refused.rate - point.xstest_refused.rate), a.value))


# --- the analysis --------------------------------------------------------------------------------------------------------
@dataclass
class HardenInputs:
    """What the analysis reads from earlier stages."""

    direction: DirectionResult
    features: FeatureSet


class PointCache:
    """Judged generations of one intervention over every prompt group, kept as ``<dir>/<slug>.json`` and reused when
    the settings they depend on (``base``) and the point's own description match."""

    def __init__(self, folder: Path | None, base: dict):
        self.folder, self.base = folder, base

    def get(self, name: str, spec: dict, compute) -> dict:
        if self.folder is None:
            return compute()
        marker = self.folder / f"{slug(name)}.json"
        conf = {"base": config_hash(self.base), "point": name, "spec": spec}
        done = completed(marker, conf)
        if done is not None:
            return done["rows"]
        rows = compute()
        mark_complete(marker, conf, {"rows": rows})
        return rows


def generate_judged(engine: InterventionEngine, judge: Judge, model_prompts: Sequence, judge_prompts: Sequence[str],
                    sets: Sequence, cfg: HardenConfig, desc: str, prefill_rows: range | None = None) -> list[dict]:
    """Greedy answers under ``sets`` (one intervention set) and their judgements; rows in ``prefill_rows`` are
    prefill-attack prompts, whose answer is the prefill followed by the continuation."""
    (outs,) = engine.generate(model_prompts, [sets], cfg.max_new_tokens, cfg.batch_size, progress=True, desc=desc)
    if prefill_rows is not None:
        outs = [join_prefill(cfg.prefill, o) if i in prefill_rows else o for i, o in enumerate(outs)]
    labels = [j.label for j in judge.judge(list(judge_prompts), outs)]
    return [{"completion": o, "judgement": lab} for o, lab in zip(outs, labels, strict=True)]


def harden(handle: ModelHandle, saes: Mapping, prompts: HardenPrompts, cfg: HardenConfig, inputs: HardenInputs,
           judge: Judge | None = None, scratch: Path | None = None, base_identity: dict | None = None,
           engine: InterventionEngine | None = None) -> HardeningResult:
    """The hardening curves (see the module docstring). ``scratch``: where generated points are kept for resuming."""
    judge = judge or get_judge(cfg.judge)
    engine = engine or InterventionEngine(handle, EngineConfig(prompt_batch_size=cfg.batch_size))
    cache = PointCache(scratch, base_identity or {})
    direction, features = inputs.direction, inputs.features
    steer_layers = sorted(features.by_layer())

    # 1. targets: μ of every feature at the steered layers, over the calibration prompts the model refuses
    calib = cache.get("calibration", {"n": len(prompts.calib)}, lambda: generate_judged(
        engine, judge, prompts.calib, prompts.calib, [], cfg, "calibration: unsteered"))
    refused = [i for i, r in enumerate(calib) if r["judgement"] == REFUSED]
    if not refused:
        raise DataError(f"the model refuses none of the {len(prompts.calib)} calibration prompts: there is no refusal "
                        "to measure the features' activation on (is it a refusing chat model?)")
    stats = code_stats(handle, saes, steer_layers, [prompts.calib[i] for i in refused], cfg.target_positions,
                       cfg.target_stat, cfg.batch_size)
    mu = steering_targets(stats, range(len(refused)))
    targets = [mu[x] for x in features]
    randoms = live_random_sets(mu, features, cfg.n_random, cfg.seed + len(features)) if cfg.random_multipliers else []

    # 2. the gate, on training prompts (validation reported)
    sae_layers = sorted(int(L) for L in _layers(saes))
    gate_layers = list(cfg.gate_layers or [L for L in sae_layers if L < steer_layers[0]] or sae_layers)
    upstream = all(L < steer_layers[0] for L in gate_layers)
    groups = {name: code_stats(handle, saes, gate_layers, ps, "content", "max", cfg.batch_size)
              for name, ps in (("train_pos", prompts.gate_train[0]), ("train_neg", prompts.gate_train[1]),
                               ("val_pos", prompts.gate_val[0]), ("val_neg", prompts.gate_val[1]))}
    gate = fit_gate(groups["train_pos"], groups["train_neg"], groups["val_pos"], groups["val_neg"], saes,
                    direction.harm, cfg.gate_sizes, upstream)

    # 3. generated points: every prompt group under each intervention, judged
    attack = cfg.attack == "prefill"
    model_prompts: list = [*prompts.jailbreak]
    judge_prompts = [*prompts.jailbreak]
    if attack:
        model_prompts += [with_prefill(handle, p, cfg.prefill) for p in prompts.plain]
        judge_prompts += prompts.plain
    model_prompts += [*prompts.xstest, *prompts.harmless]
    judge_prompts += [*prompts.xstest, *prompts.harmless]
    sizes = {"jailbreak": len(prompts.jailbreak), "attack": len(prompts.plain) if attack else 0,
             "xstest": len(prompts.xstest), "harmless": len(prompts.harmless)}
    bounds, start = {}, 0
    for g in GROUPS:
        bounds[g] = range(start, start + sizes[g])
        start += sizes[g]
    group_prompts = {g: [judge_prompts[i] for i in bounds[g]] for g in GROUPS}

    specs: list[tuple[str, str, float, int | None, list, dict]] = [("none", "none", 0.0, None, [], {})]
    specs += [(f"steer m={m:g}", "steer", m, None, steer_set(saes, features, mu, m, cfg.steer_mode),
               {"m": m, "features": [list(x) for x in features], "targets": targets})
              for m in cfg.multipliers]
    specs += [(f"actadd c={c:g}", "actadd", c, None, direction.interventions("actadd", c),
               {"coeff": c, "layer": direction.layer, "direction": config_hash({"d": direction.direction.tolist()})})
              for c in cfg.actadd_coeffs]
    specs += [(f"random m={m:g} #{d}", "random", m, d, steer_set(saes, fs, mu, m, cfg.steer_mode),
               {"m": m, "features": [list(x) for x in fs], "targets": [mu[x] for x in fs]})
              for m in cfg.random_multipliers for d, fs in enumerate(randoms)]
    labels: dict[str, Labels] = {}
    generations: list[dict] = []
    for name, _, _, _, sets, spec in specs:
        rows = cache.get(name, spec, lambda sets=sets, name=name: generate_judged(
            engine, judge, model_prompts, judge_prompts, sets, cfg, name, bounds["attack"]))
        labels[name] = {g: [rows[i]["judgement"] for i in bounds[g]] for g in GROUPS}
        generations += [{"point": name, "group": g, "prompt": judge_prompts[i], "completion": rows[i]["completion"],
                         "judgement": rows[i]["judgement"]} for g in GROUPS for i in bounds[g]]

    # 4. capability cost on the harmless prompts, the unsteered answers as the reference text
    answers = [generations[i]["completion"] for i in range(len(generations))
               if generations[i]["point"] == "none" and generations[i]["group"] == "harmless"]
    # per-prompt sums through the engine (full-vocabulary log-probabilities in float64: smaller batches)
    loss_engine = InterventionEngine(handle, EngineConfig(prompt_batch_size=max(1, cfg.batch_size // 4)))
    losses = loss_engine.answer_losses(prompts.harmless, answers, [sets for _, _, _, _, sets, _ in specs[1:]])
    delta = {name: losses.nll[s] - losses.nll_clean for s, (name, *_) in enumerate(specs[1:])}
    kl = {name: losses.kl[s] for s, (name, *_) in enumerate(specs[1:])}
    delta["none"] = kl["none"] = torch.zeros(len(answers), dtype=torch.float64)

    # 5. points, the conditional ones assembled prompt by prompt from the gate
    fired = {g: gate.fires(code_stats(handle, saes, [gate.layer], [model_prompts[i] for i in bounds[g]], "content",
                                      "max", cfg.batch_size)) if sizes[g] else torch.zeros(0, dtype=torch.bool)
             for g in GROUPS}
    points = []
    for name, method, value, draw, _, _ in specs:
        points.append(point_rates(name, method, value, labels[name], delta[name], kl[name], losses.tokens,
                                  cfg.n_boot, cfg.seed, attack, draw=draw))
    gated = {g: Rate(int(fired[g].sum()), sizes[g], wilson_interval(int(fired[g].sum()), sizes[g]))
             for g in GROUPS if sizes[g]}
    for m in cfg.multipliers:
        src, name = f"steer m={m:g}", f"conditional m={m:g}"
        labels[name] = {g: [labels[src][g][i] if fired[g][i] else labels["none"][g][i] for i in range(sizes[g])]
                        for g in GROUPS}
        h = fired["harmless"].double()
        points.append(point_rates(name, "conditional", m, labels[name], delta[src] * h, kl[src] * h, losses.tokens,
                                  cfg.n_boot, cfg.seed, attack, gated))

    # 6. paired comparisons and activation addition at matched over-refusal
    paired = []
    for p in points:
        if p.name != "none":
            paired += paired_rows(p.name, "none", labels[p.name], labels["none"], group_prompts)
    for m in cfg.multipliers:
        paired += paired_rows(f"conditional m={m:g}", f"steer m={m:g}", labels[f"conditional m={m:g}"],
                              labels[f"steer m={m:g}"], group_prompts)
    none = next(p for p in points if p.name == "none")
    actadd = [p for p in points if p.method == "actadd"]
    steered = [p for p in points if p.method in ("steer", "conditional")]
    matched = [match_actadd(p, actadd, none) for p in steered]
    for p in steered:  # beside the interpolated match: the generated actadd point nearest in XSTest over-refusal
        near = nearest_actadd(p, actadd)
        paired += paired_rows(p.name, near.name, labels[p.name], labels[near.name], group_prompts)
    return HardeningResult(
        features_source=cfg.features, features=features, targets=targets, target_stat=cfg.target_stat,
        target_positions=cfg.target_positions, steer_mode=cfg.steer_mode, n_calib=len(prompts.calib),
        n_calib_refused=len(refused),
        zero_targets=sum(t == 0 for t in targets), random_features=randoms, actadd_layer=direction.layer, gate=gate,
        gate_fired={g: fired[g].tolist() for g in GROUPS if sizes[g]}, datasets=list(cfg.jailbreak_datasets),
        families=prompts.families, attack=cfg.attack, prefill=cfg.prefill if attack else "", sizes=sizes,
        points=points, paired=paired, matched=matched, generations=generations)


def _layers(saes: Mapping) -> list[int]:
    """SAE layers of a :class:`~refusal_sae.saes.loading.SaeSet` or of a plain ``{layer: sae}`` mapping."""
    return list(saes.layers()) if hasattr(saes, "layers") else list(saes)


# --- the stage ------------------------------------------------------------------------------------------------------------
def steered_features(cfg: HardenConfig, cands: CandidatesResult, choice: ChoiceResult,
                     greedy: GreedyResult | None) -> FeatureSet:
    """The greedy minimal set, or the global set: the top ``K*`` of the search's ranking."""
    if cfg.features == "minimal":
        assert greedy is not None
        return greedy.minimal
    return cands.ours.take(choice.k)


def run_harden_stage(handle: ModelHandle, saes, run: RunDir, cfg: HardenConfig, data_dir=None,
                     force: bool = False, prompts: HardenPrompts | None = None) -> HardeningResult:
    """The hardening analysis in ``run`` (``analysis/harden``), from its direction and search results; every input is
    checked before the first forward pass. ``prompts``: :meth:`HardenPrompts.load` of ``cfg`` if already loaded (the
    CLI loads them before the model, so that a bad dataset fails fast)."""
    saes.validate(handle)
    cfg.validate(saes.layers())
    judge = get_judge(cfg.judge)
    direction = DirectionResult.from_run(run.root)
    hint = f"refusal-sae search --run-dir {run.root}"
    cands = run.require(CandidatesResult, hint, "search/candidates")
    choice = run.require(ChoiceResult, hint, "search/choice")
    greedy = run.require(GreedyResult, hint, "search/greedy") if cfg.features == "minimal" else None
    features = steered_features(cfg, cands, choice, greedy)
    if not len(features):
        raise DataError(f"the search's {cfg.features} feature set is empty: nothing to steer (try --features global)")
    missing = sorted({L for L, _ in features if L not in saes})
    if missing:
        raise MismatchError(f"the search's features lie at layers {missing}, where these SAEs have none: pass the "
                            "SAEs the search used (--saes)")
    prompts = prompts or HardenPrompts.load(cfg, data_dir)
    run.record_model(handle)
    read = ("direction", "search/candidates", "search/choice") + (("search/greedy",) if greedy is not None else ())
    upstream = {n: (run.manifest().get("stages", {}).get(n) or {}).get("config_hash") for n in read}
    common = {"model": handle.name, "model_revision": handle.revision, "saes": saes.identity(), "upstream": upstream}
    sweep = ("multipliers", "actadd_coeffs", "random_multipliers", "gate_layers", "gate_sizes", "n_gate", "n_boot")
    base = common | {k: v for k, v in cfg.to_dict().items() if k not in sweep}
    identity = common | cfg.to_dict()
    return run.run(HardeningResult, identity, lambda: harden(
        handle, saes, prompts, cfg, HardenInputs(direction, features), judge, run.path(NAME) / "points", base),
        name=NAME, force=force)


__all__ = ["GateFit", "HardenInputs", "HardenPoint", "HardenPrompts", "HardeningResult", "MatchedRow",
           "PairedRow", "Rate", "best_threshold", "code_stats", "fit_gate", "harden", "match_actadd", "nearest_actadd",
           "run_harden_stage", "steer_set", "steering_targets", "with_prefill"]
