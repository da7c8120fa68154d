import json

import pytest

from refusal_sae.errors import ConfigError, DataError, MismatchError
from refusal_sae.scoring.compare import compare_evals, read_eval_rows
from refusal_sae.scoring.stats import mcnemar_exact
from tests.unit.test_cli import run_cli


def test_mcnemar_exact_known_values():
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # all 5 discordant pairs one way: 2 * 0.5**5
    assert mcnemar_exact(3, 3) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(22, 9) == pytest.approx(0.0294, abs=1e-4)
    assert mcnemar_exact(9, 22) == pytest.approx(mcnemar_exact(22, 9))


def rows(labels, prefix="p"):
    return [{"instruction": f"{prefix}{i}", "judgement": j} for i, j in enumerate(labels)]


def test_compare_counts_discordant_prompts():
    a = rows(["complied", "complied", "degenerate", "refused", "complied"])
    b = rows(["complied", "degenerate", "complied", "complied", "complied"])
    c = compare_evals(a, b, "complied")
    assert (c.n, c.count_a, c.count_b, c.only_a, c.only_b) == (5, 3, 4, 1, 2)
    assert c.only_a_prompts == ["p1"] and c.only_b_prompts == ["p2", "p3"]
    assert c.p_value == pytest.approx(1.0)
    assert compare_evals(a, b, "refused").only_a_prompts == ["p3"]


def test_compare_refuses_unpaired_runs():
    with pytest.raises(MismatchError, match="different prompt sets"):
        compare_evals(rows(["complied"] * 3), rows(["complied"] * 2))
    with pytest.raises(MismatchError, match="different prompts"):
        compare_evals(rows(["complied"] * 2), rows(["complied"] * 2, prefix="q"))
    with pytest.raises(ConfigError, match="label"):
        compare_evals(rows(["complied"]), rows(["complied"]), "jailbroken")


def test_read_eval_rows_rejects_bad_files(tmp_path):
    empty, bad, wrong = tmp_path / "e.jsonl", tmp_path / "b.jsonl", tmp_path / "w.jsonl"
    empty.write_text("\n")
    bad.write_text('{"instruction": "x", "judgement": "complied"}\n{oops\n')
    wrong.write_text(json.dumps({"instruction": "x", "judgement": "maybe"}) + "\n")
    for path, needle in ((empty, "no rows"), (bad, ":2: malformed JSON"), (wrong, "judgement"), (tmp_path / "none", "no such")):
        with pytest.raises(DataError, match=needle):
            read_eval_rows(path)


def test_compare_cli_pools_pairs(tmp_path):
    files = []
    for name, labels in (("a1", ["complied", "degenerate"]), ("b1", ["degenerate", "degenerate"]),
                         ("a2", ["complied"]), ("b2", ["degenerate"])):
        f = tmp_path / f"{name}.jsonl"
        f.write_text("".join(json.dumps(r) + "\n" for r in rows(labels, prefix=name[1])))
        files.append(str(f))
    r = run_cli("compare", *files, "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert (got["n"], got["count_a"], got["count_b"], got["only_a"], got["only_b"]) == (3, 2, 0, 2, 0)
    r = run_cli("compare", *files[:3])
    assert r.returncode == 2 and "pairs" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("compare", files[0], files[2])  # different prompts
    assert r.returncode == 2 and "different prompt" in r.stderr


def test_group_counts_pairs_old_and_new_judge_per_condition():
    from refusal_sae.scoring.compare import group_counts

    rows = [{"row": "ours", "previous_judgement": "complied", "judgement": "degenerate"},
            {"row": "ours", "previous_judgement": "complied", "judgement": "complied"},
            {"row": "ours", "previous_judgement": "refused", "judgement": "complied"},
            {"row": "random", "previous_judgement": "refused", "judgement": "refused"}]
    ours, rnd = group_counts(rows, "row")
    assert (ours["group"], ours["n"], ours["complied_before"], ours["complied_after"]) == ("ours", 3, 2, 2)
    assert (ours["only_before"], ours["only_after"], ours["p_value"]) == (1, 1, 1.0)
    assert (ours["refused_before"], ours["refused_after"]) == (1, 0) and rnd["complied_after"] == 0
    with pytest.raises(DataError, match="--by family"):
        group_counts(rows, "family")
