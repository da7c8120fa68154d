import json
import shutil
from collections import Counter

import pytest

from refusal_sae.data.registry import get_spec
from refusal_sae.errors import ConfigError, DataError
from refusal_sae.scoring.labels import (
    ANSWERS_FILE,
    LABELS,
    LABELS_DIR,
    LABELS_FILE,
    count_table,
    format_table,
    load_labelled,
)


@pytest.fixture(scope="module")
def labelled(data_dir):
    return load_labelled(data_dir=data_dir)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_committed_files_load_with_at_least_400_answers(labelled):
    assert len(labelled) >= 400
    assert len({a.id for a in labelled}) == len(labelled)
    assert all(a.instruction and a.prompt and isinstance(a.answer, str) and a.rationale for a in labelled)


def test_every_answer_has_exactly_one_valid_label():
    answers = _rows(LABELS_DIR / ANSWERS_FILE)
    labels = _rows(LABELS_DIR / LABELS_FILE)
    ids = Counter(r["id"] for r in labels)
    assert all(n == 1 for n in ids.values())
    assert set(ids) == {r["id"] for r in answers}
    assert all(r["label"] in LABELS for r in labels)
    assert all(r.get("confidence", "high") in ("high", "low") for r in labels)


def test_dev_and_test_share_no_instruction(labelled):
    dev = {" ".join(a.instruction.lower().split()) for a in labelled if a.split == "dev"}
    test = {" ".join(a.instruction.lower().split()) for a in labelled if a.split == "test"}
    assert dev and test and not dev & test


def test_split_filter(labelled, data_dir):
    dev = load_labelled("dev", data_dir=data_dir)
    test = load_labelled("test", data_dir=data_dir)
    assert len(dev) + len(test) == len(labelled)
    assert {a.split for a in dev} == {"dev"} and {a.split for a in test} == {"test"}
    assert 0.45 < len(dev) / len(labelled) < 0.75
    with pytest.raises(ConfigError):
        load_labelled("train", data_dir=data_dir)


def test_no_row_references_a_test_split():
    for r in _rows(LABELS_DIR / ANSWERS_FILE):
        assert not get_spec(r["source"]["dataset"]).is_test, r["id"]


def test_jailbreak_rows_carry_their_wrapped_prompt(labelled):
    jb = [a for a in labelled if a.jailbreak is not None]
    assert jb and all(a.condition == "jailbreak/harmful" and a.prompt != a.instruction for a in jb)
    assert all(a.prompt == a.instruction for a in labelled if a.jailbreak is None)


def test_every_condition_is_labelled(labelled):
    table = count_table(labelled)
    assert {k[0] for k in table} >= {"none/harmful", "none/harmless", "base/harmful", "ablate/harmful",
                                      "actadd/harmless", "clamp0/harmful", "clamp-1/harmful", "clamp-3/harmful",
                                      "jailbreak/harmful"}
    assert sum(sum(c.values()) for c in table.values()) == len(labelled)
    assert "total" in format_table(labelled, by=("condition", "split"))


def _copy(tmp_path):
    dst = tmp_path / "judge_labels"
    dst.mkdir()
    for name in (ANSWERS_FILE, LABELS_FILE):
        shutil.copy(LABELS_DIR / name, dst / name)
    return dst


def _rewrite(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_sha_check_catches_a_tampered_reference(tmp_path, data_dir):
    folder = _copy(tmp_path)
    rows = _rows(folder / ANSWERS_FILE)
    rows[0]["source"]["index"] += 1  # points at another row: its sha no longer matches
    _rewrite(folder / ANSWERS_FILE, rows)
    with pytest.raises(DataError, match="sha"):
        load_labelled(data_dir=data_dir, labels_dir=folder)


def test_tampered_sha_and_test_split_reference_are_caught(tmp_path, data_dir):
    folder = _copy(tmp_path)
    rows = _rows(folder / ANSWERS_FILE)
    rows[1]["source"]["sha"] = "0" * 12
    _rewrite(folder / ANSWERS_FILE, rows)
    with pytest.raises(DataError, match="sha"):
        load_labelled(data_dir=data_dir, labels_dir=folder)
    rows = _rows(LABELS_DIR / ANSWERS_FILE)
    rows[2]["source"] = {"dataset": "jailbreakbench", "index": 0, "sha": rows[2]["source"]["sha"]}
    _rewrite(folder / ANSWERS_FILE, rows)
    with pytest.raises(DataError, match="test split"):
        load_labelled(data_dir=data_dir, labels_dir=folder)


def test_missing_duplicate_or_bad_labels_are_caught(tmp_path, data_dir):
    folder = _copy(tmp_path)
    labels = _rows(folder / LABELS_FILE)
    _rewrite(folder / LABELS_FILE, labels[1:])
    with pytest.raises(DataError, match="unlabelled"):
        load_labelled(data_dir=data_dir, labels_dir=folder)
    _rewrite(folder / LABELS_FILE, labels + labels[:1])
    with pytest.raises(DataError, match="more than once"):
        load_labelled(data_dir=data_dir, labels_dir=folder)
    bad = [dict(labels[0], label="maybe")] + labels[1:]
    _rewrite(folder / LABELS_FILE, bad)
    with pytest.raises(DataError, match="not one of"):
        load_labelled(data_dir=data_dir, labels_dir=folder)


def test_an_instruction_in_both_splits_is_caught(tmp_path, data_dir):
    folder = _copy(tmp_path)
    rows = _rows(folder / ANSWERS_FILE)
    rows.append(dict(rows[0], id="dup-split", split="test" if rows[0]["split"] == "dev" else "dev"))
    _rewrite(folder / ANSWERS_FILE, rows)
    labels = _rows(folder / LABELS_FILE)
    labels.append(dict(labels[0], id="dup-split"))
    _rewrite(folder / LABELS_FILE, labels)
    with pytest.raises(DataError, match="both the dev and the test split"):
        load_labelled(data_dir=data_dir, labels_dir=folder)
