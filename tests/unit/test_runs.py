"""The persistence scheme: typed stage results, atomic writes, config-hashed resume, the run manifest."""

import json
import math
import os
from dataclasses import dataclass, field

import pytest
import torch

from refusal_sae.errors import MissingResultError
from refusal_sae.runs import Float, RunDir, StageResult, atomic_path, completed, file_sha256, mark_complete


@dataclass
class Row:
    name: str
    score: Float


@dataclass
class ToyResult(StageResult):
    kind = "toy"
    tensor_fields = ("vector",)
    jsonl_fields = ("rows",)

    vector: torch.Tensor
    best: Row
    scores: list[Row]
    pair: tuple[int, int]
    rows: list[dict] = field(default_factory=list)


def toy() -> ToyResult:
    return ToyResult(torch.arange(4.0), Row("a", 1.5), [Row("a", 1.5), Row("b", math.nan)], (2, 3),
                     [{"instruction": "x", "judgement": "refused"}])


def test_result_roundtrip_with_tensors_rows_and_nan(tmp_path):
    r = toy()
    r.save(tmp_path, meta={"config_hash": "abc"})
    info = json.loads((tmp_path / "result.json").read_text())  # strict JSON: NaN is stored as null
    assert info["kind"] == "toy" and info["schema"] == 1 and info["data"]["scores"][1]["score"] is None
    assert "vector" not in info["data"] and "rows" not in info["data"]
    back = ToyResult.load(tmp_path)
    assert torch.equal(back.vector, r.vector) and back.best == r.best and back.pair == (2, 3)
    assert back.scores[0] == r.scores[0] and math.isnan(back.scores[1].score)
    assert back.rows == r.rows
    meta = ToyResult.read_meta(tmp_path)
    assert meta["config_hash"] == "abc" and set(meta["files"]) == {"tensors.safetensors", "rows.jsonl"}


def test_result_of_other_kind_or_schema_is_missing(tmp_path):
    toy().save(tmp_path)

    @dataclass
    class Newer(ToyResult):
        schema = 2

    assert Newer.read_meta(tmp_path) is None
    with pytest.raises(MissingResultError, match="schema 1"):
        Newer.load(tmp_path)
    with pytest.raises(MissingResultError, match="no toy result"):
        ToyResult.load(tmp_path / "nowhere")


def test_rundir_resumes_by_config_and_keeps_a_manifest(tmp_path):
    run = RunDir(tmp_path / "run")
    calls = []

    def compute():
        calls.append(1)
        return toy()

    first = run.run(ToyResult, {"seed": 3, "n": 1}, compute)
    again = run.run(ToyResult, {"n": 1, "seed": 3}, compute)  # same config, other key order: loaded
    assert len(calls) == 1 and torch.equal(first.vector, again.vector)
    run.run(ToyResult, {"seed": 3, "n": 2}, compute)  # another config: recomputed
    run.run(ToyResult, {"seed": 3, "n": 2}, compute, force=True)
    assert len(calls) == 3
    assert run.load(ToyResult, config={"seed": 3, "n": 1}) is None and run.load(ToyResult) is not None
    m = run.manifest()
    assert m["stages"]["toy"]["seed"] == 3 and m["stages"]["toy"]["wall_s"] >= 0
    assert m["package_version"] and "created" in m and "git" in m
    with pytest.raises(MissingResultError, match="run `make toy` first"):
        RunDir(tmp_path / "empty").require(ToyResult, "make toy")


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.json"]


def test_completion_markers(tmp_path):
    marker = tmp_path / "done.json"
    assert completed(marker, {"a": 1}) is None
    mark_complete(marker, {"a": 1}, {"value": 7})
    assert completed(marker, {"a": 1})["value"] == 7 and completed(marker, {"a": 2}) is None
    marker.write_text("{not json")  # an interrupted writer of an older version
    assert completed(marker, {"a": 1}) is None


def test_file_hash_follows_rewrites_in_the_same_process(tmp_path):
    p = tmp_path / "w.bin"
    p.write_bytes(b"one")
    first = file_sha256(p)
    p.write_bytes(b"two!")  # rewritten in place (e.g. an adapter retrained in this process)
    assert file_sha256(p) != first and file_sha256(p) == file_sha256(p)


def test_result_identities_are_declared_on_the_config_fields():
    """Which settings each sub-result depends on comes from the fields' metadata (runs.identity); the hashes are pinned
    to those of the hand-assembled field tuples they replaced, so run directories made before keep resuming."""
    from refusal_sae.runs import config_hash
    from refusal_sae.runs.identity import settings_of
    from refusal_sae.search.config import DormantConfig, InteractionsConfig, SearchConfig

    pinned = {(SearchConfig, "candidates"): "e98479cdd24eb12a", (SearchConfig, "choice"): "69d77a681c41395c",
              (SearchConfig, "greedy"): "115477a29f25b3cb", (SearchConfig, "cards"): "115477a29f25b3cb",
              (InteractionsConfig, "data"): "7d63e60055f8d1a2", (InteractionsConfig, "fm"): "e20af7da300bf8e8",
              (InteractionsConfig, "sweep"): "1f6d49c3b45309c8", (DormantConfig, "silent"): "f3842e511aac8166",
              (DormantConfig, "newly"): "5d949efd85d49ca2", (DormantConfig, "rounds"): "e052725c28c7546f"}
    for (cls, result), want in pinned.items():
        assert config_hash(settings_of(cls(), result)) == want, (cls.__name__, result)
    base, later = SearchConfig(), SearchConfig(clamps=(0.0,), greedy_tau=0.2, batch_size=4)
    assert settings_of(base, "candidates") == settings_of(later, "candidates")  # later settings: earlier results kept
    assert settings_of(base, "choice") != settings_of(later, "choice") and "batch_size" not in settings_of(later, "choice")
    assert "n_card_prompts" not in settings_of(base, "cards")  # only when changed
    assert settings_of(SearchConfig(n_card_prompts=8), "cards")["n_card_prompts"] == 8
