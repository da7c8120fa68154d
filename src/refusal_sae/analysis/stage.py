"""Stage 5 as the pipeline sees it: the analyses ``jailbreaks``, ``upstream``, ``probes`` and ``harden`` (settings in
:mod:`.config` and :mod:`.config`, the work in the module of each name). Torch-free: runners import the work
lazily."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from refusal_sae.analysis.config import HardenConfig, JailbreaksConfig, ProbeConfig, UpstreamConfig
from refusal_sae.errors import ConfigError
from refusal_sae.pipeline.protocol import CheckContext, PlanRow, Stage

PROBE_SPLITS = ("harmful_train", "harmless_train", "harmful_val", "harmless_val", "harmless_test")
HARDEN_SPLITS = ("harmful_train", "harmless_train", "harmful_val", "harmless_val", "xstest_safe", "harmless_test")


def _n_families(families: Sequence[str] | None) -> int:
    from refusal_sae.data.jailbreaks import family_names

    return len(families) if families is not None else len(family_names())


def _jailbreak_pairs(ctx: CheckContext) -> tuple[int, int]:
    """(plain instructions, wrapped prompts of them) of the config's jailbreak table (wrap mode; 0, 0 otherwise)."""
    jb = ctx.config.stage_configs.get("jailbreaks")
    if jb is None or jb.dataset is not None:
        return 0, 0
    n = min(jb.n_instructions, sum(ctx.size(d, None) for d in jb.datasets))
    return n, n * _n_families(jb.families)


def _check_table_source(ctx: CheckContext, folder: str) -> None:
    """A reader of the jailbreak table (upstream, probes) must read the one this config's ``jailbreaks`` stage writes."""
    jb = ctx.config.stage_configs.get("jailbreaks")
    if jb is not None and "jailbreaks" in ctx.config.stages and jb.stage != folder:
        raise ConfigError(f"jailbreaks: reads the jailbreak table {folder}, but the jailbreaks stage writes {jb.stage}; "
                          f"set jailbreaks: {jb.stage}")


def _check_jailbreaks(ctx: CheckContext, cfg: JailbreaksConfig) -> None:
    from refusal_sae.analysis.jailbreaks import prepare

    prepare(cfg, ctx.data_dir)  # settings, families, prompt files (the command's own check)


def _plan_jailbreaks(ctx: CheckContext, cfg: JailbreaksConfig) -> list[PlanRow]:
    if cfg.dataset is not None:
        n = ctx.size(cfg.dataset, cfg.n)
        return [PlanRow("jailbreaks", f"{n} prompts of {Path(cfg.dataset).name} (+ their plain instructions), judged",
                        n, n, n * cfg.max_new_tokens)]
    total = sum(ctx.size(d, None) for d in cfg.datasets)
    plain = min(total, max(cfg.n_instructions, cfg.batch_size))  # one chunk; more when too few are refused
    fams = _n_families(cfg.families)
    wrapped = min(cfg.n_instructions, total) * (fams + int(cfg.neutral_control))
    what = f"{plain} plain held-out; ≤{cfg.n_instructions} refused × {fams} families" + (
        " + control" if cfg.neutral_control else "") + ", judged"
    return [PlanRow("jailbreaks", what, plain + wrapped, plain + wrapped, (plain + wrapped) * cfg.max_new_tokens)]


def _run_jailbreaks(ctx, cfg: JailbreaksConfig):
    from refusal_sae.analysis.jailbreaks import run_jailbreaks_stage

    return run_jailbreaks_stage(ctx.handle, ctx.run, cfg, ctx.data_dir)


def _sum_jailbreaks(res) -> str:
    def nr(r) -> str:
        return f"{r.family} {r.n - r.refused}/{r.n}"

    top = sorted(res.table, key=lambda r: -(r.n - r.refused) / max(r.n, 1))[:3]
    c = res.control
    ctl = f"; neutral control {c.n - c.refused}/{c.n}" if c is not None else ""
    return (f"{res.n_instructions or len(res.rows)} {'refused instructions' if res.mode == 'wrap' else 'prompts'}; "
            f"not refused: {', '.join(map(nr, top))}{ctl}")


JAILBREAKS = Stage(
    "jailbreaks", JailbreaksConfig, _run_jailbreaks, _plan_jailbreaks, _check_jailbreaks,
    datasets=lambda cfg: (cfg.dataset,) if cfg.dataset is not None else cfg.datasets, summary=_sum_jailbreaks,
    report=("jailbreaks",),
    results={"analysis_jailbreaks": "refusal_sae.analysis.jailbreaks:JailbreakResult"},
    doc="which jailbreak families make the model stop refusing, paired against a neutral wrapper (Wilson CIs, "
        "McNemar)")


def _check_upstream(ctx: CheckContext, cfg: UpstreamConfig) -> None:
    cfg.validate()
    _check_table_source(ctx, cfg.jailbreaks)
    search = ctx.config.stage_configs.get("search")
    layers = (search.layers or ctx.sae_layers()) if search is not None else None
    if cfg.k is not None and layers and cfg.k > search.k_per_layer * len(layers):
        raise ConfigError(f"k = {cfg.k} is larger than the search's candidate pool ({search.k_per_layer} per layer × "
                          f"{len(layers)} layers)")


def _plan_upstream(ctx: CheckContext, cfg: UpstreamConfig) -> list[PlanRow]:
    n_tr, n_va = ctx.size("harmful_train", cfg.n_train), ctx.size("harmful_val", cfg.n_val)
    plain, pairs = _jailbreak_pairs(ctx)
    if cfg.max_instructions is not None and plain:
        pairs, plain = pairs * min(plain, cfg.max_instructions) // plain, min(plain, cfg.max_instructions)
    ig = (n_tr + n_va + plain) * (3 * cfg.ig_steps + 2)  # LA-IG: interpolated forward + backward, clean / patched
    return [PlanRow("upstream", f"refusal features: LA-IG {cfg.ig_steps} steps, {n_tr}+{n_va} train/val, "
                                f"{len(cfg.thresholds)} X", n_tr + n_va,
                    n_tr + n_va + ig, (n_tr + n_va) * cfg.max_new_tokens),
            PlanRow("upstream", f"{plain} plain → {pairs} wrapped: drops, clamp + {cfg.n_random} random, tokens",
                    plain + pairs, plain * (2 + cfg.n_random) + 4 * pairs)]


def _run_upstream(ctx, cfg: UpstreamConfig):
    from refusal_sae.analysis.upstream import run_upstream_stage

    return run_upstream_stage(ctx.handle, ctx.saes(), ctx.run, cfg, ctx.data_dir)


def _sum_upstream(res) -> str:
    all_pairs = next((r for r in res.table if r.group == "all pairs"), None)

    def f(x) -> str:
        return "-" if x is None or x != x else f"{x:.2f}"

    drops = "" if all_pairs is None else (f"; all {all_pairs.n_pairs} pairs: refusal-feature drop {f(all_pairs.refusal_drop)}, "
                                          f"upstream clamped {f(all_pairs.ablation_drop)} vs random "
                                          f"{f(all_pairs.random_drop)}")
    return f"{len(res.refusal_features)} refusal features (in ≥ {res.threshold:.0%} of per-prompt sets){drops}"


UPSTREAM = Stage(
    "upstream", UpstreamConfig, _run_upstream, _plan_upstream, _check_upstream,
    requires=lambda cfg: ("direction", "search", "jailbreaks"), datasets=lambda cfg: ("harmful_train", "harmful_val"),
    uses_saes=True, summary=_sum_upstream, report=("upstream",),
    results={"analysis_upstream": "refusal_sae.analysis.upstream:UpstreamResult"},
    doc="upstream harm features → downstream refusal features: drops when a jailbreak works vs fails, the upstream "
        "clamp vs random, suppressing tokens")


def _requires_probes(cfg: ProbeConfig) -> tuple[str, ...]:
    need = ["search"]
    if cfg.ood_dataset is None:
        need.append("jailbreaks")  # the OOD test: the table's wrapped prompts
    if "shared" in cfg.feature_sets:
        need.append("upstream")  # the shared refusal features
    return tuple(need)


def _check_probes(ctx: CheckContext, cfg: ProbeConfig) -> None:
    from refusal_sae.data.registry import is_test_split

    cfg.validate()
    _check_table_source(ctx, cfg.jailbreaks)
    jb = ctx.config.stage_configs.get("jailbreaks")
    if jb is not None and "jailbreaks" in ctx.config.stages and jb.dataset is None \
            and not any(is_test_split(d) for d in jb.datasets):
        raise ConfigError(f"the jailbreak table wraps {list(jb.datasets)}, none a held-out test split; the probes are "
                          "tested on held-out prompts only (e.g. jailbreakbench, harmbench_test)")


def _plan_probes(ctx: CheckContext, cfg: ProbeConfig) -> list[PlanRow]:
    n_tr = ctx.size("harmful_train", cfg.n_train) + ctx.size("harmless_train", cfg.n_train)
    n_va = ctx.size("harmful_val", cfg.n_val) + ctx.size("harmless_val", cfg.n_val)
    n_te = ctx.size("harmless_test", cfg.n_test)
    plain, pairs = _jailbreak_pairs(ctx)
    ood = ctx.size(cfg.ood_dataset, cfg.n_ood) if cfg.ood_dataset else pairs
    labelled = n_tr + n_va + n_te + (ood if cfg.ood_dataset else 0)
    acts = n_tr + n_va + plain + n_te + ood + (0 if cfg.ood_dataset else plain)
    sets = len(cfg.feature_sets)
    return [PlanRow("probes", f"labels of {labelled}, activations of {acts}; {sets} sets, {sets}×{cfg.n_random} "
                              "random, dense", labelled + plain + ood,
                    labelled + acts, labelled * cfg.max_new_tokens)]


def _run_probes(ctx, cfg: ProbeConfig):
    from refusal_sae.analysis.probes import run_probe_stage

    return run_probe_stage(ctx.handle, ctx.saes(), ctx.run, cfg, ctx.data_dir)


def _sum_probes(res) -> str:
    def acc(test: str) -> str:
        rows = {r.probe: r for r in res.rows if r.test == test}
        return ", ".join(f"{p} {r.accuracy:.2f}" for p, r in rows.items() if not p.startswith("random (")
                         or p == f"random ({next(iter(res.feature_sets), '')} size)")

    return f"accuracy in distribution: {acc('in_distribution')}; OOD: {acc('ood')}"


PROBES = Stage(
    "probes", ProbeConfig, _run_probes, _plan_probes, _check_probes, requires=_requires_probes,
    datasets=lambda cfg: PROBE_SPLITS + ((cfg.ood_dataset, "jailbreakbench", "harmbench_test") if cfg.ood_dataset
                                         else ()),
    uses_saes=True, summary=_sum_probes, report=("probes",),
    results={"analysis_probes": "refusal_sae.analysis.probes:ProbeResult"},
    doc="probes of 'will it refuse' on refusal features vs random features vs the dense residual, in and out of "
        "distribution")


def _check_harden(ctx: CheckContext, cfg: HardenConfig) -> None:
    from refusal_sae.scoring.judge import get_judge

    cfg.validate(ctx.sae_layers())
    get_judge(cfg.judge)


def _plan_harden(ctx: CheckContext, cfg: HardenConfig) -> list[PlanRow]:
    n_jb = min(cfg.n_jailbreak, sum(ctx.size(d, None) for d in cfg.jailbreak_datasets))
    per = n_jb * (2 if cfg.attack != "none" else 1) + ctx.size("xstest_safe", cfg.n_xstest)
    n_h = ctx.size("harmless_test", cfg.n_harmless)
    per += n_h
    points = 1 + len(cfg.multipliers) + len(cfg.actadd_coeffs) + len(cfg.random_multipliers) * cfg.n_random
    calib = ctx.size("harmful_train", cfg.n_calib)
    gate = 2 * ctx.size("harmful_train", cfg.n_gate) + ctx.size("harmless_train", cfg.n_gate) \
        + 2 * ctx.size("harmful_val", cfg.n_gate) + ctx.size("harmless_val", cfg.n_gate)
    return [PlanRow("harden", f"targets on {calib} harmful_train; gate on {gate} train/val prompts", calib + gate,
                    2 * calib + gate, calib * cfg.max_new_tokens),
            PlanRow("harden", f"{points} points × {per} held-out (+{len(cfg.multipliers)} conditional); Δloss on "
                              f"{n_h}", per,
                    points * per + points * n_h + per, points * per * cfg.max_new_tokens)]


def _run_harden(ctx, cfg: HardenConfig):
    from refusal_sae.analysis.harden import run_harden_stage

    return run_harden_stage(ctx.handle, ctx.saes(), ctx.run, cfg, ctx.data_dir)


def _sum_harden(res) -> str:
    def show(p) -> str:
        att = f"attack {p.attack.k}/{p.attack.n}, " if p.attack is not None else ""
        return f"{p.name}: jailbreak {p.jailbreak.k}/{p.jailbreak.n}, {att}XSTest refused {p.xstest_refused.k}/" \
               f"{p.xstest_refused.n}, Δloss {p.loss_increase:.3f}"

    pick = [p for p in res.points if p.method == "none"]
    for method in ("steer", "actadd"):
        curve = res.curve(method)
        pick += curve[-1:]
    return "; ".join(map(show, pick))


HARDEN = Stage(
    "harden", HardenConfig, _run_harden, _plan_harden, _check_harden, requires=lambda cfg: ("direction", "search"),
    datasets=lambda cfg: HARDEN_SPLITS + tuple(cfg.jailbreak_datasets), uses_saes=True, summary=_sum_harden,
    report=("hardening",),
    results={"analysis_harden": "refusal_sae.analysis.harden:HardeningResult"},
    doc="hardening refusal by steering the refusal features up (and gated on a harm feature) vs actadd: attack "
        "success vs over-refusal vs loss increase")
