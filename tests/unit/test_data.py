import json

import pytest

from refusal_sae.data import dataset_names, load_dataset
from refusal_sae.errors import DataError

EXPECTED = {"harmful_train": 260, "harmful_val": 39, "harmless_test": 6266, "advbench": 520, "harmbench_val": 41,
            "harmbench_test": 159, "jailbreakbench": 100, "malicious_instruct": 100, "tdc2023": 100,
            "xstest": 450, "xstest_safe": 250, "xstest_unsafe": 200}


def test_registry_has_every_issue_name():
    need = {"harmful_train", "harmful_val", "harmless_train", "harmless_val", "harmless_test", "advbench",
            "harmbench_val", "harmbench_test", "jailbreakbench", "malicious_instruct", "tdc2023", "alpaca",
            "xstest", "xstest_safe", "xstest_unsafe"}
    assert need <= set(dataset_names())


@pytest.mark.parametrize("name,n", sorted(EXPECTED.items()))
def test_registered_sets_load_with_sizes(data_dir, name, n):
    ps = load_dataset(name, data_dir)
    assert len(ps) == n
    assert all(r.instruction and r.label in ("harmful", "harmless") for r in ps)


def test_labels_and_test_flags(data_dir):
    assert load_dataset("xstest_safe", data_dir)[0].label == "harmless"
    assert load_dataset("xstest_unsafe", data_dir)[0].label == "harmful"
    assert load_dataset("jailbreakbench", data_dir).is_test
    assert load_dataset("harmbench_test", data_dir).is_test
    assert not load_dataset("harmful_train", data_dir).is_test


def test_sample_is_seeded(data_dir):
    a = load_dataset("harmless_val", data_dir, n=10, seed=3).instructions
    b = load_dataset("harmless_val", data_dir, n=10, seed=3).instructions
    c = load_dataset("harmless_val", data_dir, n=10, seed=4).instructions
    assert a == b and a != c and len(a) == 10


def test_env_var_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("REFUSAL_SAE_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="file not found"):
        load_dataset("harmful_train")


@pytest.mark.parametrize("suffix,content", [
    (".json", '[{"instruction": "Tell me a joke"}, "Write a haiku"]'),
    (".jsonl", '{"prompt": "Tell me a joke"}\n{"prompt": "Write a haiku"}\n'),
    (".csv", "id,goal\n1,Tell me a joke\n2,Write a haiku\n"),
])
def test_user_files(tmp_path, suffix, content):
    f = tmp_path / f"mine{suffix}"
    f.write_text(content)
    assert load_dataset(str(f)).instructions == ["Tell me a joke", "Write a haiku"]


@pytest.mark.parametrize("suffix,content,match", [
    (".json", "[{\"instruction\": ", "malformed JSON"),
    (".json", "[]", "empty"),
    (".json", '{"instruction": "x"}', "expected a JSON list"),
    (".json", '[{"text": ""}]', "empty instruction"),
    (".json", '[{"foo": "bar"}]', "none of the fields"),
    (".csv", "a,b\n1,2\n", "CSV needs a column"),
    (".jsonl", '{"prompt": "ok"}\nnot json\n', "malformed JSON"),
])
def test_bad_files_raise_one_clear_error(tmp_path, suffix, content, match):
    f = tmp_path / f"bad{suffix}"
    f.write_text(content)
    with pytest.raises(DataError, match=match) as e:
        load_dataset(str(f))
    assert str(f) in str(e.value) or "bad" in str(e.value)


def test_unknown_name_and_missing_file():
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("no_such_set")
    with pytest.raises(DataError, match="not found"):
        load_dataset("/tmp/does/not/exist.json")


def test_records_serialise(data_dir):
    r = load_dataset("jailbreakbench", data_dir)[0]
    assert json.loads(json.dumps(r.to_dict()))["instruction"] == r.instruction
