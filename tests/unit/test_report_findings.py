"""The report's layout around its sections, from the synthetic run directory of ``test_report.py``: the findings
summary that opens it (each stage's headline numbers with intervals and controls), the appendix that closes it (run
metadata and the config-hash table), Neuronpedia links for SAEs of a sae-lens release (none for local SAEs), the
typed results it loads, and a report that still renders when results are missing or unreadable."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from refusal_sae.report import render_report
from refusal_sae.report.neuronpedia import neuronpedia_id
from refusal_sae.report.results import result_type, result_types
from refusal_sae.runs import RunDir
from tests.unit.test_report import synthetic_run

RELEASE = "gemma-scope-2b-pt-res-canonical"


@pytest.fixture(scope="module")
def run_root(tmp_path_factory) -> Path:
    return synthetic_run(tmp_path_factory.mktemp("findings") / "run")


def _copy(run_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_root, tmp_path / "run"))


def _section(page: str, sid: str) -> str:
    return page.split(f'<section id="{sid}">')[1].split("</section>")[0]


def _ids(page: str) -> list[str]:
    return re.findall(r'<section id="([\w-]+)"', page)


class _Saes(dict):
    """What RunDir.record_saes reads of an SaeSet: hook → SAE (its cfg.d_sae), and each hook's source."""

    def __init__(self, sources: dict[str, str]):
        super().__init__(dict.fromkeys(sources, SimpleNamespace(cfg=SimpleNamespace(d_sae=48))))
        self.sources = sources


def _record_saes(root: Path, sources: dict[str, str]) -> None:
    """Record SAE sources in the manifest the way a run does (a release SAE's source is ``<release>/<sae id>``)."""
    RunDir(root).record_saes(_Saes(sources))


def test_findings_open_the_report_with_headline_numbers_intervals_and_controls(tmp_path, run_root):
    page = render_report(_copy(run_root, tmp_path)).read_text()
    ids = _ids(page)
    assert ids[0] == "findings" and ids[1] == "direction"  # the summary first, then the sections in order
    assert page.index('<section id="findings">') < page.index('<section id="direction">')
    found = _section(page, "findings")
    # direction: layer and position, bypass / induce / KL, beside the unintervened baselines
    assert "chosen direction: layer 2, position -2" in found and "harmful 1.50, harmless -2.00" in found
    # evaluations: refused with the Wilson interval, the ablation beside the same prompts unintervened
    assert "jailbreakbench · ablate: refused</td><td class='value'>1/4 = 0.25 [0.05, 0.70]</td>" in found
    assert "unintervened: 2/4 = 0.50 [0.15, 0.85]" in found
    # search: K*, c, the minimal set's size, held-out complied beside the direction ablation and random sets
    assert "K* = 4, c = 0 chosen on 10 refused validation prompts" in found and "<b>2 of 4</b> features" in found
    ours = found.split("ours, global (4 features) complied")[1].split("</tr>")[0]
    assert "6/6 = 1.00 [0.61, 1.00]" in ours and "direction ablation (AS): 6/6" in ours and "random (K*): 1/12" in ours
    # interactions: FM vs probe AUC with bootstrap intervals; dormant: silent vs active members
    assert "FM ROC AUC</td><td class='value'>0.88 [0.73, 0.98]" in found and "linear probe 0.71 [0.56, 0.81]" in found
    assert "active members: 5/11" in found
    # every stage with a result links to its section; stages without one are named once, below the table
    assert "<a href='#search'>" in found and "Not in this run directory: " in found and "<a href='#probes'>" in found


def test_appendix_closes_the_report_with_the_config_hash_table(tmp_path, run_root):
    root = _copy(run_root, tmp_path)
    page = render_report(root).read_text()
    ids = _ids(page)
    assert ids[-1] == "run" and ids.index("cards") < ids.index("run")
    appendix = _section(page, "run")
    assert "Appendix: run metadata and stage results" in appendix and "config hash" in appendix
    manifest = json.loads((root / "manifest.json").read_text())
    h = manifest["stages"]["search/choice"]["config_hash"]
    assert f"<code>{h}</code>" in appendix and page.index(h) > page.index('<section id="cards">')
    assert "Stage results (" not in page.split('<section id="run">')[0]  # nowhere before the appendix
    nav = page.split("<nav>")[1].split("</nav>")[0]
    assert nav.index("#findings") < nav.index("#direction") < nav.index("#run")
    assert re.search(r"nav \{[^}]*flex-wrap: wrap", page)  # the navigation wraps instead of running off the edge


def test_neuronpedia_ids_come_from_sae_lens_for_release_saes_only(tmp_path):
    assert neuronpedia_id(f"{RELEASE}/layer_12/width_16k/canonical") == "gemma-2-2b/12-gemmascope-res-16k"
    assert neuronpedia_id("llama_scope_lxr_8x/l12r_8x") == "llama3.1-8b/12-llamascope-res-32k"
    assert neuronpedia_id(f"{RELEASE}/no_such_sae") is None and neuronpedia_id("no-such-release/x") is None
    local = tmp_path / RELEASE / "layer_12"  # a local folder, even one named like a release, gets no link
    local.mkdir(parents=True)
    assert neuronpedia_id(str(local)) is None and neuronpedia_id(f"{RELEASE}/layer_12") is None


def test_feature_cards_link_to_neuronpedia_for_a_release_sae_and_not_for_local_saes(tmp_path, run_root):
    root = _copy(run_root, tmp_path)
    _record_saes(root, {"blocks.1.hook_resid_post": f"{RELEASE}/layer_1/width_16k/canonical",
                        "blocks.2.hook_resid_post": str(tmp_path / "saes" / "blocks.2.hook_resid_post")})
    page = render_report(root).read_text()
    cards = _section(page, "cards")
    url = "https://www.neuronpedia.org/gemma-2-2b/1-gemmascope-res-16k/0"
    assert f"latent 0 @ blocks.1.hook_resid_post <a class='np' href='{url}'" in cards
    assert "latent 0 @ blocks.2.hook_resid_post</h4>" in cards  # the local SAE's card has no link
    assert cards.count("neuronpedia.org") == 1
    minimal = _section(page, "search").split("<h4>minimal set</h4>")[1]
    assert f"href='{url}'" in minimal and "Neuronpedia" in minimal
    assert "gemma-2-2b/1-gemmascope-res-16k" in _section(page, "run")  # the SAE table names the id
    # a run whose SAEs are all local: no link anywhere, no Neuronpedia column
    root2 = _copy(run_root, tmp_path / "local")
    _record_saes(root2, {"blocks.1.hook_resid_post": str(tmp_path / "saes" / "blocks.1.hook_resid_post")})
    page = render_report(root2).read_text()
    assert "neuronpedia.org" not in page and "<th>Neuronpedia</th>" not in page


def test_report_renders_when_results_are_missing_or_unreadable(tmp_path, run_root):
    root = _copy(run_root, tmp_path)
    for stage in ("direction", "harm_vs_refusal"):  # a stage that did not run
        shutil.rmtree(root / stage)
    (root / "eval" / "tiny__jailbreakbench__ablate" / "rows.jsonl").unlink()  # a result missing its row file
    info = json.loads((root / "search" / "greedy" / "result.json").read_text())
    (root / "search" / "greedy" / "result.json").write_text(json.dumps(info | {"schema": 99}))  # another schema,
    manifest = json.loads((root / "manifest.json").read_text())  # as a newer version would write it: hashes agree
    manifest["stages"]["search/greedy"]["files"]["result.json"] = hashlib.sha256(
        (root / "search" / "greedy" / "result.json").read_bytes()).hexdigest()
    (root / "manifest.json").write_text(json.dumps(manifest))
    page = render_report(root).read_text()
    ids = _ids(page)
    assert ids[0] == "findings" and '<section id="direction" class="off">' in page
    found = _section(page, "findings")
    assert "chosen direction" not in found and "<a href='#direction'>Refusal direction</a>" in found.split("Not in")[1]
    assert "greedy minimal set:" not in found and "K* = 4, c = 0" in found  # the rest of the search is still there
    left = _section(page, "run").split("Results left out")[1]
    assert "search/greedy" in left and "schema 99" in left and "eval/tiny__jailbreakbench__ablate" in left
    assert "jailbreakbench · ablate" not in _section(page, "evals") and "harmless_test · actadd" in _section(page, "evals")


def test_every_result_type_the_report_reads_exists_with_its_kind():
    """The stages declare the result classes they save (Stage.results); the report reads each by its kind, and every
    report section a stage names exists."""
    from refusal_sae.pipeline.stages import STAGES
    from refusal_sae.report.render import SECTIONS, register_builtin_sections

    for kind in result_types():
        assert result_type(kind).kind == kind
    register_builtin_sections()
    ids = {s.id for s in SECTIONS}
    assert all(set(stage.report) <= ids for stage in STAGES.values()), [(s.name, s.report) for s in STAGES.values()]
