"""The direction stage on a tiny local model directory through the CLI: results, resume, orthogonalise, eval."""

import json
import subprocess
import sys

import pytest

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
    result = json.loads((run / "direction" / "result.json").read_text())
    assert len(result["candidates"]) == 3 and result["n_train"] == [6, 6]
    assert len(result["harm_refusal_cosine_by_layer"]) == 4
    assert len(result["kl_by_prompt"]) == 4 and first["kl_median"] <= first["kl_max"]
    assert "harmless prompts it moves most" in r.stdout
    hv = json.loads((run / "harm_vs_refusal" / "result.json").read_text())
    assert [r["layer"] for r in hv["rows"]] == [1, 2] and first["harm_vs_refusal"] == hv["rows"]
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
    r = cli(*base, "--max-kl", "-1")  # nothing can pass
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
