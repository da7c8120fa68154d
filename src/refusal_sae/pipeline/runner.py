"""Run a pipeline config: check everything before any work, then each stage in order into one run directory.

``check`` does every check it can and returns the :class:`Plan`; ``--dry-run`` prints it and stops (the model's facts
come from its config and tokenizer, never from a download); ``run`` loads the model, re-checks against it, loads and
checks the SAEs, then runs the stages. Each stage's results are skipped when complete for the same config (the run
directory's rule), so a killed run restarted with the same config resumes and ends with the same results.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refusal_sae.errors import ConfigError, DataError, ModelLoadError, RefusalSaeError
from refusal_sae.pipeline.config import PipelineConfig
from refusal_sae.pipeline.facts import (
    ModelFacts,
    SaeFacts,
    hub_offline,
    offline_release_error,
    probe_model,
    sae_facts,
)
from refusal_sae.pipeline.protocol import CheckContext, NotRun, PlanRow
from refusal_sae.pipeline.stages import STAGES, check_sae_facts

CONFIG_COPY = "config.yaml"


@dataclass
class Plan:
    config: PipelineConfig
    run_dir: Path
    data_dir: Path | None
    facts: ModelFacts
    sae_facts: SaeFacts | None
    dataset_sizes: dict[str, int]
    rows: list[PlanRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # checks skipped and why, things `run` would stop on

    def lines(self) -> list[str]:
        c, f = self.config, self.facts
        spec = c.model
        out = [f"config   {c.source or '(built in)'} → run directory {self.run_dir}"]
        shape = (f"{f.n_layers} layers, d_model {f.d_model}, {f.n_post_inst} post-instruction tokens"
                 if f.n_layers is not None else "layers unknown")
        out.append(f"model    {f.name}{' + ' + spec.adapter if spec.adapter else ''} (dtype {spec.dtype}, device "
                   f"{spec.device}): {shape}")
        if self.sae_facts is not None:
            sf = self.sae_facts
            layers = sorted({e["layer"] for e in sf.entries if e["layer"] is not None})
            widths = sorted({e["d_sae"] for e in sf.entries if e["d_sae"]})
            cached = sum(e["cached"] for e in sf.entries)
            out.append(f"SAEs     {sf.source}: {len(sf.entries)} SAEs at layers {_ranges(layers)}"
                       + (f", width {'/'.join(map(str, widths))}" if widths else "")
                       + (f" (trained on {sf.model})" if sf.model else "")
                       + ("" if cached == len(sf.entries) else f"; {cached} of {len(sf.entries)} in the local HF cache"))
        out.append(f"data     {self.data_dir or 'downloaded on first use'}: "
                   + ", ".join(f"{k} {v}" for k, v in sorted(self.dataset_sizes.items())))
        out.append("")
        head = f"{'stage':17s} {'work':70s} {'prompts':>8s} {'fwd passes':>11s} {'gen tokens':>11s}"
        out += [head, "-" * len(head)]

        def num(x):
            return "?" if x is None else f"{x:,}"

        for r in self.rows:
            out.append(f"{r.stage:17s} {r.what[:70]:70s} {num(r.prompts):>8s} {num(r.forwards):>11s} {num(r.generated):>11s}")
        fw = None if any(r.forwards is None for r in self.rows) else sum(r.forwards for r in self.rows)
        out.append(f"{'total':17s} {'':70s} {'':>8s} {num(fw):>11s} {num(sum(r.generated for r in self.rows)):>11s}")
        out.append("(forward passes: one prompt through the model once, interventions included; generated tokens: "
                   "upper bound)")
        disk = self.on_disk()
        if disk:
            out.append("")
            out.append(f"run directory {self.run_dir} holds results of: "
                       + ", ".join(f"{st} ({len(rows)})" for st, rows in disk.items())
                       + "; a stage whose config is unchanged is skipped, any other is recomputed")
            out += [f"repair   {name} ({stage}): damaged, {why}: `run` recomputes it"
                    for stage, rows in disk.items() for name, why in rows if why]
        if self.notes:
            out.append("")
            out += [f"note: {n}" for n in self.notes]
        return out

    def on_disk(self) -> dict[str, list[tuple[str, str | None]]]:
        """The results already in the run directory, by the stage that made them: ``[(folder, damage or None)]``
        (damage: why the folder cannot be trusted; ``run`` recomputes it)."""
        from refusal_sae.runs import RunDir

        if not (self.run_dir / "manifest.json").exists():
            return {}
        out: dict[str, list] = {}
        notices: list[str] = []
        for name, entry, damage in RunDir(self.run_dir, log=notices.append, readonly=True).results():
            out.setdefault(_stage_of((entry or {}).get("kind"), name), []).append((name, damage))
        self.notes += [n for n in notices if n not in self.notes]
        return out


def _stage_of(kind: str | None, folder: str) -> str:
    """The stage that saves results of ``kind`` (its declaration, else the kind's or the folder's first word)."""
    for stage in STAGES.values():
        if kind in stage.results:
            return stage.name
    for word in ((kind or "").split("_")[0], folder.split("/")[0]):
        if word in STAGES:
            return word
    return folder.split("/")[0]


def _ranges(values: list[int]) -> str:
    if not values:
        return "?"
    if len(values) > 2 and all(b - a == values[1] - values[0] for a, b in zip(values, values[1:], strict=False)):
        step = values[1] - values[0]
        return f"{values[0]}-{values[-1]}" + (f" every {step}" if step > 1 else "")
    return ",".join(map(str, values))


def _data_dir(cfg: PipelineConfig) -> Path | None:
    from refusal_sae.data import default_data_dir

    return Path(cfg.data_dir) if cfg.data_dir else default_data_dir()


def _default_sae_folder(cfg: PipelineConfig, run_dir: Path) -> Path:
    from refusal_sae.models.embedded import EMBEDDED_ALIASES, EMBEDDED_REFUSING
    from refusal_sae.saes.loading import EMBEDDED_SAE_DIR, _has_saes

    run_saes = run_dir / "saes"
    embedded = EMBEDDED_ALIASES.get(cfg.model.model or EMBEDDED_REFUSING) == EMBEDDED_REFUSING
    if _has_saes(run_saes) or not embedded or cfg.model.adapter:
        return run_saes
    return EMBEDDED_SAE_DIR


def check(cfg: PipelineConfig, facts: ModelFacts | None = None, dry_run: bool = False) -> Plan:
    """Every check that needs no model weights (and, given ``facts``, those against the model); the plan."""
    from refusal_sae.checks import check_output_dir, check_output_file, outside_cwd
    from refusal_sae.data import PromptLimit, load_dataset
    from refusal_sae.models.device import check_dtype, parse_device

    run_dir = cfg.resolved_run_dir()
    notes: list[str] = list(cfg.judge_notes)
    # 1. stage order
    for i, name in enumerate(cfg.stages):
        for need in STAGES[name].requires(cfg.section(name)):
            if need not in cfg.stages[:i]:
                raise ConfigError(f"stage {name!r} needs stage {need!r} before it in stages")
    # 2. the model's settings, the device (a dry run may plan a run for another machine: noted) and adapter files
    absent = cfg.model.check("model.", device_present=not dry_run)
    if absent:
        notes.append(f"`run` would stop here: {absent}")
    if cfg.saes.device is not None:
        parse_device(cfg.saes.device, "saes.device")
    if cfg.saes.dtype is not None:
        check_dtype(cfg.saes.dtype, "saes.dtype")
    # 3. where it writes: writable (or creatable) without creating anything; outside the working directory: said
    check_output_dir(run_dir, "run_dir")
    if cfg.report.path:
        check_output_file(cfg.report.path, "report.path")
    for where in dict.fromkeys(filter(None, (outside_cwd(run_dir), cfg.report.path and outside_cwd(cfg.report.path)))):
        notes.append(f"writes outside the working directory: {where}")
    # 4. datasets
    data_dir = _data_dir(cfg)
    sizes: dict[str, int] = {}
    readers: dict[str, str] = {}  # dataset → the first stage reading it (named in errors)
    for name in cfg.stages:
        for d in STAGES[name].datasets(cfg.section(name)):
            if d not in sizes:
                readers[d] = name
                try:
                    sizes[d] = len(load_dataset(d, data_dir))
                except DataError as e:
                    raise DataError(f"{name}: {e}") from None
    # 5. SAEs (from their cfg.json or sae-lens' directory; their weights files checked, not loaded)
    sf = None
    if any(STAGES[n].uses_saes for n in cfg.stages):
        sf = sae_facts(cfg.saes, _default_sae_folder(cfg, run_dir))
        missing = [e["id"] for e in sf.entries if not e["cached"]]
        if cfg.saes.release and missing:
            if hub_offline(cfg.model):
                if not dry_run:
                    raise offline_release_error(cfg.saes, missing)
                notes.append(f"SAEs: {len(missing)} of {len(sf.entries)} not in the local HF cache and the hub is offline: "
                             "`run` would stop here; download them where the hub is reachable, or set saes.folder "
                             "(or --saes DIR) to a local copy")
            else:
                notes.append(f"SAEs: {len(missing)} of {len(sf.entries)} not in the local HF cache: `run` downloads them")
        if cfg.saes.release:
            notes.append("SAE widths (d_in vs d_model) are checked when `run` loads them")
    # 6. the model's facts
    if facts is None:
        facts = probe_model(cfg.model)
    if facts.note:
        notes.append(f"model: {facts.note}")
    # 7. every prompt fits the model's context (counted by its tokenizer where one is known; see data/limits.py)
    limit = PromptLimit.for_model(facts.context, facts.tokenizer, cfg.max_prompt_tokens)
    for d, name in readers.items():
        try:
            load_dataset(d, data_dir, limit=limit)
        except DataError as e:
            raise DataError(f"{name}: {e}") from None
    ctx = CheckContext(cfg, facts, data_dir, sizes, sf)
    check_sae_facts(ctx)
    rows: list[PlanRow] = []
    for name in cfg.stages:
        stage, section = STAGES[name], cfg.section(name)
        try:
            stage.check(ctx, section)
        except ConfigError as e:
            msg = str(e)
            raise type(e)(msg if msg.startswith(name) else f"{name}: {msg}") from None
        rows += stage.plan(ctx, section)
    return Plan(cfg, run_dir, data_dir, facts, sf, sizes, rows, notes)


@dataclass
class RunContext:
    """What a stage's runner gets: the config, the run directory, the loaded model and (lazily) the SAEs."""

    config: PipelineConfig
    run: Any  # RunDir
    data_dir: Path | None
    handle: Any  # ModelHandle
    results: dict[str, Any] = field(default_factory=dict)
    _saes: Any = None

    def saes(self):
        """The config's SAEs, loaded once and checked against the model."""
        if self._saes is None:
            self._saes = load_saes(self.config, self.handle, self.run.root)
        return self._saes


def load_saes(cfg: PipelineConfig, handle, run_dir: Path):
    from refusal_sae.saes.loading import SaeSet, default_sae_folder

    src = cfg.saes
    device = src.device or str(handle.device)
    if src.release:
        try:
            saes = SaeSet.from_release(src.release, src.resolved_ids(), device, src.dtype or "float32")
        except RefusalSaeError as e:
            raise ModelLoadError(f"{e}; if the hub is unreachable, point saes.folder (or --saes DIR) at a local copy "
                                 "with one sub-folder per SAE as sae-lens saves them") from None
    else:
        folder = Path(src.folder) if src.folder else default_sae_folder(handle, Path(run_dir) / "saes")
        saes = SaeSet.from_folder(folder, device, src.dtype)
    saes.validate(handle)
    return saes


def command_line() -> str:
    return "refusal-sae " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _stage_entries(run) -> dict:
    return dict(run.manifest().get("stages", {}))


def run_pipeline(cfg: PipelineConfig, log: Callable[[str], None] = print, handle=None) -> Path:
    """Check, then run every stage of ``cfg`` into its run directory; render the report. Returns the report's path."""
    import yaml

    from refusal_sae.report import render_report
    from refusal_sae.runs import RunDir, atomic_path, config_hash

    plan = check(cfg, ModelFacts(cfg.model.model or "embedded"))  # everything that needs no model
    for note in cfg.judge_notes:
        log(note)
    t0 = time.perf_counter()
    if handle is None:
        log(f"loading {cfg.model.name} ...")
        handle = cfg.model.load()
    facts = ModelFacts.from_handle(handle)
    plan = check(cfg, facts)  # again, against the loaded model
    run = RunDir(plan.run_dir, log=log)
    ctx = RunContext(cfg, run, plan.data_dir, handle)
    if any(STAGES[n].uses_saes for n in cfg.stages):
        ctx.saes()  # widths and hook layers checked before any stage starts
    log(f"model loaded in {time.perf_counter() - t0:.1f} s: {facts.name}, {facts.n_layers} layers, d_model {facts.d_model}")
    resolved = cfg.to_dict()
    run.root.mkdir(parents=True, exist_ok=True)
    with atomic_path(run.root / CONFIG_COPY) as tmp:
        tmp.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    run.record_model(handle)
    run._update_manifest(pipeline={"config": str(cfg.source) if cfg.source else None, "config_hash": config_hash(resolved),
                                   "stages": list(cfg.stages), "command": command_line()})
    for i, name in enumerate(cfg.stages, 1):
        stage = STAGES[name]
        before = _stage_entries(run)
        log(f"[{i}/{len(cfg.stages)}] {name}: {stage.doc}")
        t = time.perf_counter()
        try:
            result = stage.run(ctx, cfg.section(name))
        except KeyboardInterrupt:
            kept = len([k for k, v in _stage_entries(run).items() if before.get(k) != v])
            log(f"interrupted in stage [{i}/{len(cfg.stages)}] {name} after {time.perf_counter() - t:.0f} s; "
                f"{i - 1} earlier stage(s) and {kept} result(s) of this one are kept in {run.root}: "
                f"`{command_line()}` resumes from there")
            raise
        ctx.results[name] = result
        after = _stage_entries(run)
        changed = [k for k, v in after.items() if before.get(k) != v]
        status = (f"done in {time.perf_counter() - t:.1f} s" if changed else "complete for this config: skipped")
        summary = f"no result: {result.reason}" if isinstance(result, NotRun) else stage.summary(result)
        log(f"      {status}" + (f"; {summary}" if summary else ""))
    out = render_report(run.root, cfg.report.path, examples=cfg.report.examples, log=log)
    return out
