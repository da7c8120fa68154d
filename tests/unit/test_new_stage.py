"""Adding a stage the way docs/run.md ("Adding a stage") tells a contributor to: a torch-free config, a runner that keeps
a typed result in the run directory, one ``Stage`` declaration and one registry line. The new stage then runs from a
config (resumable), shows in ``--dry-run``, has its options on a generated CLI command, and fails bad settings before
any work — with nothing else edited."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from refusal_sae.errors import ConfigError
from refusal_sae.pipeline.protocol import CheckContext, PlanRow, Stage
from refusal_sae.runs import StageResult
from tests.unit.test_pipeline import tiny_dir  # noqa: F401  (fixture)


# 1. the config: torch-free, its fields are the YAML keys and the CLI options
@dataclass
class PromptLengthsConfig:
    dataset: str = "harmful_val"  # prompt set whose lengths are counted
    n: int = 8  # a seeded sample of this many prompts
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"n must be positive, got {self.n}")


# 2. the typed result, saved and loaded by the run directory
@dataclass
class PromptLengths(StageResult):
    kind = "prompt_lengths"

    dataset: str
    lengths: list[int]


# 3. the work: (handle, prompts, config) -> result, kept in the run directory (skipped when complete)
def count_lengths(handle, run, cfg: PromptLengthsConfig, data_dir) -> PromptLengths:
    from refusal_sae.data import load_dataset

    prompts = load_dataset(cfg.dataset, data_dir, n=cfg.n, seed=cfg.seed)
    identity = {"model_revision": handle.revision, "dataset": cfg.dataset, "n": cfg.n, "seed": cfg.seed}
    return run.run(PromptLengths, identity, lambda: PromptLengths(
        cfg.dataset, [len(handle.tokenizer(p).input_ids) for p in prompts.instructions]))


# 4. the stage declaration
def _plan(ctx: CheckContext, cfg: PromptLengthsConfig) -> list[PlanRow]:
    n = ctx.size(cfg.dataset, cfg.n)
    return [PlanRow("prompt_lengths", f"token counts of {n} {cfg.dataset} prompts", n, 0)]


PROMPT_LENGTHS = Stage(
    "prompt_lengths", PromptLengthsConfig, lambda ctx, cfg: count_lengths(ctx.handle, ctx.run, cfg, ctx.data_dir), _plan,
    datasets=lambda cfg: (cfg.dataset,), summary=lambda res: f"mean {sum(res.lengths) / len(res.lengths):.1f} tokens",
    doc="token counts of a prompt set")


@pytest.fixture
def registered():
    from refusal_sae.pipeline.stages import register_stage, unregister_stage

    register_stage(PROMPT_LENGTHS)  # 5. the registry line
    yield PROMPT_LENGTHS
    unregister_stage("prompt_lengths")


def test_a_new_stage_runs_resumes_and_plans_from_a_config(registered, tiny_dir, data_dir, tmp_path):  # noqa: F811
    from refusal_sae.pipeline.config import load_config
    from refusal_sae.pipeline.runner import check, run_pipeline
    from refusal_sae.runs import RunDir

    raw = {"model": {"model": str(tiny_dir), "device": "cpu"}, "run_dir": str(tmp_path / "run"),
           "data_dir": str(data_dir), "stages": ["prompt_lengths"], "prompt_lengths": {"n": 4}}
    plan = check(load_config(raw=raw), dry_run=True)
    assert [r.what for r in plan.rows] == ["token counts of 4 harmful_val prompts"]
    logs: list[str] = []
    run_pipeline(load_config(raw=raw), logs.append)
    res = RunDir(tmp_path / "run").load(PromptLengths)
    assert res is not None and res.dataset == "harmful_val" and len(res.lengths) == 4 and min(res.lengths) > 0
    assert any("done in" in line and "mean" in line for line in logs)
    logs.clear()
    run_pipeline(load_config(raw=raw), logs.append)  # complete for the same config: skipped
    assert any("skipped" in line for line in logs)
    with pytest.raises(ConfigError, match="n must be positive"):
        load_config(raw=raw | {"prompt_lengths": {"n": 0}})
    with pytest.raises(ConfigError, match="unknown key 'size'"):
        load_config(raw=raw | {"prompt_lengths": {"size": 3}})


def test_a_new_stage_gets_a_generated_cli_command(registered, tiny_dir, data_dir, tmp_path):  # noqa: F811
    import typer
    from typer.testing import CliRunner

    from refusal_sae.cli.options import Command, stage_command

    app = typer.Typer()

    @app.command("prompt-lengths")
    @stage_command(PromptLengthsConfig)
    def prompt_lengths_cmd(cfg: PromptLengthsConfig, cmd: Command) -> None:
        """Token counts of a prompt set."""
        res = count_lengths(cmd.load(), cmd.run, cfg, cmd.data_dir)
        cmd.emit({"lengths": res.lengths})

    help_text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "--dataset" in help_text and "--n" in help_text and "Prompt set whose lengths are counted." in help_text
    r = CliRunner().invoke(app, ["--model", str(tiny_dir), "--device", "cpu", "--run-dir", str(tmp_path / "r"),
                                 "--data-dir", str(data_dir), "--n", "3", "--json"])
    assert r.exit_code == 0, (r.output, r.exception)
    last = [line for line in r.stdout.splitlines() if line.startswith("{")]
    assert last and len(json.loads(last[-1])["lengths"]) == 3, r.output
    bad = CliRunner().invoke(app, ["--model", str(tiny_dir), "--n", "0"])
    assert isinstance(bad.exception, ConfigError) and not (tmp_path / "r2").exists()
