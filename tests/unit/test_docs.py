"""The README and docs stay true: the set-up commands (CI runs the test one) and every relative link and anchor.
The README's Python example is executed by ``tests/integration/test_readme.py`` (slow: it loads the model)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

SETUP_COMMANDS = (
    "bash scripts/bootstrap.sh && .venv/bin/refusal-sae demo",
    "bash scripts/bootstrap.sh && .venv/bin/python -m pytest -q",
)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
NUMBER = re.compile(r"[-+]?\d+\.\d+")


def fenced(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def example_and_output(text: str) -> tuple[str, str]:
    """The README's Python example and the plain block after it (what the example prints)."""
    blocks = fenced(text)
    i = next(i for i, (lang, _) in enumerate(blocks) if lang == "python")
    assert sum(lang == "python" for lang, _ in blocks) == 1, "one Python example expected; extend this test for more"
    assert i + 1 < len(blocks) and blocks[i + 1][0] == "", "the example's printed output should follow it"
    return blocks[i][1], blocks[i + 1][1]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def test_readme_keeps_the_setup_commands_verbatim():
    lines = README.read_text(encoding="utf-8").splitlines()
    for cmd in SETUP_COMMANDS:
        assert cmd in lines, f"README lost the set-up command line {cmd!r} (CI runs the test one)"


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    text = FENCE.sub("", doc.read_text(encoding="utf-8"))
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http(s):, mailto: ...
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        assert dest.exists(), f"{doc.name}: link {target!r} points to a missing file"
        if anchor:
            assert anchor in anchors(dest), f"{doc.name}: link {target!r} points to a missing heading"
