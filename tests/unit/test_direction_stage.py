"""The direction stage on a tiny local model directory through the CLI: results, resume, orthogonalise, eval."""

import json
import subprocess
import sys

import pytest

from refusal_sae.direction import DirectionResult
from tests.conftest import build_tiny


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-llama")
    h = build_tiny("llama")
    h.model.save_pretrained(d, safe_serialization=True)
    h.tokenizer.save_pretrained(d)
    return d


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "refusal_sae", *args], capture_output=True, text=True, timeout=timeout)


def test_direction_stage_resumes_and_exports(tiny_dir, tmp_path, data_dir):
    run = tmp_path / "run"
    args = ["direction", "--model", str(tiny_dir), "--run-dir", str(run), "--n-train", "6", "--n-val", "4",
            "--layers", "1-3", "--positions", "-1", "--max-kl", "1e9", "--min-induce", "-1e9", "--json", "--harm-layers", "1,2",
            "--data-dir", str(data_dir)]
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    first = json.loads(r.stdout.strip().splitlines()[-1])
    assert first["layer"] in (1, 2) and first["pos"] == -1  # layer 3 is in the last 20%
    result = DirectionResult.from_run(run)  # the typed result loads back
    assert len(result.candidates) == 3 and result.n_train == (6, 6)
    assert (result.layer, result.pos) == (first["layer"], first["pos"]) and result.direction.shape == (64,)
    assert len(result.harm_refusal_cosine_by_layer) == 4
    assert len(result.kl_by_prompt) == 4 and first["kl_median"] <= first["kl_max"]
    assert "harmless prompts it moves most" in r.stdout
    hv = json.loads((run / "harm_vs_refusal" / "result.json").read_text())
    assert hv["kind"] == "harm_vs_refusal" and hv["schema"] == 1
    assert [r["layer"] for r in hv["data"]["rows"]] == [1, 2] and first["harm_vs_refusal"] == hv["data"]["rows"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"direction", "harm_vs_refusal"}
    assert manifest["model"]["name"] == str(tiny_dir) and manifest["model"]["revision"].startswith("files-")
    assert manifest["stages"]["direction"]["seed"] == 0 and manifest["stages"]["direction"]["wall_s"] > 0
    stamp = (run / "direction" / "result.json").stat().st_mtime_ns
    r2 = cli(*args)  # same config: skipped, same answer
    assert r2.returncode == 0 and (run / "direction" / "result.json").stat().st_mtime_ns == stamp
    assert json.loads(r2.stdout.strip().splitlines()[-1]) == first
    out = tmp_path / "ortho"
    r3 = cli("orthogonalize", str(out), "--model", str(tiny_dir), "--run-dir", str(run))
    assert r3.returncode == 0, r3.stderr[-2000:]
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()


def test_eval_needs_a_direction(tiny_dir, tmp_path):
    r = cli("eval", "--model", str(tiny_dir), "--dataset", "harmful_val", "--n", "2", "--intervention", "ablate",
            "--run-dir", str(tmp_path / "empty"), "--judge", "substring")
    assert r.returncode == 2 and "no refusal direction" in r.stderr


def test_direction_stage_keeps_scores_when_all_filtered(tiny_dir, tmp_path, data_dir):
    run = tmp_path / "run"
    base = ["direction", "--model", str(tiny_dir), "--run-dir", str(run), "--n-train", "6", "--n-val", "4",
            "--layers", "1-2", "--positions", "-1", "--data-dir", str(data_dir), "--json"]
    r = cli(*base, "--max-kl", "0", "--min-induce", "1e9")  # nothing can pass
    assert r.returncode == 2 and "lowest KL pos -1 layer" in r.stderr and "Traceback" not in r.stderr
    scores = run / "direction" / "scores.json"
    assert scores.is_file() and not (run / "direction" / "result.json").exists()
    saved = json.loads(scores.read_text())
    assert [c["layer"] for c in saved["candidates"]] == [1, 2] and not any(c["kept"] for c in saved["candidates"])
    stamp = scores.stat().st_mtime_ns
    r2 = cli(*base, "--max-kl", "1e9", "--min-induce", "-1e9")  # relaxed: the measured scores are reused
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert scores.stat().st_mtime_ns == stamp
    chosen = json.loads(r2.stdout.strip().splitlines()[-1])
    best = min(saved["candidates"], key=lambda c: c["bypass"])
    assert (chosen["layer"], chosen["bypass"]) == (best["layer"], best["bypass"])


def test_eval_is_a_resumable_stage_of_the_run(tiny_dir, tmp_path, data_dir):
    run = tmp_path / "run"
    args = ["eval", "--model", str(tiny_dir), "--run-dir", str(run), "--dataset", "harmful_val", "--n", "3",
            "--max-new-tokens", "4", "--judge", "substring", "--data-dir", str(data_dir), "--json"]
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    stage = run / "eval" / f"{tiny_dir.name}__harmful_val"
    assert summary["n"] == 3 and summary["jsonl"] == str(stage / "rows.jsonl")
    rows = [json.loads(x) for x in (stage / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {x["judgement"] for x in rows} <= {"refused", "complied", "degenerate"}
    meta = json.loads((stage / "result.json").read_text())["meta"]
    assert meta["config"]["n"] == 3 and meta["config"]["model_revision"]
    stamp = (stage / "result.json").stat().st_mtime_ns
    assert cli(*args).returncode == 0 and (stage / "result.json").stat().st_mtime_ns == stamp  # skipped
    assert cli(*args, "--force").returncode == 0 and (stage / "result.json").stat().st_mtime_ns != stamp
    c = cli("compare", str(stage), str(stage), "--json")  # eval folders work as compare inputs
    assert c.returncode == 0 and json.loads(c.stdout.strip().splitlines()[-1])["only_a"] == 0
    assert json.loads((run / "manifest.json").read_text())["model"]["name"].endswith(tiny_dir.name)


def test_a_control_model_evaluated_in_a_run_keeps_the_runs_model(tiny_dir, tmp_path, data_dir):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"schema": 1, "stages": {}, "model": {"name": "the-tuned-model"}}))
    r = cli("eval", "--model", str(tiny_dir), "--run-dir", str(run), "--dataset", "harmful_val", "--n", "2",
            "--max-new-tokens", "2", "--judge", "substring", "--data-dir", str(data_dir))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "eval" / f"{tiny_dir.name}__harmful_val" / "result.json").exists()
    assert json.loads((run / "manifest.json").read_text())["model"]["name"] == "the-tuned-model"


def test_calibrate_actadd_picks_the_smallest_coefficient_reaching_the_target(tiny_dir, tmp_path, data_dir):
    from refusal_sae.direction.calibrate import choose_coefficient

    assert choose_coefficient([1.0, 1.5, 2.0], [0.5, 0.95, 1.0], 0.9) == (1.5, True)
    assert choose_coefficient([1.0, 2.0], [0.1, 0.2], 0.9) == (2.0, False)
    run = tmp_path / "run"
    r = cli("direction", "--model", str(tiny_dir), "--run-dir", str(run), "--n-train", "4", "--n-val", "3",
            "--layers", "1", "--positions", "-1", "--max-kl", "1e9", "--min-induce", "-1e9", "--data-dir", str(data_dir))
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli("calibrate-actadd", "--model", str(tiny_dir), "--run-dir", str(run), "--coeffs", "2,1", "--n", "3",
            "--judge", "substring", "--target", "0.5", "--data-dir", str(data_dir), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["coeffs"] == [1.0, 2.0] and len(res["refusal_rates"]) == 2 and res["n"] == 3
    assert (res["chosen"], res["met"]) == choose_coefficient(res["coeffs"], res["refusal_rates"], 0.5)
    assert sorted(p.name for p in (run / "eval").iterdir()) == [
        f"{tiny_dir.name}__harmless_val__actadd", f"{tiny_dir.name}__harmless_val__actadd-coeff2"]


def test_bad_settings_fail_before_any_forward_pass(tiny_dir, tmp_path, data_dir):
    run = tmp_path / "run"
    for args, needle in [(["direction", "--layers", "99-100"], "out of range: the model has layers 0-3"),
                         (["direction", "--positions=-40"], "positions [-40] out of range"),
                         (["direction", "--harm-layers", "7"], "harm layers [7] out of range"),
                         (["eval", "--intervention", "ablate", "--ablate-layers", "9"], "no refusal direction")]:
        r = cli(*args, "--model", str(tiny_dir), "--run-dir", str(run), "--data-dir", str(data_dir))
        assert r.returncode == 2 and needle in r.stderr, r.stderr
        assert "activations" not in r.stderr and "Traceback" not in r.stderr  # no forward pass started
        assert not run.exists()  # nothing half-written
