"""`refusal-sae run CONFIG`: the config schema and its strict checks, the plan, the paper configs offline, the whole
pipeline on a tiny Gemma-2 through the Gemma config, and a run killed mid-pipeline that resumes byte-identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from refusal_sae.direction.config import DirectionConfig
from refusal_sae.errors import ConfigError, DataError, ModelLoadError
from refusal_sae.pipeline.config import apply_overrides, load_config
from refusal_sae.pipeline.runner import check
from refusal_sae.pipeline.stages import STAGES
from refusal_sae.scoring.config import EvalConfig, EvalStep
from tests.conftest import build_tiny

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
H1 = "blocks.1.hook_resid_post"


def cli(*args, timeout=600, **kw):
    return subprocess.run([sys.executable, "-m", "refusal_sae", *args], capture_output=True, text=True, timeout=timeout,
                          **kw)


def _save_tiny(kind: str, d: Path) -> Path:
    h = build_tiny(kind)
    h.model.save_pretrained(d, safe_serialization=True)
    h.tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return _save_tiny("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    return _save_tiny("gemma2", tmp_path_factory.mktemp("tiny-gemma2"))


def _sae_folder(root: Path, d_in: int = 64, hook: str = H1) -> Path:
    """A TopK SAE saved by sae-lens (``save_inference_model``) in ``root/<hook>``."""
    import torch

    from refusal_sae.saes.config import SaeTrainConfig
    from refusal_sae.saes.train import make_sae, save_sae

    torch.manual_seed(0)
    sae = make_sae(d_in, 96, 8, SaeTrainConfig(normalize_activations=False), hook, "tiny", "cpu")
    save_sae(sae, root / hook, dtype="float32")
    return root


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    return _sae_folder(tmp_path_factory.mktemp("saes"))


# --- the schema ---------------------------------------------------------------------------------------------------
def test_config_is_typed_with_stage_defaults_seed_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 7\nstages: [direction, eval]\ndirection: {n_train: 16, selection: {layers: [1, 2]}}\n"
                    "eval:\n  - {dataset: harmful_val, n: 4}\n  - {dataset: harmful_val, n: 4, intervention: ablate, seed: 3}\n")
    cfg = load_config(path, ["direction.selection.max_kl=0.5", "eval.*.max_new_tokens=8", "eval.1.coeff=2"])
    d = cfg.section("direction")
    assert isinstance(d, DirectionConfig) and d.n_train == 16 and d.n_val == DirectionConfig.n_val
    assert d.selection.layers == (1, 2) and d.selection.max_kl == 0.5 and d.seed == 7  # top-level seed fills in
    evals = cfg.section("eval")
    assert [type(e) for e in evals] == [EvalStep, EvalStep] and [e.seed for e in evals] == [7, 3]  # explicit wins
    assert [e.max_new_tokens for e in evals] == [8, 8] and evals[1].coeff == 2.0
    assert isinstance(evals[0].resolve(), EvalConfig) and evals[0].resolve().tag == ""
    assert cfg.stages == ("direction", "eval") and cfg.resolved_run_dir() == Path("runs/c")
    toml = tmp_path / "c.toml"  # the same config in TOML
    toml.write_text('seed = 7\nstages = ["direction", "eval"]\n[direction]\nn_train = 16\n[direction.selection]\n'
                    'layers = [1, 2]\nmax_kl = 0.5\n[[eval]]\ndataset = "harmful_val"\nn = 4\nmax_new_tokens = 8\n'
                    '[[eval]]\ndataset = "harmful_val"\nn = 4\nintervention = "ablate"\nseed = 3\nmax_new_tokens = 8\n'
                    'coeff = 2\n')
    same = {"run_dir": None}
    assert load_config(toml).to_dict() | same == cfg.to_dict() | same
    assert load_config(None).stages == tuple(STAGES)  # no file: every stage with its defaults


@pytest.mark.parametrize("raw, needle", [
    ({"direction": {"n_trian": 3}}, "unknown key 'n_trian' in section 'direction'; known keys: n_train"),
    ({"direction": {"selection": {"layerz": [1]}}}, "unknown key 'layerz' in section 'direction.selection'"),
    ({"eval": [{"dataset": "harmful_val", "temperature": 1}]}, "unknown key 'temperature' in section 'eval[0]'"),
    ({"model": {"name": "x"}}, "unknown key 'name' in section 'model'"),
    ({"bogus": 1}, "unknown top-level key 'bogus'"),
    ({"stages": ["direction", "serch"]}, "unknown stage 'serch' in stages; known stages: direction"),
    ({"stages": "direction"}, "stages must be a list"),
    ({"stages": []}, "stages is empty"),
    ({"direction": {"n_train": "many"}}, "direction.n_train: input should be a valid integer"),
    ({"eval": [{"coeff": "big"}]}, "eval[0].coeff"),
    ({"eval": {"dataset": "x"}}, "eval: expected a list of EvalStep settings"),
    ({"saes": {"folder": "x", "release": "y", "ids": ["a"]}}, "saes: give either folder or release"),
    ({"saes": {"release": "gemma-scope-2b-pt-res-canonical"}}, "needs ids"),
    ({"sae_metrics": {"n_prompts": 0}}, "sae_metrics: n_prompts must be positive"),
    ({"search": {"k_per_layr": 3}}, "unknown key 'k_per_layr' in section 'search'; known keys: layers, k_per_layer"),
    ({"search": {"top_k": "many"}}, "search.top_k: input should be a valid tuple"),
    ({"search_table": {"datasets": []}}, "search_table: datasets is empty"),
    ({"search_table": {"n": 0}}, "search_table: n must be positive"),
])
def test_bad_configs_fail_with_one_clear_line(raw, needle):
    with pytest.raises(ConfigError) as e:
        load_config(raw=raw)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_overrides_reject_malformed_assignments():
    assert apply_overrides({"eval": [{}, {}]}, ["eval.*.n=3"]) == {"eval": [{"n": 3}, {"n": 3}]}
    assert apply_overrides({}, ["direction.selection.layers=[1, 2]"]) == {"direction": {"selection": {"layers": [1, 2]}}}
    for bad, needle in [("direction", "section.key=value"), ("eval.5.n=1", "not an index"),
                        ("model.model.x=1", "inside a setting")]:
        with pytest.raises(ConfigError, match=needle):
            apply_overrides({"eval": [{}], "model": {"model": "m"}}, [bad])


# --- checks against the model, data and SAEs (before any work) ---------------------------------------------------
def _check(raw: dict, tiny: Path, data_dir: Path, dry_run: bool = True):
    base = {"model": {"model": str(tiny), "device": "cpu"}, "data_dir": str(data_dir)}
    return check(load_config(raw=base | raw), dry_run=dry_run)


@pytest.mark.parametrize("raw, error, needle", [
    ({"stages": ["direction"], "direction": {"selection": {"layers": [9]}}}, ConfigError,
     "direction: candidate layers [9] out of range: the model has layers 0-3"),
    ({"stages": ["direction"], "direction": {"selection": {"positions": [-40]}}}, ConfigError, "positions [-40] out of range"),
    ({"stages": ["direction", "harm_vs_refusal"], "harm_vs_refusal": {"layers": [4]}}, ConfigError,
     "harm layers [4] out of range"),
    ({"stages": ["direction", "eval"], "eval": [{"intervention": "ablate", "ablate_layers": [7]}]}, ConfigError,
     "eval[0] (jailbreakbench ablate): ablation layers [7] out of range"),
    ({"stages": ["eval"], "eval": [{"intervention": "ablate"}]}, ConfigError,
     "stage 'eval' needs stage 'direction' before it in stages"),
    ({"stages": ["direction", "eval"], "eval": [{"intervention": "actadd", "coeff": "calibrated"}]}, ConfigError,
     "needs stage 'calibrate_actadd'"),
    ({"stages": ["eval"], "eval": [{"dataset": "nope"}]}, DataError, "eval: unknown dataset 'nope'"),
    ({"stages": ["eval"], "eval": [{"dataset": "missing.jsonl"}]}, DataError, "dataset file not found: missing.jsonl"),
    ({"stages": ["eval"], "eval": [{"judge": "oracle"}]}, ConfigError, "unknown judge 'oracle'"),
    ({"stages": ["direction", "calibrate_actadd"], "calibrate_actadd": {"dataset": "harmless_test"}}, ConfigError,
     "harmless_test is a held-out test split"),
    ({"stages": ["sae_metrics"], "sae_metrics": {"datasets": ["jailbreakbench"]},
      "saes": {"release": "gemma-scope-2b-pt-res-canonical", "ids": ["layer_1/width_16k/canonical"]}}, ConfigError,
     "sae_metrics.datasets: jailbreakbench is a held-out test split"),
    ({"stages": ["sae_metrics"]}, ConfigError, "no SAEs: saes.folder and saes.release are not set and runs/pipeline/saes"),
    ({"stages": ["sae_metrics"], "saes": {"folder": "/nonexistent/saes"}}, ConfigError, "saes.folder /nonexistent/saes: no SAEs"),
    ({"stages": ["sae_metrics"], "saes": {"release": "gemma-scope-2b-pt-res-canonikal", "ids": ["a"]}}, ConfigError,
     "unknown sae-lens release 'gemma-scope-2b-pt-res-canonikal'; similar: gemma-scope-2b-pt-res-canonical"),
    ({"stages": ["sae_metrics"], "saes": {"release": "gemma-scope-2b-pt-res-canonical", "ids": ["layer_3/width_99k/canonical"]}},
     ConfigError, "has no SAE 'layer_3/width_99k/canonical'; at that layer: layer_3/width_16k/canonical"),
])
def test_bad_settings_fail_before_any_work(tiny_dir, data_dir, raw, error, needle):
    with pytest.raises(error) as e:
        _check(raw, tiny_dir, data_dir)
    assert needle in str(e.value), str(e.value)


def test_search_sections_take_their_defaults_from_the_stage_config():
    from refusal_sae.search.config import SearchConfig, SearchTableConfig

    cfg = load_config(raw={"seed": 3, "stages": ["direction", "search", "search_table"], "search": {"top_k": [5, 10]}})
    assert cfg.section("search") == SearchConfig(top_k=(5, 10), seed=3)  # the rest: SearchConfig's own defaults
    assert cfg.section("search_table") == SearchTableConfig() and cfg.section("search_table").n is None
    assert cfg.to_dict()["search"]["k_per_layer"] == SearchConfig.k_per_layer


@pytest.mark.parametrize("raw, error, needle", [
    ({"search": {"top_k": [9], "k_per_layer": 4}}, ConfigError,
     "search: K* = 9 is larger than the candidate pool (4 per layer × 1 layers = 4)"),
    ({"search": {"layers": [3]}}, ConfigError, "search: no SAE at layers [3]; the SAEs cover layers [1]"),
    ({"search": {"judge": "oracle", "top_k": [2]}}, ConfigError, "search: unknown judge 'oracle'"),
    ({"search": {"n_val": 0, "top_k": [2]}}, ConfigError, "search: these settings must be positive: n_val=0"),
    ({"search": {"clamps": [1.0], "top_k": [2]}}, ConfigError, "search: a clamp of 1 leaves the features unchanged"),
    ({"stages": ["search"]}, ConfigError, "stage 'search' needs stage 'direction' before it in stages"),
    ({"stages": ["direction", "search_table"]}, ConfigError, "stage 'search_table' needs stage 'search' before it"),
    ({"search": {"top_k": [2]}, "search_table": {"datasets": ["harmful_val"]}}, ConfigError,
     "search_table: datasets: harmful_val is a split the search fits or selects on"),
    ({"search": {"top_k": [2]}, "search_table": {"datasets": ["nope"]}}, DataError, "search_table: unknown dataset 'nope'"),
])
def test_search_settings_fail_before_any_work(tiny_dir, data_dir, sae_dir, raw, error, needle):
    raw = {"stages": ["direction", "search", "search_table"], "saes": {"folder": str(sae_dir)}} | raw
    with pytest.raises(error) as e:
        _check(raw, tiny_dir, data_dir)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_plan_of_the_search(tiny_dir, data_dir, sae_dir):
    plan = _check({"stages": ["direction", "search", "search_table"], "saes": {"folder": str(sae_dir)},
                   "search": {"k_per_layer": 4, "top_k": [2, 4], "clamps": [0, -1], "n_attribution": 5, "n_val": 6, "ig_steps": 2,
                              "n_harmless": 7, "n_random": 2, "n_card_prompts": 3, "max_new_tokens": 8},
                   "search_table": {"datasets": ["jailbreakbench"], "n": 9, "n_harmless": 4}}, tiny_dir, data_dir)
    rows = {r.what.split(":")[0]: r for r in plan.rows if r.stage.startswith("search")}
    assert rows["candidates"].prompts == 5 + 7 and rows["candidates"].what == "candidates: 4/layer × 1 SAE layers, LA-IG 2 steps"
    grid = next(r for r in plan.rows if r.what.startswith("K* × c grid"))
    assert grid.prompts == 6 and grid.generated == 6 * (1 + 4 + 2) * 8
    assert rows["feature cards"].prompts == 6
    table = next(r for r in plan.rows if r.stage == "search_table")
    assert table.prompts == 9 + 4 and table.generated == (9 * (1 + 7 + 1 + 4) + 4 * 9) * 8


def test_sae_width_and_layer_are_checked_against_the_model(tiny_dir, data_dir, tmp_path):
    narrow = _sae_folder(tmp_path / "narrow", d_in=32)
    with pytest.raises(ConfigError, match=r"has d_in 32 but model .* has d_model 64"):
        _check({"stages": ["sae_metrics"], "saes": {"folder": str(narrow)}}, tiny_dir, data_dir)
    deep = _sae_folder(tmp_path / "deep", hook="blocks.7.hook_resid_post")
    with pytest.raises(ConfigError, match=r"reads layer 7, but model .* has layers 0-3"):
        _check({"stages": ["sae_metrics"], "saes": {"folder": str(deep)}}, tiny_dir, data_dir)


def test_sae_release_offline_says_so_and_how_to_use_a_local_copy(tiny_dir, data_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = {"stages": ["sae_metrics"], "saes": {"release": "gemma-scope-2b-pt-res-canonical",
                                               "id_template": "layer_{layer}/width_65k/canonical", "layers": [1, 2]}}
    plan = _check(raw, tiny_dir, data_dir, dry_run=True)  # a dry run notes it ...
    assert any("not in the local HF cache and the hub is offline" in n for n in plan.notes)
    with pytest.raises(ModelLoadError) as e:  # ... a run stops on it, before loading the model
        _check(raw, tiny_dir, data_dir, dry_run=False)
    msg = str(e.value)
    assert "gemma-scope-2b-pt-res-canonical" in msg and "offline" in msg and "saes: {folder: DIR}" in msg


def test_plan_counts_candidates_and_work(tiny_dir, data_dir, sae_dir):
    plan = _check({"stages": ["direction", "sae_metrics", "eval"], "saes": {"folder": str(sae_dir)},
                   "direction": {"n_train": 6, "n_val": 4, "selection": {"layers": [1, 2, 3]}},
                   "sae_metrics": {"n_prompts": 3}, "eval": [{"dataset": "harmful_val", "n": 5, "max_new_tokens": 4}]},
                  tiny_dir, data_dir)
    assert (plan.facts.n_layers, plan.facts.d_model) == (4, 64) and plan.facts.n_post_inst > 0
    direction, scoring, saes, ev = plan.rows
    n_post = plan.facts.n_post_inst
    assert scoring.what.startswith(f"{2 * n_post} candidates")  # layer 3 is in the pruned last 20%; every position
    assert direction.prompts == 12 and scoring.prompts == 8 and saes.prompts == 6
    assert ev.prompts == 5 and ev.generated == 5 * 4 + 32 * 12
    text = "\n".join(plan.lines())
    assert "1 SAEs at layers 1" in text and "total" in text


# --- the CLI ----------------------------------------------------------------------------------------------------
def test_paper_configs_dry_run_offline_and_bad_config_errors(tmp_path):
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    for name, release in (("gemma-2-2b-it", "gemma-scope-2b-pt-res-canonical"), ("llama-3.1-8b-it", "llama_scope_lxr_8x")):
        r = cli("run", str(CONFIGS / f"{name}.yaml"), "--dry-run", env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"SAEs     {release}: 8 SAEs" in r.stdout and "`run` would stop here" in r.stdout
        assert "dry run: the config is valid" in r.stdout
        # the papers' judge where it can run, else the default, said in the plan (no GPU and no hub here)
        assert "judge: default (runs offline on the CPU); not harmbench: needs a CUDA GPU" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("direction: {n_train: 8, layer: 3}\n")
    r = cli("run", str(bad), "--dry-run")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == ("error: unknown key 'layer' in section 'direction'; known keys: n_train, n_val, seed, "
                                "massive_k, massive_ratio, selection")


def test_gemma_config_runs_on_a_tiny_gemma2_with_a_local_sae(gemma_dir, sae_dir, data_dir, tmp_path, monkeypatch):
    """The full pipeline through configs/gemma-2-2b-it.yaml, the feature search included: only the model, the SAEs,
    the device and sizes change. In-process (typer's runner) so that the judges can be stand-ins: a random tiny model
    never refuses, and a search (and the analyses) need refused prompts."""
    from typer.testing import CliRunner

    import refusal_sae.search.dormant as dormant
    import refusal_sae.search.interactions as inter
    import refusal_sae.search.runner as search_stage
    from refusal_sae.cli import app
    from tests.unit.test_interactions import _median_labels
    from tests.unit.test_search import HashJudge

    for mod in (search_stage, inter, dormant):
        monkeypatch.setattr(mod, "get_judge", lambda spec: HashJudge())
    monkeypatch.setattr(inter, "labels", _median_labels)  # both classes in every split of a model that never refuses
    analysis_judges(monkeypatch, data_dir)
    run = tmp_path / "run"
    small = ["direction.n_train=6", "direction.n_val=4", "direction.selection.layers=[1, 2]",
             "direction.selection.max_kl=1e9", "direction.selection.min_induce=-1e9", "harm_vs_refusal.layers=[1, 2]",
             "sae_metrics.n_prompts=3", "sae_metrics.max_new_tokens=4", "sae_metrics.ce_batches=1",
             "calibrate_actadd.n=3", "calibrate_actadd.coeffs=[1, 2]", "calibrate_actadd.judge=substring",
             "calibrate_actadd.max_new_tokens=4", "eval.*.n=3", "eval.*.max_new_tokens=4", "eval.*.judge=substring",
             "search.k_per_layer=4", "search.top_k=[2, 4]", "search.clamps=[0, -1]", "search.ig_steps=2",
             "search.n_attribution=4", "search.n_harmless=4", "search.n_val=8", "search.n_random=2",
             "search.greedy_seeds=2", "search.n_card_prompts=2", "search.max_new_tokens=3", "search.batch_size=4",
             "search_table.n=6", "search_table.n_harmless=3", "interactions.n_heldout=6", "interactions.max_new_tokens=3",
             "interactions.n_train=4", "interactions.n_val=3", "interactions.n_test_harmless=2", "interactions.pool_size=6",
             "interactions.epochs=2", "interactions.n_boot=20", "interactions.k_values=[1]", "interactions.n_sweep=3",
             "interactions.n_random=1", "dormant.n_heldout=6", "dormant.max_new_tokens=3", "dormant.n_prompts=3",
             "dormant.max_rounds=0", "dormant.n_random=1",
             *SMALL_ANALYSES]
    args = ["run", str(CONFIGS / "gemma-2-2b-it.yaml"), "--model", str(gemma_dir), "--saes", str(sae_dir),
            "--device", "cpu", "--dtype", "float32", "--run-dir", str(run), "--data-dir", str(data_dir),
            *[a for s in small for a in ("--set", s)]]
    runner = CliRunner()
    r = runner.invoke(app, args)
    assert r.exit_code == 0, (r.output[-3000:], r.exception)
    assert f"report: {run / 'report.html'}" in r.output and "[5/13] eval" in r.output and "[7/13] search_table" in r.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["stages"]) >= {"direction", "harm_vs_refusal", "sae_metrics", "actadd_calibration",
                                       "search/candidates", "search/choice", "search/greedy", "search/cards", "search/table"}
    assert sum(k.startswith("eval/") for k in manifest["stages"]) == 6 + 2  # six evals + two calibration coefficients
    assert manifest["saes"][H1]["source"] == str(sae_dir / H1) and manifest["pipeline"]["stages"][0] == "direction"
    sae = json.loads((run / "sae_metrics" / "result.json").read_text())["data"]
    assert [row["layer"] for row in sae["rows"]] == [1] and sae["rows"][0]["d_sae"] == 96
    table = json.loads((run / "search" / "table" / "result.json").read_text())["data"]
    assert table["datasets"] == ["jailbreakbench", "harmbench_test"] and table["n_total"] == 12  # 6 of each
    page = (run / "report.html").read_text()
    for sid in ("sae-quality", "evals", "search"):
        assert f'<section id="{sid}">' in page, sid
    cards = json.loads((run / "search" / "cards" / "result.json").read_text())["data"]["cards"]
    assert ('<section id="cards">' in page) == bool(cards)  # a random SAE's minimal set may be empty
    minimal = json.loads((run / "search" / "greedy" / "result.json").read_text())["data"]["minimal"]["items"]
    for stage, folder in (("interactions", "search/interactions/ksweep"), ("dormant", "search/dormant/newly_active")):
        # an empty minimal set leaves nothing to clamp: said in the stage's line, no result, the run goes on
        assert (run / folder / "result.json").exists() == bool(minimal), stage
        assert (f'<section id="{stage}">' in page) == bool(minimal)
    assert ("no result: the search's minimal set" in r.output) == (not minimal)
    assert "[13/13] harden" in r.output and '<section id="hardening">' in page  # the analyses (stage 5)
    r2 = runner.invoke(app, args)  # everything complete: skipped
    assert r2.exit_code == 0 and r2.output.count("complete for this config: skipped") == 13


# stage 5, the analyses, at their smallest sizes (features: global, as a random SAE's minimal set may be empty)
SMALL_ANALYSES = ["jailbreaks.families=[prefix_injection, style_injection]", "jailbreaks.n_instructions=3",
                  "jailbreaks.batch_size=4", "jailbreaks.max_new_tokens=2", "upstream.n_train=4", "upstream.n_val=4",
                  "upstream.ig_steps=1", "upstream.last=3", "upstream.n_random=1", "upstream.thresholds=[0.25, 0.5]",
                  "upstream.max_new_tokens=2", "probes.n_train=4", "probes.n_val=3", "probes.n_test=3",
                  "probes.n_random=2", "probes.n_boot=20", "probes.cs=[1.0]", "probes.max_new_tokens=2",
                  "harden.features=global", "harden.multipliers=[2]", "harden.actadd_coeffs=[1]", "harden.n_calib=4",
                  "harden.n_gate=3", "harden.gate_sizes=[1]", "harden.n_jailbreak=2", "harden.n_xstest=2",
                  "harden.n_harmless=2", "harden.max_new_tokens=3", "harden.n_boot=20"]


def analysis_judges(monkeypatch, data_dir) -> None:
    """The analyses' judge for a random tiny model: a harmful prompt is refused unless it injects a compliant opening
    (prefix injection does), every harmless one answered."""
    import refusal_sae.analysis.harden as harden_mod
    import refusal_sae.analysis.jailbreaks as jbmod
    from tests.unit.test_probes import _judge

    judge = _judge(data_dir)
    monkeypatch.setattr(jbmod, "get_judge", lambda spec: judge)
    monkeypatch.setattr(harden_mod, "get_judge", lambda spec: judge)


def _results(run: Path) -> dict[str, object]:
    """Every result's deterministic content: the ``data`` of result.json and the bytes of tensors and row files."""
    out: dict[str, object] = {}
    for p in sorted(run.rglob("*")):
        rel = p.relative_to(run).as_posix()
        if p.name == "result.json":
            out[rel] = json.loads(p.read_text())["data"]
        elif p.suffix in (".safetensors", ".jsonl") and not rel.startswith("saes/"):  # SAEs are inputs, not results
            out[rel] = p.read_bytes()
    return out


def test_a_killed_run_resumes_byte_identical(tiny_dir, sae_dir, data_dir, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"""
model: {{model: {tiny_dir}, device: cpu, dtype: float32}}
saes: {{folder: {sae_dir}}}
data_dir: {data_dir}
stages: [direction, sae_metrics, eval]
direction: {{n_train: 8, n_val: 4, selection: {{layers: [1, 2], positions: [-1], max_kl: 1.0e+9, min_induce: -1.0e+9}}}}
sae_metrics: {{n_prompts: 4, max_new_tokens: 8}}
eval:
  - {{dataset: harmful_val, n: 6, max_new_tokens: 48, judge: substring}}
  - {{dataset: harmful_val, n: 6, max_new_tokens: 48, judge: substring, intervention: ablate}}
  - {{dataset: harmless_val, n: 6, max_new_tokens: 48, judge: substring, intervention: actadd}}
""")
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("run", str(cfg), "--run-dir", str(a)).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "refusal_sae", "run", str(cfg), "--run-dir", str(b)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = b / "direction" / "result.json"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # during a later stage
    proc.wait()
    assert first.exists()
    assert not (b / "report.html").exists() and len(list(b.glob("eval/*/result.json"))) < 3  # killed mid-pipeline
    r = cli("run", str(cfg), "--run-dir", str(b))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[1/3] direction" in r.stdout and r.stdout.count("complete for this config: skipped") >= 1
    ra, rb = _results(a), _results(b)
    assert sorted(ra) == sorted(rb) and len([k for k in ra if k.endswith("result.json")]) == 5
    for key in ra:
        assert ra[key] == rb[key], key


def test_pipeline_runs_the_search_and_its_report_draws(tiny_dir, data_dir, tmp_path, monkeypatch):
    """direction → search → search_table on a tiny random Llama with two random SAEs, through the config path; the
    report of that run directory passes the browser check (where Chromium is installed)."""
    import refusal_sae.search.runner as search_stage
    from refusal_sae.pipeline.runner import run_pipeline
    from tests.unit.test_search import HashJudge, tiny_saes

    monkeypatch.setattr(search_stage, "get_judge", lambda spec: HashJudge())  # a random tiny model never refuses
    saes = tmp_path / "saes"
    for L, sae in tiny_saes().items():
        sae.save_model(saes / f"blocks.{L}.hook_resid_post")
    heldout = tmp_path / "heldout.json"  # stands in for the test sets
    heldout.write_text(json.dumps([f"Explain step {i} of picking a lock" for i in range(14)]))
    run = tmp_path / "run"
    raw = {"model": {"model": str(tiny_dir), "device": "cpu", "dtype": "float32"}, "saes": {"folder": str(saes)},
           "data_dir": str(data_dir), "run_dir": str(run), "seed": 0, "stages": ["direction", "search", "search_table"],
           "direction": {"n_train": 4, "n_val": 3, "selection": {"layers": [1, 2], "positions": [-1], "max_kl": 1e9,
                                                                 "min_induce": -1e9}},
           "search": {"k_per_layer": 4, "ig_steps": 2, "n_attribution": 4, "n_harmless": 4, "n_val": 8, "top_k": [2, 4],
                      "clamps": [0, -1], "n_random": 2, "greedy_seeds": 2, "n_card_prompts": 2, "max_new_tokens": 3},
           "search_table": {"datasets": [str(heldout)], "n": 12, "n_harmless": 3}}
    logs: list[str] = []
    report = run_pipeline(load_config(raw=raw), logs.append)
    text = "\n".join(logs)
    assert "[2/3] search" in text and "K* " in text and "[3/3] search_table" in text and "refused held-out prompts" in text
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert {"search/candidates", "search/choice", "search/greedy", "search/cards", "search/table"} <= set(stages)
    table = json.loads((run / "search/table/result.json").read_text())
    assert table["data"]["n_total"] == 12 and table["meta"]["config"]["n"] == 12  # the sample joins the identity
    gens = [json.loads(line) for line in (run / "search/table/generations.jsonl").read_text().splitlines()]
    assert sum(g["row"] == "unclamped" for g in gens) == table["data"]["n_refused"]  # the "before" of each prompt
    page = report.read_text()
    assert '<section id="search">' in page and '<section id="cards">' in page and "Example generations before" in page
    logs.clear()
    run_pipeline(load_config(raw=raw), logs.append)  # complete: every stage skipped
    assert sum("complete for this config: skipped" in line for line in logs) == 3
    from refusal_sae.report.browser import browser_missing, check_in_browser

    if (why := browser_missing()) is not None:
        pytest.skip(f"browser check: {why}")
    res = check_in_browser(report)
    assert res.figures >= 6 and res.drawn == res.figures and res.errors == [] and res.overflowing == 0


# --- stages 3-4: interactions, dormant ---------------------------------------------------------------------------
STAGES_34 = ["direction", "search", "search_table", "interactions", "dormant"]
SEARCH_34 = {"k_per_layer": 4, "top_k": [2, 4], "clamps": [0, -1], "n_attribution": 4, "n_val": 8, "ig_steps": 2,
             "n_harmless": 4, "n_random": 2, "greedy_seeds": 2, "n_card_prompts": 2, "max_new_tokens": 3}


@pytest.mark.parametrize("raw, error, needle", [
    ({"interactions": {"rank": 0}}, ConfigError,
     "interactions: the FM rank (embedding dimension) must be positive, got 0"),
    ({"interactions": {"k_values": [2, 500], "pool_size": 12}}, ConfigError,
     "interactions: K = 500 is larger than the pool (at most 16 features"),
    ({"interactions": {"datasets": ["harmful_train"]}}, ConfigError, "interactions: harmful_train is not held-out"),
    ({"interactions": {"datasets": ["nope"]}}, DataError, "interactions: unknown dataset 'nope'"),
    ({"interactions": {"judge": "oracle"}}, ConfigError, "interactions: unknown judge 'oracle'"),
    ({"interactions": {"n_heldout": 0}}, ConfigError, "interactions: these settings must be positive: n_heldout=0"),
    ({"dormant": {"sets": ["perprompt"]}}, ConfigError, "dormant: sets must be taken from ('global', 'minimal')"),
    ({"dormant": {"max_rounds": -1}}, ConfigError, "dormant: max_rounds must be non-negative, got -1"),
    ({"dormant": {"screen": "some"}}, ConfigError, "dormant: screen must be one of"),
    ({"interactions": {"max_new_tokens": 8}, "dormant": {"max_new_tokens": 3}}, ConfigError,
     "interactions and dormant share the held-out prompts the model refuses (search/heldout), but their settings "
     "differ (max_new_tokens 8 vs 3)"),
    ({"stages": ["direction", "interactions"]}, ConfigError, "stage 'interactions' needs stage 'search' before it"),
    ({"stages": ["direction", "dormant", "search"]}, ConfigError, "stage 'dormant' needs stage 'search' before it"),
])
def test_interactions_and_dormant_settings_fail_before_any_work(tiny_dir, data_dir, sae_dir, raw, error, needle):
    raw = {"stages": STAGES_34, "saes": {"folder": str(sae_dir)}, "search": SEARCH_34} | raw
    with pytest.raises(error) as e:
        _check(raw, tiny_dir, data_dir)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("raw, needle", [
    ({"interactions": {"rnk": 20}}, "unknown key 'rnk' in section 'interactions'; known keys: n_train, n_val"),
    ({"dormant": {"rounds": 2}}, "unknown key 'rounds' in section 'dormant'; known keys: datasets, n_heldout"),
    ({"interactions": {"k_values": "many"}}, "interactions.k_values"),
])
def test_interactions_and_dormant_sections_are_typed(raw, needle):
    with pytest.raises(ConfigError) as e:
        load_config(raw=raw)
    assert needle in str(e.value) and "\n" not in str(e.value)
    from refusal_sae.search.config import DormantConfig, InteractionsConfig

    cfg = load_config(raw={"seed": 4, "interactions": {"k_values": [8, 4]}, "dormant": {"n_heldout": 6}})
    assert cfg.section("interactions") == InteractionsConfig(k_values=(4, 8), seed=4)  # the rest: the stage's defaults
    assert cfg.section("dormant") == DormantConfig(n_heldout=6, seed=4)
    assert {"interactions", "dormant"} <= set(cfg.stages)  # listed by default


def test_plan_of_interactions_and_dormant(tiny_dir, data_dir, sae_dir):
    raw = {"stages": STAGES_34, "saes": {"folder": str(sae_dir)}, "search": SEARCH_34,
           "search_table": {"datasets": ["jailbreakbench"], "n": 9, "n_harmless": 4},
           "interactions": {"datasets": ["jailbreakbench"], "n_heldout": 9, "n_train": 5, "n_val": 3,
                            "n_test_harmless": 2, "k_values": [2, 4], "n_sweep": 6, "n_random": 2, "max_new_tokens": 3},
           "dormant": {"datasets": ["jailbreakbench"], "n_heldout": 9, "n_prompts": 4, "sets": ["minimal"],
                       "max_rounds": 2, "n_attribution": 3, "n_val": 5, "ig_steps": 2, "n_random": 1,
                       "max_new_tokens": 3}}
    plan = _check(raw, tiny_dir, data_dir)
    rows = [r for r in plan.rows if r.stage in ("interactions", "dormant")]
    held, data, sweep, silent, newly, rounds = rows
    assert held.stage == "interactions" and "search_table's judgements reused" in held.what and held.forwards == 0
    assert data.prompts == 10 + 6 + 9 + 2 and data.forwards == 4 * data.prompts
    assert sweep.prompts == 6 and sweep.generated == 6 * (1 + 2 * (2 + 2)) * 3
    assert silent.stage == newly.stage == rounds.stage == "dormant" and silent.prompts == 4
    assert newly.forwards == 2 * 4 * 2 and rounds.generated == (5 + 3 * 2 * 5) * 3
    raw["interactions"]["max_new_tokens"] = raw["dormant"]["max_new_tokens"] = 8  # not the search's: judged here
    held = next(r for r in _check(raw, tiny_dir, data_dir).rows if r.stage == "interactions")
    assert held.what.endswith("judged") and held.generated == 9 * 8


def test_pipeline_runs_interactions_and_dormant_resumes_and_reports(tiny_dir, data_dir, tmp_path, monkeypatch):
    """direction → search → search_table → interactions → dormant on a tiny random Llama with two random SAEs; the
    held-out judgements come from the table; a rerun skips every stage; both report sections draw."""
    import refusal_sae.search.dormant as dormant
    import refusal_sae.search.interactions as inter
    import refusal_sae.search.runner as search_stage
    from refusal_sae.pipeline.runner import run_pipeline
    from refusal_sae.runs import RunDir
    from refusal_sae.search.result import GreedyResult
    from tests.unit.test_interactions import _median_labels
    from tests.unit.test_search import HashJudge, tiny_saes

    for mod in (search_stage, inter, dormant):  # a random tiny model never refuses
        monkeypatch.setattr(mod, "get_judge", lambda spec: HashJudge())
    monkeypatch.setattr(inter, "labels", _median_labels)  # both classes in every split
    saes = tmp_path / "saes"
    for L, sae in tiny_saes().items():
        sae.save_model(saes / f"blocks.{L}.hook_resid_post")
    heldout = tmp_path / "heldout.json"
    heldout.write_text(json.dumps([f"Explain step {i} of picking a lock" for i in range(14)]))
    run = tmp_path / "run"
    held = {"datasets": [str(heldout)], "n_heldout": 12, "max_new_tokens": 3, "batch_size": 8}
    raw = {"model": {"model": str(tiny_dir), "device": "cpu", "dtype": "float32"}, "saes": {"folder": str(saes)},
           "data_dir": str(data_dir), "run_dir": str(run), "seed": 0, "stages": STAGES_34[:2],
           "direction": {"n_train": 4, "n_val": 3, "selection": {"layers": [1, 2], "positions": [-1], "max_kl": 1e9,
                                                                 "min_induce": -1e9}},
           "search": SEARCH_34, "search_table": {"datasets": [str(heldout)], "n": 12, "n_harmless": 3},
           "interactions": held | {"n_train": 6, "n_val": 4, "n_test_harmless": 4, "pool_size": 12, "epochs": 3,
                                   "n_boot": 50, "k_values": [2], "n_sweep": 5, "n_random": 1},
           "dormant": held | {"n_prompts": 5, "sets": ["minimal"], "screen": "none", "max_rounds": 1,
                              "n_attribution": 3, "ig_steps": 2, "n_val": 6, "n_random": 1}}
    run_pipeline(load_config(raw=raw), lambda line: None)
    rd = RunDir(run)
    greedy = rd.load(GreedyResult, "search/greedy")
    if not len(greedy.minimal):  # the random tiny model's greedy filter may prune everything: plant two features
        greedy.minimal = greedy.start.take(2)
        greedy.save(run / "search/greedy", GreedyResult.read_meta(run / "search/greedy"))
    logs: list[str] = []
    report = run_pipeline(load_config(raw=raw | {"stages": STAGES_34}), logs.append)  # direction, search: resumed
    text = "\n".join(logs)
    assert text.count("complete for this config: skipped") == 2 and "[4/5] interactions" in text
    assert "held-out AUC FM" in text and "[5/5] dormant" in text and "critical: minimal" in text
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert {"search/heldout", "search/interactions/data", "search/interactions/fm", "search/interactions/ksweep",
            "search/interactions/ksweep/k2", "search/dormant/silent", "search/dormant/newly_active",
            "search/dormant/rounds", "search/dormant/rounds/r0"} <= set(stages)
    refused = json.loads((run / "search/heldout/result.json").read_text())["data"]
    table = json.loads((run / "search/table/result.json").read_text())["data"]
    assert refused["source"].startswith("search/table") and refused["n_total"] == table["n_total"] == 12
    assert len(refused["refused"]) == table["n_refused"]
    silent = json.loads((run / "search/dormant/silent/result.json").read_text())["data"]
    assert [s["set_name"] for s in silent["summaries"]] == ["minimal"] and len(silent["prompts"]) <= 5
    page = report.read_text()
    for sid in ("search", "interactions", "dormant"):
        assert f'<section id="{sid}">' in page, sid
    assert "K sweep (held out)" in page and "Newly active under the minimal set" in page and "Rounds of re-search" in page
    logs.clear()
    run_pipeline(load_config(raw=raw | {"stages": STAGES_34}), logs.append)  # complete: every stage skipped
    assert sum("complete for this config: skipped" in line for line in logs) == 5
    from refusal_sae.report.browser import browser_missing, check_in_browser

    if (why := browser_missing()) is not None:
        pytest.skip(f"browser check: {why}")
    res = check_in_browser(report)
    assert res.figures >= 13 and res.drawn == res.figures and res.errors == [] and res.overflowing == 0
