import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from refusal_sae.cli import app

runner = CliRunner()


def test_help_lists_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("eval", "compare", "make-refusing-model", "datasets"):
        assert cmd in r.output


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "refusal_sae", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


@pytest.mark.parametrize("args,needle", [
    (["eval", "--dataset", "no_such_set"], "unknown dataset"),
    (["eval", "--dataset", "/tmp/nope.json"], "not found"),
    (["eval", "--judge", "nope", "--dataset", "jailbreakbench"], "unknown judge"),
    (["eval", "--dataset", "jailbreakbench", "--intervention", "actadd", "--ablate-layers", "16-29"], "ablate only"),
    (["datasets", "--data-dir", "/nonexistent"], "file not found"),
    (["eval", "--n", "-3"], "positive number of prompts"),
    (["eval", "--max-new-tokens", "0"], "must be positive"),
    (["eval", "--intervention", "steer"], "unknown intervention"),
    (["eval", "--intervention", "ablate", "--ablate-layers", "3-1"], "--ablate-layers is empty"),
    (["calibrate-actadd", "--dataset", "harmless_test"], "held-out test split"),
    (["calibrate-actadd", "--coeffs", "1,x"], "cannot parse"),
])
def test_user_errors_exit_2_with_one_line(args, needle, tmp_path):
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.strip()]) == 1, r.stderr  # one error: line
    assert r.stderr.startswith("error:")
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_malformed_user_file_exit_2(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text("[{")
    r = run_cli("eval", "--dataset", str(f))
    assert r.returncode == 2 and "malformed JSON" in r.stderr


def test_datasets_json(data_dir):
    r = run_cli("datasets", "--data-dir", str(data_dir), "--json")
    assert r.returncode == 0
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert {x["name"] for x in rows} >= {"jailbreakbench", "harmless_test"}


def test_stage_commands_take_one_option_per_config_key():
    """Each stage's command is generated from its config: every YAML key is an option of the same name (dashes for
    underscores; nested sections flattened), and no other option names a setting differently (old names live on as
    secondary names of the same option)."""
    import dataclasses

    import typer.main

    from refusal_sae.cli import app
    from refusal_sae.cli.options import config_opts
    from refusal_sae.pipeline.stages import STAGES
    from refusal_sae.scoring.config import EvalConfig

    group = typer.main.get_group(app)
    commands = {"direction": "direction", "calibrate-actadd": "calibrate_actadd", "eval": "eval", "search": "search",
                "search-table": "search_table", "sae-metrics": "sae_metrics", "interactions": "interactions",
                "dormant": "dormant", "jailbreaks": "jailbreaks", "upstream": "upstream", "probes": "probes",
                "harden": "harden"}
    shared = {"--run-dir", "--data-dir", "--json", "--force", "--saes", "--sae-release", "--sae-ids", "--model",
              "--adapter", "--device", "--dtype", "--trust-remote-code", "--offline", "--help"}
    extras = {"direction": {"--harm-layers"}, "eval": {"--out"}, "sae-metrics": {"--write"},
              "upstream": {"--jailbreak-datasets", "--jailbreak-file"},
              "probes": {"--jailbreak-datasets", "--jailbreak-file"}}
    for name, stage in commands.items():
        cls = EvalConfig if stage == "eval" else STAGES[stage].config_type
        keys = {f"--{o.name.replace('_', '-')}" for o in config_opts(cls)}
        assert keys and dataclasses.is_dataclass(cls)
        primary = {p.opts[0] for p in group.commands[name].params}
        assert keys <= primary, (name, keys - primary)
        assert primary - keys - shared <= extras.get(name, set()), (name, primary - keys - shared)
