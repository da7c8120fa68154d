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


# --- gzip-compressed JSONL, families from nested fields, outside prompt sets ------------------------------------

def _gz(path, lines):
    import gzip

    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def _row(text, fam, label="refused", answer="an answer"):
    return json.dumps({"id": text, "instruction": text, "answer": answer, "label": label,
                       "extra": {"prompt_complexity_cate": fam, "producing_model": "m"}})


def test_jsonl_gz_reads_like_jsonl_with_a_nested_family(tmp_path):
    f = _gz(tmp_path / "outside.jsonl.gz", [_row("Tell me a joke", "Q1"), "", _row("Write a haiku", "Q5")])
    ps = load_dataset(str(f), family_field="extra.prompt_complexity_cate")
    assert ps.name == "outside" and ps.instructions == ["Tell me a joke", "Write a haiku"]
    assert [r.family for r in ps] == ["Q1", "Q5"] and [r.extra["family"] for r in ps] == ["Q1", "Q5"]
    assert all(r.label == "unknown" for r in ps)  # an answer's complied / refused is not a prompt label
    assert not ps.is_test and load_dataset(str(f)).records[0].family is None  # no family field named: none


def test_a_row_family_field_is_kept(tmp_path):
    f = tmp_path / "fams.jsonl"
    f.write_text('{"prompt": "a", "family": "roleplay"}\n{"prompt": "b", "jailbreak_family": "prefix_injection"}\n')
    assert [r.family for r in load_dataset(str(f))] == ["roleplay", "prefix_injection"]


def test_dedup_keeps_first_occurrence_order(tmp_path):
    f = _gz(tmp_path / "answers.jsonl.gz", [_row("b", "Q2"), _row("a", "Q1"), _row("b", "Q3", "complied"), _row("c", "Q4")])
    ps = load_dataset(str(f), family_field="extra.prompt_complexity_cate", dedup=True)
    assert ps.instructions == ["b", "a", "c"]
    assert [r.family for r in ps] == ["Q2", "Q1", "Q4"] and [r.extra["n_rows"] for r in ps] == [2, 1, 1]
    assert len(load_dataset(str(f))) == 4


def test_jsonl_gz_bad_line_2_names_the_file_and_line(tmp_path):
    f = _gz(tmp_path / "bad.jsonl.gz", [_row("ok", "Q1"), '{"instruction": ', _row("ok too", "Q2")])
    with pytest.raises(DataError, match="line 2") as e:
        load_dataset(str(f))
    assert str(f) in str(e.value)


def test_jsonl_line_numbers_ignore_unicode_line_separators(tmp_path):
    f = tmp_path / "u2028.jsonl"
    f.write_text('{"prompt": "one\u2028two"}\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        load_dataset(str(f))


@pytest.mark.parametrize("how", ["not_gzip", "truncated", "corrupt_body", "bad_crc"])
def test_corrupt_gz_is_one_data_error(tmp_path, how):
    import gzip

    good = gzip.compress((_row("Tell me a joke", "Q1") + "\n").encode() * 50)
    content = {"not_gzip": b"not gzip at all", "truncated": good[:40],
               "corrupt_body": good[:12] + bytes(b ^ 0xFF for b in good[12:]), "bad_crc": good[:-8] + bytes(8)}[how]
    f = tmp_path / "broken.jsonl.gz"
    f.write_bytes(content)
    with pytest.raises(DataError, match="not a valid gzip file") as e:
        load_dataset(str(f))
    assert str(f) in str(e.value) and e.value.__cause__ is None


def test_unknown_family_field_is_one_clear_error(tmp_path):
    f = _gz(tmp_path / "x.jsonl.gz", [_row("a", "Q1")])
    with pytest.raises(DataError, match="no row has the family field 'extra.nope'"):
        load_dataset(str(f), family_field="extra.nope")
    with pytest.raises(DataError, match="no field 'extra.nope'"):
        load_dataset(str(f), text_field="extra.nope")


def test_outside_sets_are_registered_test_splits():
    from refusal_sae.data.registry import get_spec, is_test_split

    for name in ("jailjudge_mini", "xstest_prompts"):
        assert name in dataset_names() and is_test_split(name)
        assert "outside this project" in get_spec(name).description or "written outside" in get_spec(name).description


def _judge_labels(data_dir):
    if not (data_dir / "judge_labels" / "jailjudge_mini" / "rows.jsonl.gz").is_file():
        pytest.skip("no judge_labels/ in the shared data folder")


def test_jailjudge_mini_loads_unique_prompts_with_families(data_dir):
    _judge_labels(data_dir)
    ps = load_dataset("jailjudge_mini", data_dir)
    assert ps.is_test and len(ps) == len(set(ps.instructions)) > 0
    assert len({r.family for r in ps}) >= 3 and all(r.family for r in ps)
    assert sum(r.extra["n_rows"] for r in ps) == 1000  # every answer row is one prompt's
    assert not any("answer" in r.extra or "original_label" in r.extra.get("extra", {}) for r in ps)


def test_xstest_prompts_keep_safe_unsafe_labels(data_dir):
    _judge_labels(data_dir)
    ps = load_dataset("xstest_prompts", data_dir)
    assert ps.is_test and len(ps) == len(set(ps.instructions))
    labels = {r.label for r in ps}
    assert labels == {"harmful", "harmless"} and len({r.family for r in ps}) > 1


def test_outside_sets_need_the_data_dir(monkeypatch, tmp_path):
    from refusal_sae.data import registry

    monkeypatch.setattr(registry, "default_data_dir", lambda: None)
    monkeypatch.setenv("REFUSAL_SAE_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="no public source in this form"):
        load_dataset("jailjudge_mini")
