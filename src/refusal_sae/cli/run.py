"""`run`, `demo` and `report`: the whole pipeline from one config file, the demo on the embedded model, and the
HTML report of a run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from refusal_sae.cli.common import DataDirOpt, JsonOpt, app

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"  # packaged configs (the checkout's configs/ links here)

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a setting: section.key=value (YAML value; repeatable), e.g. --set direction.n_train=64 --set 'eval.*.n=16'.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Check the whole config (offline, no weights loaded) and print the plan: stages, sizes, estimated passes.")]
RunDirOpt = Annotated[Optional[Path], typer.Option("--run-dir", help="Run directory (default: the config's run_dir, else runs/<config name>).")]


def packaged_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(name: str) -> Path:
    """A config file path, or the name of a packaged config (``demo``, ``gemma-2-2b-it``, ...)."""
    from refusal_sae.errors import ConfigError

    path = Path(name)
    if path.is_file():
        return path
    for cand in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if cand.is_file() and "/" not in name:
            return cand
    raise ConfigError(f"config file not found: {name} (packaged configs: {', '.join(packaged_configs())})")


def _flag_overrides(raw: dict, run_dir, model, adapter, device, dtype, offline, saes, data_dir) -> dict:
    """The command-line flags on top of the file (after --set): they name one setting each."""
    for section, key, value in (("model", "model", model), ("model", "adapter", adapter), ("model", "device", device),
                                ("model", "dtype", dtype)):
        if value is not None:
            if not isinstance(raw.get(section), dict):
                raw[section] = {}
            raw[section][key] = value
    if offline:
        if not isinstance(raw.get("model"), dict):
            raw["model"] = {}
        raw["model"]["offline"] = True
    if saes is not None:
        raw["saes"] = {"folder": str(saes)}
    if run_dir is not None:
        raw["run_dir"] = str(run_dir)
    if data_dir is not None:
        raw["data_dir"] = str(data_dir)
    return raw


def execute(config: Path, sets, dry_run: bool, as_json: bool = False, **flags) -> None:
    from refusal_sae.pipeline.config import PipelineConfig, apply_overrides, load_config, read_config_file

    raw = _flag_overrides(apply_overrides(read_config_file(config), sets or []), **flags)
    cfg: PipelineConfig = load_config(config, raw=raw)
    if dry_run:
        from refusal_sae.pipeline.runner import check

        plan = check(cfg, dry_run=True)
        disk = plan.on_disk()
        for line in plan.lines():
            print(line)
        print("dry run: the config is valid as far as can be checked offline; nothing was run")
        if as_json:
            print(json.dumps({"run_dir": str(plan.run_dir), "stages": list(cfg.stages), "notes": plan.notes,
                              "rows": [r.__dict__ for r in plan.rows],
                              "on_disk": {st: [{"folder": n, "damage": d} for n, d in rows] for st, rows in disk.items()}}))
        return
    from refusal_sae.pipeline.runner import run_pipeline

    def log(msg: str) -> None:
        print(msg, flush=True)

    report = run_pipeline(cfg, log)
    print(f"report: {report}")
    if as_json:
        print(json.dumps({"run_dir": str(cfg.resolved_run_dir()), "report": str(report)}))


@app.command("run")
def run_cmd(
    config: Annotated[str, typer.Argument(help="Pipeline config (.yaml / .toml), or a packaged config's name: " + ", ".join(packaged_configs()) + ".")],
    dry_run: DryRunOpt = False,
    sets: SetOpt = None,
    run_dir: RunDirOpt = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Override model.model (HF id, local HF dir, .gguf, embedded name).")] = None,
    adapter: Annotated[Optional[str], typer.Option("--adapter", help="Override model.adapter (LoRA adapter directory).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="Override model.device: auto, cpu, cuda, ...")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="Override model.dtype: auto, float32, bfloat16, float16.")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the hub (model and SAE releases must be cached).")] = False,
    saes: Annotated[Optional[Path], typer.Option("--saes", help="Use the SAEs in this folder (one sub-folder per SAE saved by sae-lens) instead of the config's.")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the pipeline a config describes, stage by stage into one run directory, and write its report.html.

    Every setting is checked before any work; stages complete for the same config are skipped, so a killed run
    resumes when restarted."""
    execute(resolve_config(config), sets, dry_run, as_json, run_dir=run_dir, model=model, adapter=adapter,
            device=device, dtype=dtype, offline=offline, saes=saes, data_dir=data_dir)


@app.command("demo")
def demo_cmd(
    dry_run: DryRunOpt = False,
    sets: SetOpt = None,
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="Run directory (default: runs/demo).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda, ...")] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every stage on the embedded model at reduced sizes (the packaged demo.yaml; sizes in its comments), into
    runs/demo; ends by printing the report's path."""
    execute(CONFIG_DIR / "demo.yaml", sets, dry_run, as_json, run_dir=run_dir, model=None, adapter=None, device=device,
            dtype=None, offline=False, saes=None, data_dir=data_dir)


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (with manifest.json).")],
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write the report here (default: RUN_DIR/report.html).")] = None,
    examples: Annotated[int, typer.Option(help="Example generations per prompt set.")] = 3,
) -> None:
    """Render report.html from a run directory alone (no model): one self-contained file that opens offline."""
    from refusal_sae.report import render_report

    print(f"report: {render_report(run_dir, out_file, examples)}")
