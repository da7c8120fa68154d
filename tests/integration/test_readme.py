"""The README's Python example, executed as written (slow: it loads the embedded model); it must print what the
README says it prints."""

from __future__ import annotations

import contextlib
import io

import pytest

from tests.unit.test_docs import NUMBER, README, example_and_output

pytestmark = pytest.mark.slow


def test_readme_python_example_runs_and_prints_what_it_says(tmp_path, monkeypatch, data_dir):
    import torch

    code, shown = example_and_output(README.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)  # anything the example writes lands here
    monkeypatch.setenv("REFUSAL_SAE_DATA_DIR", str(data_dir))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, str(README) + ":python", "exec"), {"__name__": "__readme__"})
    got, want = buf.getvalue().strip().splitlines(), shown.strip().splitlines()
    assert len(got) == len(want), f"the example printed\n{buf.getvalue()}\nbut the README shows\n{shown}"
    for g, w in zip(got, want, strict=True):
        # Labels and token positions must match everywhere. Refusal scores (to 0.02) and the judged counts only
        # where the model runs as the README's did (CPU, float32): on a GPU it loads in bfloat16.
        assert NUMBER.sub("#", g) == NUMBER.sub("#", w) or g.startswith("{"), f"printed {g!r}, README shows {w!r}"
        if not torch.cuda.is_available():
            for a, b in zip(NUMBER.findall(g), NUMBER.findall(w), strict=True):
                assert abs(float(a) - float(b)) <= 0.02, f"printed {g!r}, README shows {w!r}"
            assert not g.startswith("{") or g == w, f"printed {g!r}, README shows {w!r}"
