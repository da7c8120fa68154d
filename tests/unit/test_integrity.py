"""Run directories notice damage: every file a stage wrote is hashed into its ``result.json`` and the manifest; a
missing, cut or changed file makes the stage incomplete (``run`` recomputes it with one line, ``require`` names it,
the report marks its section, ``--dry-run`` lists it as a repair) and an unreadable manifest is rebuilt from the
results that verify. Fast tier: toy results and a synthetic run directory, no model."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from refusal_sae.errors import MissingResultError
from refusal_sae.runs import RunDir, StageResult
from refusal_sae.runs.result import folder_damage
from tests.unit.test_report import synthetic_run


@dataclass
class Toy(StageResult):
    kind = "toy_integrity"
    tensor_fields = ("vec",)
    jsonl_fields = ("rows",)
    vec: torch.Tensor
    rows: list[dict]
    total: int


def _toy() -> Toy:
    return Toy(torch.arange(6.0), [{"i": i, "text": f"row {i}"} for i in range(5)], 15)


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".safetensors", ".jsonl")}


def _damage(folder, how: str) -> None:
    if how == "cut result.json":
        p = folder / "result.json"
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    elif how == "delete tensors":
        (folder / "tensors.safetensors").unlink()
    elif how == "cut rows":
        p = folder / "rows.jsonl"
        p.write_bytes(p.read_bytes()[:-7])
    elif how == "edit result.json":  # still valid JSON, a number changed by hand
        p = folder / "result.json"
        info = json.loads(p.read_text())
        info["data"]["total"] = 99
        p.write_text(json.dumps(info))
    elif how == "delete result.json":
        (folder / "result.json").unlink()


HOW = ["cut result.json", "delete tensors", "cut rows", "edit result.json", "delete result.json"]


def test_save_records_every_files_hash_in_result_and_manifest(tmp_path):
    run = RunDir(tmp_path)
    run.save(_toy(), {"seed": 0})
    entry = run.manifest()["stages"]["toy_integrity"]
    assert set(entry["files"]) == {"result.json", "tensors.safetensors", "rows.jsonl"}
    assert run.state(Toy).status == "complete" and folder_damage(tmp_path / "toy_integrity", entry["files"]) is None


@pytest.mark.parametrize("how", HOW)
def test_damage_is_seen_and_run_recomputes_byte_identical(tmp_path, how):
    notices: list[str] = []
    run = RunDir(tmp_path, log=notices.append)
    calls = []

    def compute():
        calls.append(1)
        return _toy()

    run.run(Toy, {"seed": 0}, compute)
    folder = tmp_path / "toy_integrity"
    before = _files(folder)
    _damage(folder, how)
    state = run.state(Toy, config={"seed": 0})
    assert state.status == "damaged", state
    assert run.load(Toy, config={"seed": 0}) is None
    with pytest.raises(MissingResultError, match="damaged"):
        run.require(Toy, "refusal-sae toy")
    out = run.run(Toy, {"seed": 0}, compute)
    assert len(calls) == 2 and out.total == 15
    assert len(notices) == 1 and notices[0].startswith("toy_integrity: damaged (") and "recomputing" in notices[0]
    assert _files(folder) == before  # the repair writes the same bytes
    assert run.state(Toy, config={"seed": 0}).status == "complete"
    run.run(Toy, {"seed": 0}, compute)  # intact again: loaded, not recomputed
    assert len(calls) == 2


def test_a_folder_removed_whole_is_missing_not_damaged(tmp_path):
    import shutil

    notices: list[str] = []
    run = RunDir(tmp_path, log=notices.append)
    run.save(_toy(), {"seed": 0})
    shutil.rmtree(tmp_path / "toy_integrity")
    assert run.state(Toy).status == "missing" and run.results() == []
    with pytest.raises(MissingResultError, match="no toy_integrity result"):
        run.require(Toy, "refusal-sae toy")
    run.run(Toy, {"seed": 0}, _toy)
    assert notices == []


def test_unreadable_manifest_is_named_and_rebuilt_from_results_that_verify(tmp_path):
    notices: list[str] = []
    run = RunDir(tmp_path, log=notices.append)
    run.save(_toy(), {"seed": 0})
    run.save(_toy(), {"seed": 1}, name="other/toy")
    (tmp_path / "other/toy/rows.jsonl").write_text("garbage\n")
    (tmp_path / "manifest.json").write_text("{not json")
    readonly = RunDir(tmp_path, log=notices.append, readonly=True)
    assert set(readonly.manifest()["stages"]) == {"toy_integrity"}
    assert (tmp_path / "manifest.json").read_text() == "{not json"  # a dry run writes nothing
    m = run.manifest()
    assert set(m["stages"]) == {"toy_integrity"} and m["stages"]["toy_integrity"]["config_hash"]
    assert json.loads((tmp_path / "manifest.json").read_text())["stages"].keys() == {"toy_integrity"}
    assert "unreadable" in notices[-1] and "1 results that verify" in notices[-1] and "other/toy" in notices[-1]
    assert run.state(Toy, config={"seed": 0}).status == "complete"


def test_report_marks_the_damaged_section_instead_of_dropping_it(tmp_path):
    from refusal_sae.report import render_report

    root = synthetic_run(tmp_path / "run", search=False)
    (root / "direction" / "tensors.safetensors").unlink()
    res = root / "sae_metrics" / "result.json"
    res.write_bytes(res.read_bytes()[:100])
    html = render_report(root, log=lambda m: None).read_text()
    direction = html[html.index('id="direction"'):html.index('id="sae-quality"')]
    assert "damaged: rerun" in direction and "tensors.safetensors missing" in direction
    quality = html[html.index('id="sae-quality"'):html.index('id="search"')]
    assert "damaged: rerun" in quality and "result.json unreadable" in quality
    assert "not run in this run directory" not in quality


def test_report_names_an_unreadable_manifest_and_rebuilds_it(tmp_path):
    from refusal_sae.report import render_report

    root = synthetic_run(tmp_path / "run", search=False)
    (root / "manifest.json").write_text("\x00garbage")
    said: list[str] = []
    html = render_report(root, log=said.append).read_text()
    assert said and "manifest.json: unreadable; rebuilt" in said[0]
    assert "Refusal direction" in html and "damaged: rerun" not in html
    assert json.loads((root / "manifest.json").read_text())["stages"]


def test_dry_run_lists_the_results_on_disk_and_the_repairs(tmp_path, data_dir):
    from refusal_sae.pipeline.config import load_config
    from refusal_sae.pipeline.runner import check
    from tests.unit.test_pipeline import _save_tiny

    tiny = _save_tiny("llama", tmp_path / "tiny")
    root = synthetic_run(tmp_path / "run", search=False)
    (root / "direction" / "tensors.safetensors").write_bytes(b"\x00" * 10)
    raw = {"model": {"model": str(tiny), "device": "cpu"}, "data_dir": str(data_dir), "run_dir": str(root),
           "stages": ["direction", "eval"], "eval": [{"dataset": "harmful_val", "n": 4}]}
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    plan = check(load_config(raw=raw), dry_run=True)
    text = "\n".join(plan.lines())
    assert f"run directory {root} holds results of: " in text and "direction (1)" in text and "eval (3)" in text
    assert "repair   direction (direction): damaged, tensors.safetensors differs from what was written" in text
    assert "sae_metrics" in text and text.count("repair ") == 1
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before  # a dry run writes nothing


def test_sae_identity_survives_a_moved_folder_but_not_changed_weights(tmp_path):
    import shutil

    from refusal_sae.runs import config_hash
    from refusal_sae.saes.loading import SaeSet
    from tests.unit.test_pipeline import H1, _sae_folder

    a = _sae_folder(tmp_path / "a")
    b = tmp_path / "elsewhere" / "copy"
    shutil.copytree(a, b)
    ia, ib = SaeSet.from_folder(a, "cpu").identity(), SaeSet.from_folder(b, "cpu").identity()
    assert config_hash({"saes": ia}) == config_hash({"saes": ib}) and str(tmp_path) not in json.dumps(ia)
    w = b / H1 / "sae_weights.safetensors"
    from safetensors.torch import load_file, save_file

    t = load_file(str(w))
    t["W_dec"] = t["W_dec"] * 2
    save_file(t, str(w))
    assert config_hash({"saes": SaeSet.from_folder(b, "cpu").identity()}) != config_hash({"saes": ia})


def test_an_interrupted_direction_stage_resumes_at_the_next_layer_and_ends_identical(tmp_path, data_dir, monkeypatch):
    """The direction stage checkpoints its candidates, refusal tokens and each scored layer: a Ctrl-C after the
    second layer loses nothing measured; the resumed run measures only the layers left and its result equals an
    uninterrupted run's."""
    import refusal_sae.direction.runner as runner
    from refusal_sae.direction.config import DirectionConfig, SelectionConfig
    from refusal_sae.direction.runner import DirectionPrompts, find_direction
    from tests.conftest import build_tiny

    handle = build_tiny("llama")
    cfg = DirectionConfig(n_train=6, n_val=4, selection=SelectionConfig(layers=(1, 2, 3), positions=(-1, -2),
                                                                        max_kl=1e9, min_induce=-1e9,
                                                                        prune_layer_fraction=0.0))
    prompts = DirectionPrompts.load(cfg, data_dir)
    whole = find_direction(handle, prompts, cfg, tmp_path / "whole")
    real = runner.score_candidates
    measured: list[list[int]] = []

    def scoring(*args, stop_after=None, **kw):
        calls = []

        def on_layer(so_far):
            kw["on_layer"](so_far)
            calls.append(1)
            measured.append(sorted({c.layer for c in so_far}))
            if stop_after is not None and len(calls) == stop_after:
                raise KeyboardInterrupt

        return real(*args, **(kw | {"on_layer": on_layer}))

    scratch = tmp_path / "interrupted"
    monkeypatch.setattr(runner, "score_candidates", lambda *a, **k: scoring(*a, stop_after=2, **k))
    with pytest.raises(KeyboardInterrupt):
        find_direction(handle, prompts, cfg, scratch)
    assert (scratch / runner.PARTIAL).is_file() and measured[-1] == [1, 2]
    discovered = []
    monkeypatch.setattr(runner, "discover_refusal_tokens", lambda *a: discovered.append(1) or [])
    monkeypatch.setattr(runner, "compute_candidates", lambda *a, **k: pytest.fail("candidates recomputed"))
    monkeypatch.setattr(runner, "score_candidates", lambda *a, **k: scoring(*a, **k))
    measured.clear()
    resumed = find_direction(handle, prompts, cfg, scratch)
    assert measured == [[1, 2, 3]] and not discovered  # one layer measured; tokens and candidates reused
    assert not (scratch / runner.PARTIAL).exists()
    assert torch.equal(resumed.direction, whole.direction) and resumed.candidates == whole.candidates
    assert resumed.refusal_tokens == whole.refusal_tokens
