"""§2 of stage 5: upstream features → downstream refusal features, and what jailbreaks do to them (Yeo et al.).

1. **Per-prompt sets.** Each prompt's top ``K`` features by LA-IG attribution within the search's decoder-cosine
   prefilter (as the search's per-prompt row), from per-position attributions (:func:`per_position_sets`).
2. **Refusal features** = the features in at least a share ``X`` of the per-prompt sets of refused harmful_train
   prompts; ``X`` is chosen on refused harmful_val prompts by :func:`choose_threshold` (the threshold whose shared set
   replicates best). **Upstream features** of a prompt = its set minus the refusal features.
3. **Natural drop** (per jailbreak pair, plain refused → wrapped): the relative drop of the upstream ("harm")
   features' mean activation over the prompt and of the refusal features' mean activation over the last 5 tokens,
   compared between jailbroken and failed pairs (the first seed paper: 0.49 / 0.73 jailbroken vs 0.30 / 0.18 failed).
4. **Causal drop** (per plain instruction): each upstream feature is clamped (×c) from its highest-attribution
   position outside the last 5 tokens on (:class:`~refusal_sae.interventions.feature_clamp.FeatureClampFrom`, a
   position-restricted SAE edit with the error term kept, routed to its own prompt's batch row by
   :func:`~refusal_sae.interventions.engine.row_routed_hooks`); the refusal features (at deeper layers) are read at
   the last 5 tokens *before* any edit at their own hook point, and their relative drop is compared with random
   same-layer features clamped from the same positions.
5. **Suppressing tokens**: gradient × input of the refusal features' mean last-5 activation (each feature in units
   of its mean on the plain prompts) with respect to every input embedding of the wrapped prompts; per family, the
   wrapper's tokens (outside the instruction's own text) with the most negative mean attribution.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from refusal_sae.analysis.config import UpstreamConfig
from refusal_sae.analysis.jailbreaks import answer_cache, load_jailbreaks, payload_pieces
from refusal_sae.data import load_dataset
from refusal_sae.direction.result import DirectionResult
from refusal_sae.errors import DataError, MismatchError
from refusal_sae.interventions.base import Intervention
from refusal_sae.interventions.directional import DirectionAblation
from refusal_sae.interventions.engine import row_routed_hooks
from refusal_sae.interventions.feature_clamp import FeatureClampFrom
from refusal_sae.models.formatting import FormattedPrompt, length_sorted_batches, render_chat
from refusal_sae.models.handle import ModelHandle, position_ids_for
from refusal_sae.models.hooks import HookFn, StopForward, hook_name
from refusal_sae.runs import Float, RunDir, StageResult
from refusal_sae.scoring.judge import REFUSED
from refusal_sae.scoring.refusal_score import refusal_score_from_logits
from refusal_sae.search.activations import content_mask
from refusal_sae.search.attribution import frozen, ig_batch
from refusal_sae.search.featureset import FeatureSet
from refusal_sae.search.result import CandidatesResult, ChoiceResult

RULE = ("refusal features: the features in at least X of the per-prompt sets of the refused harmful_train prompts; "
        "X: the threshold of the grid whose shared set on the training prompts agrees best (Jaccard) with the shared "
        "set on the refused harmful_val prompts at the same X, among thresholds with a non-empty shared set; ties go "
        "to the larger X (fewer features)")


# --- reading codes --------------------------------------------------------------------------------------------------------
def _columns(features: FeatureSet) -> tuple[dict[int, tuple[int, ...]], list[int]]:
    by_layer = features.by_layer()
    flat = [(L, f) for L, fs in by_layer.items() for f in fs]
    where = {x: i for i, x in enumerate(flat)}
    return by_layer, [where[x] for x in features.items]


def _reader(saes: Mapping[int, object], layer: int, ids: Sequence[int], got: dict[int, torch.Tensor]) -> HookFn:
    """A hook that stores the codes of ``ids`` of the SAE at ``layer`` in ``got`` (graph kept, nothing changed)."""
    def fn(act: torch.Tensor) -> None:
        sae = saes[layer]
        got[layer] = sae.encode(act.to(sae.W_dec.dtype))[..., list(ids)]

    return fn


@torch.no_grad()
def read_codes(handle: ModelHandle, saes: Mapping[int, object], features: FeatureSet,
               prompts: Sequence[FormattedPrompt], edits: Sequence[Sequence[Intervention]] | None = None,
               refusal_tokens: Sequence[int] | None = None, batch_size: int = 16
               ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Codes ``[n_tokens_i, len(features)]`` of each prompt (columns in ``features`` order), optionally with each
    prompt's own ``edits``; each layer's codes are read *before* the edits at that hook point. With
    ``refusal_tokens``, also each prompt's refusal score (the forward then runs to the end)."""
    by_layer, order = _columns(features)
    deepest = max(by_layer)
    out: list[torch.Tensor | None] = [None] * len(prompts)
    scores = torch.zeros(len(prompts)) if refusal_tokens is not None else None

    def stop(act: torch.Tensor) -> None:
        raise StopForward

    for idx in length_sorted_batches([len(p) for p in prompts], batch_size):
        batch = handle.batch([prompts[i] for i in idx])
        got: dict[int, torch.Tensor] = {}
        hooks = [(hook_name(L), _reader(saes, L, by_layer[L], got)) for L in by_layer]
        if edits is not None:
            hooks += row_routed_hooks(handle, [edits[i] for i in idx])
        if refusal_tokens is None:
            hooks.append((hook_name(deepest), stop))
        with handle.hooks(hooks):
            try:
                logits = handle.forward(batch)
                scores[idx] = refusal_score_from_logits(logits[:, -1], refusal_tokens).float().cpu()
            except StopForward:
                pass
        cols = torch.cat([got[L] for L in by_layer], dim=-1)[..., order].float().cpu()
        for j, i in enumerate(idx):
            out[i] = cols[j, -len(prompts[i]) :]
    return out, scores  # type: ignore[return-value]


def relative_drop(base: torch.Tensor, new: torch.Tensor, eps: float = 1e-6) -> float | None:
    """Mean over features of ``(base − new) / base``, over the features active at baseline (``None``: none is)."""
    keep = base.abs() > eps
    if not keep.any():
        return None
    return float(((base - new)[keep] / base[keep]).mean())


# --- per-prompt sets from per-position attributions ------------------------------------------------------------------------
@dataclass
class PromptAttribution:
    """One prompt's set and the per-position attributions of the prefilter features (``[n_tokens, n_prefilter]``)."""

    prompt: FormattedPrompt
    top: FeatureSet  # its top K by attribution averaged over content positions
    per_position: torch.Tensor


def per_position_sets(handle: ModelHandle, saes: Mapping[int, object], prefilter: FeatureSet, direction: torch.Tensor,
                      prompts: Sequence[str], refusal_tokens: Sequence[int], k: int, steps: int, batch_size: int,
                      progress: bool = True, desc: str = "LA-IG per position") -> list[PromptAttribution]:
    """LA-IG (direction ablated at every layer as the patched run, :func:`~refusal_sae.search.attribution.ig_batch`)
    of each prompt, restricted to the ``prefilter`` features; each prompt's set is its top ``k``."""
    layers = sorted(prefilter.by_layer())
    by_layer, order = _columns(prefilter)
    formatted = [handle.format(p) for p in prompts]
    patch = DirectionAblation(direction.float()).hooks(handle)
    out: list[PromptAttribution | None] = [None] * len(prompts)
    for idx in tqdm(length_sorted_batches([len(p) for p in formatted], batch_size), desc=desc, unit="batch",
                    disable=not progress):
        batch = handle.batch([formatted[i] for i in idx])
        keep = content_mask(batch).float().cpu()
        feat, _ = ig_batch(handle, saes, layers, batch, patch, refusal_tokens, steps)
        cols = torch.cat([feat[L][..., list(by_layer[L])].float().cpu() for L in layers], dim=-1)[..., order]
        mean = (cols * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1)
        for j, i in enumerate(idx):
            n = len(formatted[i])
            top = mean[j].topk(min(k, len(prefilter))).indices.tolist()
            out[i] = PromptAttribution(formatted[i], FeatureSet(tuple(prefilter.items[t] for t in top)),
                                       cols[j, -n:].clone())
    return out  # type: ignore[return-value]


def shared_features(sets: Sequence[FeatureSet], share: float) -> FeatureSet:
    """The features in at least ``share`` of ``sets``, most shared first (ties in order of first appearance)."""
    counts: dict[tuple[int, int], int] = {}
    for s in sets:
        for x in s:
            counts[x] = counts.get(x, 0) + 1
    need = share * len(sets) - 1e-9
    ranked = sorted(counts, key=lambda x: -counts[x])
    return FeatureSet(tuple(x for x in ranked if counts[x] >= need))


@dataclass
class ThresholdRow:
    threshold: float
    n_train: int  # shared features on the training prompts
    n_val: int
    jaccard: float


def choose_threshold(train: Sequence[FeatureSet], val: Sequence[FeatureSet], thresholds: Sequence[float]
                     ) -> tuple[float, FeatureSet, list[ThresholdRow]]:
    """The rule in :data:`RULE`: (X, the shared set of the training prompts at X, one row per threshold)."""
    rows = []
    for x in thresholds:
        a, b = set(shared_features(train, x).items), set(shared_features(val, x).items)
        rows.append(ThresholdRow(x, len(a), len(b), len(a & b) / len(a | b) if a | b else 0.0))
    ok = [r for r in rows if r.n_train > 0 and r.n_val > 0]
    if not ok:
        raise DataError("no threshold leaves a feature shared by the per-prompt sets of both the training and the "
                        "validation prompts; lower the thresholds")
    best = max(ok, key=lambda r: (round(r.jaccard, 9), r.threshold))
    return best.threshold, shared_features(train, best.threshold), rows


def upstream_position(attr: torch.Tensor, n_tokens: int, last: int, frac: float = 1.0) -> int | None:
    """The position an upstream feature is clamped from: among content positions outside the last ``last`` tokens
    (the first token excluded), the earliest whose attribution reaches ``frac`` × their maximum (``frac = 1``: the
    highest-attribution position, as the reference implementation); ``None`` when none is positive."""
    lo, hi = 1, n_tokens - last
    if hi <= lo:
        return None
    a = attr[lo:hi]
    peak = float(a.max())
    if peak <= 0:
        return None
    return lo + int((a >= frac * peak).nonzero()[0])


# --- token-level attribution -----------------------------------------------------------------------------------------------
def token_attribution(handle: ModelHandle, saes: Mapping[int, object], features: FeatureSet, scale: torch.Tensor,
                      prompts: Sequence[FormattedPrompt], last: int, batch_size: int = 8, progress: bool = True
                      ) -> list[torch.Tensor]:
    """Gradient × input ``[n_tokens_i]`` of each prompt's metric — the mean over ``features`` (each divided by its
    ``scale``) of the activation averaged over the last ``last`` tokens — with respect to each token's embedding
    (summed over the embedding dimensions). Negative: the token pushes the refusal features down."""
    by_layer, order = _columns(features)
    deepest = max(by_layer)
    emb_layer = handle.model.get_input_embeddings()
    out: list[torch.Tensor | None] = [None] * len(prompts)
    scale = scale.clamp_min(1e-6)

    def stop(act: torch.Tensor) -> None:
        raise StopForward

    for idx in tqdm(length_sorted_batches([len(p) for p in prompts], batch_size), desc="token attribution",
                    unit="batch", disable=not progress):
        batch = handle.batch([prompts[i] for i in idx])
        got: dict[int, torch.Tensor] = {}
        hooks = [(hook_name(L), _reader(saes, L, by_layer[L], got)) for L in by_layer] + [(hook_name(deepest), stop)]
        with torch.enable_grad(), frozen(handle.model, *(saes[L] for L in by_layer)), handle.hooks(hooks):
            emb = emb_layer(batch.input_ids).detach().requires_grad_(True)
            try:
                handle.model(inputs_embeds=emb, attention_mask=batch.attention_mask,
                             position_ids=position_ids_for(batch.attention_mask), use_cache=False)
            except StopForward:
                pass
            codes = torch.cat([got[L] for L in by_layer], dim=-1)[..., order].float()
            metric = (codes[:, -last:] / scale.to(codes.device)).mean((1, 2))
            metric.sum().backward()
        attr = (emb.grad * emb.detach()).sum(-1).float().cpu()
        for j, i in enumerate(idx):
            out[i] = attr[j, -len(prompts[i]) :]
    return out  # type: ignore[return-value]


def token_roles(handle: ModelHandle, prompt: str, payload: Sequence[str]) -> tuple[FormattedPrompt, list[str]]:
    """Each token of the formatted ``prompt``: ``template`` (chat template, or the first token), ``payload`` (overlaps
    the instruction's own text inside the wrapper), or ``wrapper`` (the jailbreak's text); ``unknown`` instead of
    payload / wrapper when the payload cannot be located."""
    f = handle.format(prompt)
    text = render_chat(handle.tokenizer, prompt, handle.system_prompt)
    start = text.rfind(prompt)
    enc = handle.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offs = list(enc["offset_mapping"])
    shift = len(f.input_ids) - len(offs)
    if shift < 0 or tuple(f.input_ids[shift:]) != tuple(enc["input_ids"]):
        return f, ["unknown"] * len(f.input_ids)
    spans = []
    for piece in payload:
        at = prompt.find(piece)
        if at >= 0:
            spans.append((start + at, start + at + len(piece)))
    roles = ["template"] * shift
    for a, b in offs:
        if not (b > a and a < start + len(prompt) and b > start):
            roles.append("template")
        elif not spans:
            roles.append("unknown")
        else:
            roles.append("payload" if any(a < e and b > s for s, e in spans) else "wrapper")
    roles[0] = "template"
    return f, roles


@dataclass
class TokenScore:
    token: str
    mean: float  # mean attribution per occurrence
    count: int


@dataclass
class FamilyTokens:
    family: str
    n_prompts: int
    wrapper: float  # mean per prompt of the summed attribution of the wrapper's tokens
    payload: float  # … of the instruction's own tokens
    template: float  # … of the chat template's tokens
    by_outcome: dict[str, float]  # jailbroken / failed / degenerate → mean summed wrapper attribution
    top: list[TokenScore]  # the wrapper tokens with the most negative mean attribution (≥ 2 occurrences)


def family_tokens(rows: Sequence[dict], attrs: Sequence[torch.Tensor], roles: Sequence[list[str]],
                  tokens: Sequence[list[str]], top: int, min_count: int = 2) -> list[FamilyTokens]:
    """Aggregate token attributions per family (see :class:`FamilyTokens`)."""
    out = []
    for fam in dict.fromkeys(r["family"] for r in rows):
        idx = [i for i, r in enumerate(rows) if r["family"] == fam]
        sums = {role: [float(sum(a for a, ro in zip(attrs[i].tolist(), roles[i], strict=True)
                                 if ro == role or (role == "wrapper" and ro == "unknown"))) for i in idx]
                for role in ("wrapper", "payload", "template")}
        by_out: dict[str, list[float]] = {}
        for i, s in zip(idx, sums["wrapper"], strict=True):
            by_out.setdefault(rows[i]["outcome"], []).append(s)
        per_tok: dict[str, list[float]] = {}
        for i in idx:
            for a, ro, t in zip(attrs[i].tolist(), roles[i], tokens[i], strict=True):
                if ro in ("wrapper", "unknown") and t.strip():
                    per_tok.setdefault(t.strip(), []).append(a)
        scored = [TokenScore(t, sum(v) / len(v), len(v)) for t, v in per_tok.items() if len(v) >= min_count]
        scored.sort(key=lambda s: s.mean)
        out.append(FamilyTokens(fam, len(idx), *(sum(v) / len(v) for v in sums.values()),
                                {k: sum(v) / len(v) for k, v in by_out.items()}, scored[:top]))
    return out


# --- statistics ------------------------------------------------------------------------------------------------------------
def cluster_bootstrap(values: Sequence[float], clusters: Sequence[str], n_boot: int = 1000, seed: int = 0
                      ) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values``, resampling whole clusters (the pairs of one instruction
    share its plain prompt, so they are not independent)."""
    groups: dict[str, list[float]] = {}
    for v, c in zip(values, clusters, strict=True):
        groups.setdefault(c, []).append(v)
    keys = list(groups)
    if not keys:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    means = []
    for _ in range(n_boot):
        pick = [v for k in rng.choices(keys, k=len(keys)) for v in groups[k]]
        means.append(sum(pick) / len(pick))
    means.sort()
    return (means[int(0.025 * (n_boot - 1))], means[int(0.975 * (n_boot - 1))])


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


# --- results ---------------------------------------------------------------------------------------------------------------
@dataclass
class DropRow:
    """One group of pairs (or all analysed instructions): mean relative drops with cluster-bootstrap 95% CIs."""

    group: str
    n_pairs: int
    n_instructions: int
    harm_drop: Float  # natural: upstream features, mean over the prompt, plain → wrapped
    harm_ci: tuple[Float, Float]
    refusal_drop: Float  # natural: refusal features, mean over the last tokens, plain → wrapped
    refusal_ci: tuple[Float, Float]
    ablation_drop: Float  # causal: refusal features when the plain prompt's upstream features are clamped
    ablation_ci: tuple[Float, Float]
    random_drop: Float  # … when random same-layer features are clamped from the same positions
    random_ci: tuple[Float, Float]
    score_plain: Float  # mean refusal score of the plain prompts
    score_ablated: Float
    score_random: Float


@dataclass
class UpstreamResult(StageResult):
    """``analysis/upstream``: refusal features, the drop table (jailbroken vs failed), suppressing tokens per family."""

    kind = "analysis_upstream"
    jsonl_fields = ("instructions", "pairs")

    refusal_features: FeatureSet
    threshold: float
    rule: str
    thresholds: list[ThresholdRow]
    n_train: int  # refused harmful_train prompts whose per-prompt sets define the refusal features
    n_val: int
    k: int
    clamp: float
    last: int
    jailbreaks: str
    table: list[DropRow]
    difference: dict[str, dict]  # jailbroken − failed: {measure: {diff, ci}}
    tokens: list[FamilyTokens]
    skipped: dict[str, int]
    notes: list[str] = field(default_factory=list)
    instructions: list[dict] = field(default_factory=list)  # per plain instruction: set, upstream, positions, drops
    pairs: list[dict] = field(default_factory=list)  # per pair: family, outcome, natural drops


# --- the analysis ------------------------------------------------------------------------------------------------------------
@dataclass
class UpstreamInputs:
    train: list[str]  # refused harmful_train prompts
    val: list[str]
    pairs: list[dict]  # jailbreak rows whose plain instruction is refused (control excluded)


def _draw_random(rng: random.Random, alive: Mapping[int, Sequence[int]], upstream: Sequence[tuple[int, int]],
                 exclude: set) -> list[tuple[int, int]] | None:
    out = []
    for L, _ in upstream:
        pool = [f for f in alive.get(L, ()) if (L, f) not in exclude and (L, f) not in out]
        if not pool:
            return None
        out.append((L, rng.choice(pool)))
    return out


def _clamps(saes, items: Sequence[tuple[int, int]], positions: Sequence[int], n: int, c: float) -> list[Intervention]:
    by_layer: dict[int, tuple[list[int], list[int]]] = {}
    for (L, f), p in zip(items, positions, strict=True):
        ids, ps = by_layer.setdefault(L, ([], []))
        ids.append(f)
        ps.append(p)
    return [FeatureClampFrom.from_positions(saes[L], ids, ps, n, c) for L, (ids, ps) in sorted(by_layer.items())]


def upstream_analysis(handle: ModelHandle, saes: Mapping[int, object], inputs: UpstreamInputs, cfg: UpstreamConfig,
                      direction: DirectionResult, cands: CandidatesResult, k: int, c: float, jailbreaks: str,
                      progress: bool = True) -> UpstreamResult:
    prefilter, tokens_r = cands.prefilter, cands.refusal_tokens

    def sets_of(prompts: list[str], desc: str) -> list[PromptAttribution]:
        return per_position_sets(handle, saes, prefilter, direction.direction, prompts, tokens_r, k, cfg.ig_steps,
                                 cfg.batch_size, progress, desc)

    train_sets = [a.top for a in sets_of(inputs.train, "LA-IG (training prompts)")]
    val_sets = [a.top for a in sets_of(inputs.val, "LA-IG (validation prompts)")]
    threshold, refusal, thr_rows = choose_threshold(train_sets, val_sets, cfg.thresholds)
    plain = list(dict.fromkeys(r["instruction"] for r in inputs.pairs))
    attrs = sets_of(plain, "LA-IG (jailbreak instructions)")
    skipped = {"no upstream feature": 0, "no upstream position": 0, "no deeper refusal feature": 0}
    in_refusal = set(refusal.items)
    cols = {x: i for i, x in enumerate(prefilter.items)}
    info, placed_of = [], []
    for inst, a in zip(plain, attrs, strict=True):
        n = len(a.prompt)
        up = [x for x in a.top if x not in in_refusal]
        pos = {x: upstream_position(a.per_position[:, cols[x]], n, cfg.last, cfg.position_frac) for x in up}
        placed = [x for x in up if pos[x] is not None]
        if not up:
            skipped["no upstream feature"] += 1
        elif not placed:
            skipped["no upstream position"] += 1
        placed_of.append(placed)
        info.append({"instruction": inst, "n_tokens": n, "set": [list(x) for x in a.top],
                     "upstream": [list(x) for x in up], "positions": {f"{L}:{f}": pos[(L, f)] for L, f in up},
                     "ablated": [list(x) for x in placed]})
    # natural drops: codes of the refusal and upstream features, plain and wrapped
    union = FeatureSet.of([*refusal.items, *(tuple(x) for i in info for x in i["upstream"])])
    col = {x: j for j, x in enumerate(union.items)}
    rcols = [col[x] for x in refusal.items]
    fmt_plain = [a.prompt for a in attrs]
    plain_codes, plain_scores = read_codes(handle, saes, union, fmt_plain, refusal_tokens=tokens_r,
                                           batch_size=cfg.batch_size)
    wrapped_fmt = [handle.format(r["prompt"]) for r in inputs.pairs]
    wrapped_codes, _ = read_codes(handle, saes, union, wrapped_fmt, batch_size=cfg.batch_size)
    by_inst = {inst: j for j, inst in enumerate(plain)}
    pair_rows = []
    for r, wc in zip(inputs.pairs, wrapped_codes, strict=True):
        j = by_inst[r["instruction"]]
        pc = plain_codes[j]
        ucols = [col[tuple(x)] for x in info[j]["upstream"]]
        harm = relative_drop(pc[1:, ucols].mean(0), wc[1:, ucols].mean(0)) if ucols else None
        ref = relative_drop(pc[-cfg.last :, rcols].mean(0), wc[-cfg.last :, rcols].mean(0))
        pair_rows.append({"instruction": r["instruction"], "family": r["family"], "outcome": r["outcome"],
                          "harm_drop": harm, "refusal_drop": ref})
    # causal drops: clamp each instruction's placed upstream features from their positions (and random controls)
    rng = random.Random(f"refusal-sae-upstream:{cfg.seed}")
    alive = {int(L): [int(f) for f in fs] for L, fs in cands.alive.items()}
    edits: list[list[Intervention]] = []
    random_edits: list[list[list[Intervention]]] = [[] for _ in range(cfg.n_random)]
    measured: list[list[int]] = []
    for i, a, placed in zip(info, attrs, placed_of, strict=True):
        low = min((L for L, _ in placed), default=None)
        meas = [j for j, (L, _) in enumerate(refusal.items) if low is not None and L > low]
        if placed and not meas:
            skipped["no deeper refusal feature"] += 1
        measured.append(meas)
        positions = [i["positions"][f"{L}:{f}"] for L, f in placed]
        edits.append(_clamps(saes, placed, positions, i["n_tokens"], c) if placed else [])
        exclude = set(a.top.items) | in_refusal
        for d in range(cfg.n_random):
            draw = _draw_random(rng, alive, placed, exclude) if placed else None
            random_edits[d].append(_clamps(saes, draw, positions, i["n_tokens"], c) if draw else [])
    abl_codes, abl_scores = read_codes(handle, saes, refusal, fmt_plain, edits, tokens_r, cfg.batch_size)
    rnd = [read_codes(handle, saes, refusal, fmt_plain, e, tokens_r, cfg.batch_size) for e in random_edits]
    base_last = [pc[-cfg.last :, rcols].mean(0) for pc in plain_codes]
    for j, i in enumerate(info):
        meas = measured[j]
        i["measured"] = [list(refusal.items[m]) for m in meas]
        if not meas or not edits[j]:
            i.update(ablation_drop=None, random_drop=None)
            continue
        draws = [(codes, sc) for d, (codes, sc) in enumerate(rnd) if random_edits[d][j]]
        rdrops = [x for x in (relative_drop(base_last[j][meas], codes[j][-cfg.last :, meas].mean(0))
                              for codes, _ in draws) if x is not None]
        i.update(ablation_drop=relative_drop(base_last[j][meas], abl_codes[j][-cfg.last :, meas].mean(0)),
                 random_drop=_mean(rdrops) if rdrops else None, score_plain=float(plain_scores[j]),
                 score_ablated=float(abl_scores[j]), score_random=_mean([float(sc[j]) for _, sc in draws]))
    table = _drop_table(pair_rows, info, cfg.seed)
    diff = _differences(pair_rows, info, cfg.seed)
    # suppressing tokens: gradient × input on every wrapped prompt of the pairs
    scale = torch.stack(base_last).mean(0)
    live = [j for j in range(len(refusal)) if float(scale[j]) > 1e-6]
    notes = []
    tok_rows: list[FamilyTokens] = []
    if live:
        rset = FeatureSet(tuple(refusal.items[j] for j in live))
        roles, toks, fmts = [], [], []
        for r in inputs.pairs:
            f, ro = token_roles(handle, r["prompt"], payload_pieces(r))
            fmts.append(f)
            roles.append(ro)
            toks.append([handle.tokenizer.decode([t]) for t in f.input_ids])
        attr = token_attribution(handle, saes, rset, scale[live], fmts, cfg.last, cfg.batch_size, progress)
        tok_rows = family_tokens(inputs.pairs, attr, roles, toks, cfg.top_tokens)
    else:
        notes.append("no refusal feature is active on the plain prompts' last tokens: no token attribution")
    counts = {o: sum(p["outcome"] == o for p in pair_rows) for o in ("jailbroken", "failed", "degenerate")}
    if counts["jailbroken"] < 5:
        notes.append(f"only {counts['jailbroken']} jailbroken pairs (plain refused, wrapped complied per the judge): "
                     "the jailbroken row rests on them alone")
    return UpstreamResult(refusal, threshold, RULE, thr_rows, len(inputs.train), len(inputs.val), k, c, cfg.last,
                          jailbreaks, table, diff, tok_rows, skipped, notes, info, pair_rows)


def _stat(values: Sequence[float | None], clusters: Sequence[str], seed: int) -> tuple[float, tuple[float, float]]:
    kept = [(v, c) for v, c in zip(values, clusters, strict=True) if v is not None]
    if not kept:
        return float("nan"), (float("nan"), float("nan"))
    vs, cs = zip(*kept, strict=True)
    return _mean(vs), cluster_bootstrap(vs, cs, seed=seed)


def _drop_table(pairs: list[dict], info: list[dict], seed: int) -> list[DropRow]:
    by_inst = {i["instruction"]: i for i in info}
    rows = []
    groups = [(g, [p for p in pairs if p["outcome"] == g]) for g in ("jailbroken", "failed", "degenerate")]
    groups.append(("all pairs", pairs))
    for name, ps in groups:
        insts = [p["instruction"] for p in ps]
        hd, hci = _stat([p["harm_drop"] for p in ps], insts, seed)
        rd, rci = _stat([p["refusal_drop"] for p in ps], insts, seed)
        ad, aci = _stat([by_inst[x].get("ablation_drop") for x in insts], insts, seed)
        xd, xci = _stat([by_inst[x].get("random_drop") for x in insts], insts, seed)
        scored = [by_inst[x] for x in insts if by_inst[x].get("ablation_drop") is not None]
        rows.append(DropRow(name, len(ps), len(set(insts)), hd, hci, rd, rci, ad, aci, xd, xci,
                            _mean([s["score_plain"] for s in scored]), _mean([s["score_ablated"] for s in scored]),
                            _mean([s["score_random"] for s in scored])))
    return rows


def _differences(pairs: list[dict], info: list[dict], seed: int, n_boot: int = 1000) -> dict[str, dict]:
    """Jailbroken − failed mean of each drop, with a 95% interval from resampling instructions within each group."""
    by_inst = {i["instruction"]: i for i in info}
    out = {}
    for measure, get in (("harm_drop", lambda p: p["harm_drop"]), ("refusal_drop", lambda p: p["refusal_drop"]),
                         ("ablation_drop", lambda p: by_inst[p["instruction"]].get("ablation_drop"))):
        groups = {}
        for g in ("jailbroken", "failed"):
            vals: dict[str, list[float]] = {}
            for p in pairs:
                v = get(p)
                if p["outcome"] == g and v is not None:
                    vals.setdefault(p["instruction"], []).append(v)
            groups[g] = vals
        if not groups["jailbroken"] or not groups["failed"]:
            out[measure] = {"diff": None, "ci": None, "n_jailbroken": sum(map(len, groups["jailbroken"].values())),
                            "n_failed": sum(map(len, groups["failed"].values()))}
            continue

        def mean_of(g: dict[str, list[float]], keys) -> float:
            xs = [v for k in keys for v in g[k]]
            return sum(xs) / len(xs)

        a, b = groups["jailbroken"], groups["failed"]
        diff = mean_of(a, a) - mean_of(b, b)
        rng = random.Random(seed)
        ka, kb = list(a), list(b)
        boots = sorted(mean_of(a, rng.choices(ka, k=len(ka))) - mean_of(b, rng.choices(kb, k=len(kb)))
                       for _ in range(n_boot))
        out[measure] = {"diff": diff, "ci": [boots[int(0.025 * (n_boot - 1))], boots[int(0.975 * (n_boot - 1))]],
                        "n_jailbroken": sum(map(len, a.values())), "n_failed": sum(map(len, b.values()))}
    return out


def prepare_upstream(run: RunDir, cfg: UpstreamConfig) -> tuple:
    """Everything checked before the model loads: the settings and the earlier results this analysis reads."""
    cfg.validate()
    direction = DirectionResult.from_run(run.root)
    hint = f"refusal-sae search --run-dir {run.root}"
    cands = run.require(CandidatesResult, hint, "search/candidates")
    choice = run.require(ChoiceResult, hint, "search/choice")
    jb = load_jailbreaks(run, cfg.jailbreaks)
    if not jb.pairs():
        raise DataError(f"the jailbreak table {cfg.jailbreaks} has no pair whose plain instruction the model refuses "
                        "(file mode needs a plain / plain_instruction field)")
    return direction, cands, choice, jb


def run_upstream_stage(handle: ModelHandle, saes, run: RunDir, cfg: UpstreamConfig, data_dir=None,
                       progress: bool = True, force: bool = False) -> UpstreamResult:
    """The upstream → downstream analysis in ``run`` (``analysis/upstream``)."""
    saes.validate(handle)
    direction, cands, choice, jb = prepare_upstream(run, cfg)
    missing = [L for L in cands.layers if L not in saes.layers()]
    if missing:
        raise MismatchError(f"the search used SAEs at layers {missing}, which the given SAEs lack")
    k = cfg.k or choice.k
    c = choice.c if cfg.clamp is None else cfg.clamp
    train = load_dataset("harmful_train", data_dir).sample(cfg.n_train, cfg.seed).instructions
    val = load_dataset("harmful_val", data_dir).sample(cfg.n_val, cfg.seed).instructions
    stages = run.manifest().get("stages", {})
    identity = cfg.to_dict() | {"model_revision": handle.revision, "saes": saes.identity(), "k_used": k, "c_used": c,
                                "upstream": {n: (stages.get(n) or {}).get("config_hash")
                                             for n in ("direction", "search/candidates", "search/choice", cfg.jailbreaks)}}

    def compute() -> UpstreamResult:
        cache = answer_cache(run, handle, cfg.max_new_tokens, cfg.judge, 32, progress)
        tr = [p for p, lab in zip(train, cache.labels(train, "harmful_train answers"), strict=True) if lab == REFUSED]
        va = [p for p, lab in zip(val, cache.labels(val, "harmful_val answers"), strict=True) if lab == REFUSED]
        if not tr or not va:
            raise DataError("the model refuses none of the training or validation prompts sampled")
        pairs = jb.pairs()
        if cfg.max_instructions is not None:
            insts = list(dict.fromkeys(p["instruction"] for p in pairs))
            keep = set(random.Random(cfg.seed).sample(insts, min(cfg.max_instructions, len(insts))))
            pairs = [p for p in pairs if p["instruction"] in keep]
        return upstream_analysis(handle, saes, UpstreamInputs(tr, va, pairs), cfg, direction, cands, k, c,
                                 cfg.jailbreaks, progress)

    return run.run(UpstreamResult, identity, compute, name="analysis/upstream", force=force)
