"""`refusal-sae demo` on the embedded model, through the packaged demo config at a further-reduced size (a few minutes
on 2 idle cores): every stage (the feature search, its table, interactions and dormant features included), the run
directory, the report (and, where Chromium is installed, that it draws)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SMALLER = ["direction.n_train=16", "direction.n_val=8", "direction.selection.layers=[18, 20]",
           "direction.selection.max_kl=1", "harm_vs_refusal.layers=[20]", "sae_metrics.n_prompts=4",
           "sae_metrics.max_new_tokens=16", "sae_metrics.ce_batches=1", "calibrate_actadd.n=8",
           "calibrate_actadd.coeffs=[1.0, 1.5]", "calibrate_actadd.max_new_tokens=16", "eval.*.n=8",
           "eval.*.max_new_tokens=24", "search.layers=[17, 20]", "search.k_per_layer=3", "search.top_k=[3, 6]",
           "search.clamps=[0]", "search.ig_steps=2", "search.n_attribution=4", "search.n_harmless=4", "search.n_val=8",
           "search.n_random=1", "search.greedy_seeds=1", "search.greedy_taus=[0.1]", "search.n_card_prompts=2",
           "search.max_new_tokens=16", "search_table.n=4", "search_table.n_harmless=4",
           # stages 3-4 on the table's held-out sample (its judgements reused: same n, seed, judge and answer length)
           "interactions.n_heldout=4", "interactions.max_new_tokens=16", "interactions.n_train=4", "interactions.n_val=4",
           "interactions.n_test_harmless=4", "interactions.pool_size=8", "interactions.epochs=3", "interactions.n_boot=50",
           "interactions.k_values=[3]", "interactions.n_sweep=4", "dormant.n_heldout=4", "dormant.max_new_tokens=16",
           "dormant.n_prompts=4", "dormant.n_val=4", "dormant.n_attribution=2", "dormant.ig_steps=2"]
# stage 5, the analyses (jailbreaks, upstream, probes, harden) at their smallest working sizes
SMALLER_ANALYSES = ["jailbreaks.families=[payload_splitting, distractors]", "jailbreaks.n_instructions=3",
                    "jailbreaks.batch_size=4", "jailbreaks.max_new_tokens=16", "upstream.n_train=4", "upstream.n_val=4",
                    "upstream.ig_steps=1", "upstream.n_random=1", "upstream.max_instructions=2",
                    "upstream.max_new_tokens=16", "probes.n_train=4", "probes.n_val=4", "probes.n_test=4",
                    "probes.n_random=2", "probes.n_boot=50", "probes.max_new_tokens=16", "harden.multipliers=[2.0]",
                    "harden.actadd_coeffs=[1.0]", "harden.n_calib=4", "harden.n_gate=4", "harden.gate_sizes=[1]",
                    "harden.n_jailbreak=2", "harden.n_xstest=2", "harden.n_harmless=2", "harden.n_boot=50",
                    "harden.max_new_tokens=16"]


@pytest.mark.slow
def test_demo_runs_every_stage_and_writes_the_report(tmp_path, data_dir):
    run = tmp_path / "demo"
    args = [sys.executable, "-m", "refusal_sae", "demo", "--run-dir", str(run), "--device", "cpu", "--data-dir",
            str(data_dir), *[a for s in SMALLER for a in ("--set", s)],
            *[a for s in SMALLER_ANALYSES for a in ("--set", s)]]
    r = subprocess.run(args, capture_output=True, text=True, timeout=2400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == f"report: {run / 'report.html'}"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"]["name"] == "smollm2-135m-refusing" and len(manifest["saes"]) == 10
    assert {"direction", "harm_vs_refusal", "sae_metrics", "actadd_calibration"} <= set(manifest["stages"])
    evals = sorted(k for k in manifest["stages"] if k.startswith("eval/"))
    assert len(evals) == 4 + 2 and any(k.endswith("__jailbreakbench__ablate") for k in evals)
    direction = json.loads((run / "direction" / "result.json").read_text())["data"]
    assert direction["chosen"]["layer"] in (18, 20)
    assert {"search/candidates", "search/choice", "search/greedy", "search/cards", "search/table"} <= set(manifest["stages"])
    table = json.loads((run / "search" / "table" / "result.json").read_text())["data"]
    assert table["n_total"] == 8 and table["n_refused"] >= 1 and table["k"] in (3, 6)
    assert {"search/heldout", "search/interactions/data", "search/interactions/fm", "search/interactions/ksweep",
            "search/dormant/silent", "search/dormant/newly_active", "search/dormant/rounds"} <= set(manifest["stages"])
    heldout = json.loads((run / "search" / "heldout" / "result.json").read_text())["data"]
    assert heldout["source"].startswith("search/table") and len(heldout["refused"]) == table["n_refused"]
    sweep = json.loads((run / "search" / "interactions" / "ksweep" / "result.json").read_text())["data"]
    assert sweep["ks"] == [3] and {r["ranking"] for r in sweep["rows"]} >= {"FM", "linear probe", "random", "minimal set"}
    rounds = json.loads((run / "search" / "dormant" / "rounds" / "result.json").read_text())["data"]
    assert rounds["rows"][0]["round"] == 0 and 1 <= len(rounds["rows"]) <= 2
    page = (run / "report.html").read_text()
    for sid in ("direction", "sae-quality", "search", "interactions", "dormant", "calibration", "evals"):
        assert f'<section id="{sid}">' in page
    assert {"analysis/jailbreaks", "analysis/upstream", "analysis/probes", "analysis/harden"} <= set(manifest["stages"])
    jb = json.loads((run / "analysis" / "jailbreaks" / "result.json").read_text())["data"]
    assert [r["family"] for r in jb["table"]] == ["payload_splitting", "distractors"] and jb["control"]["n"] >= 1
    harden = json.loads((run / "analysis" / "harden" / "result.json").read_text())["data"]
    assert [p["name"] for p in harden["points"]][:3] == ["none", "steer m=2", "actadd c=1"]
    for sid in ("jailbreaks", "upstream", "probes", "hardening"):
        assert f'<section id="{sid}">' in page, sid
    from refusal_sae.report.browser import browser_missing, check_in_browser

    if browser_missing() is None:
        res = check_in_browser(run / "report.html", tmp_path / "demo.png")
        assert res.drawn == res.figures >= 14 + 7 + 7 and res.errors == []  # interactions 4, dormant 3; analyses 1 + 2 + 2 + 2
    _repair_a_damaged_copy(run, args, tmp_path)


def _repair_a_damaged_copy(run, args, tmp_path) -> None:
    """A copy of the finished demo with three kinds of damage: the report marks them, `run` names and recomputes
    exactly those, and every result ends byte-identical to the intact run's."""
    import shutil

    from tests.unit.test_pipeline import _results

    copy = tmp_path / "damaged"
    shutil.copytree(run, copy)
    (copy / "direction" / "tensors.safetensors").unlink()
    ev = sorted(copy.glob("eval/*/rows.jsonl"))[0]
    ev.write_bytes(ev.read_bytes()[: len(ev.read_bytes()) // 2])
    (copy / "manifest.json").write_text("garbage{")
    r = subprocess.run([sys.executable, "-m", "refusal_sae", "report", str(copy)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "manifest.json: unreadable; rebuilt from the" in r.stdout
    page = (copy / "report.html").read_text()
    assert page.count("damaged: rerun") >= 2 and "tensors.safetensors missing" in page
    dry = subprocess.run([a if a != str(run) else str(copy) for a in args] + ["--dry-run"], capture_output=True,
                         text=True, timeout=600)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "repair   direction (direction): damaged, tensors.safetensors missing" in dry.stdout
    assert f"repair   {ev.parent.relative_to(copy).as_posix()} (eval)" in dry.stdout
    r = subprocess.run([a if a != str(run) else str(copy) for a in args], capture_output=True, text=True, timeout=2400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "direction: damaged (tensors.safetensors missing): recomputing" in r.stdout
    assert f"{ev.parent.relative_to(copy).as_posix()}: damaged (rows.jsonl" in r.stdout
    assert r.stdout.count(": damaged (") == 2
    a, b = _results(run), _results(copy)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
