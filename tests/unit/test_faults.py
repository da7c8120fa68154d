"""Inputs checked at the door (issue 29): each fault a user hit gives one ``error:`` line and exit 2 before any work,
in the stage commands and in ``run`` / ``run --dry-run``, and leaves nothing behind (no run directory, no partial
file). docs/faults.md lists them with their messages.

The CLI runs in-process through ``refusal_sae.cli.main`` (the exit code and stderr a user sees) from a fresh working
directory; the hub test alone starts a process, so that the hub client sees no offline flag.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from refusal_sae.cli import main
from refusal_sae.errors import DataError, ModelLoadError
from tests.conftest import build_tiny

H1 = "blocks.1.hook_resid_post"


# --- helpers -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny-llama")
    h = build_tiny("llama")
    h.model.save_pretrained(d, safe_serialization=True)
    h.tokenizer.save_pretrained(d)
    return d


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """A fresh working directory (default run directories land here, and must not)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``refusal-sae ARGS`` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["refusal-sae", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def fails(monkeypatch, capsys, work: Path, *args: str, needle: str) -> str:
    """Run ``args``, expect exit 2 with one stderr line ``error: ...`` holding ``needle``, and nothing written."""
    before = files(work)
    code, out, err = cli(monkeypatch, capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    assert files(work) == before, files(work) - before  # no run directory, no partial file
    return lines[0]


def config(work: Path, tiny: Path, **raw) -> Path:
    base = {"model": {"model": str(tiny), "device": "cpu"}, "stages": ["eval"],
            "eval": [{"dataset": "harmful_val", "n": 2, "max_new_tokens": 2, "judge": "substring"}]}
    path = work / "c.yaml"
    path.write_text(json.dumps(base | raw))  # JSON is YAML
    return path


RUN_MODES = pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])


def run_args(path: Path, dry: bool, *more: str) -> list[str]:
    return ["run", str(path), *(["--dry-run"] if dry else []), *more]


# --- 1. devices and dtypes --------------------------------------------------------------------------------------
@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("command", ["eval", "direction"])
@pytest.mark.parametrize("flags, needle", [
    (["--device", "tpu"], "unknown device 'tpu'; expected auto, cpu, cuda, cuda:N, mps or xpu"),
    (["--device", "cuda"], "device cuda: CUDA is not available on this machine"),
    (["--dtype", "float7"], "unknown dtype 'float7'"),
])
def test_stage_commands_check_device_and_dtype(command, flags, needle, no_gpu, work, monkeypatch, capsys):
    fails(monkeypatch, capsys, work, command, *flags, needle=needle)


def test_a_gpu_index_beyond_the_machine(two_gpus, work, monkeypatch, capsys):
    fails(monkeypatch, capsys, work, "eval", "--device", "cuda:3", needle="device cuda:3: this machine has 2 CUDA devices")


@RUN_MODES
def test_run_checks_device_and_dtype(dry, tiny_dir, no_gpu, work, monkeypatch, capsys):
    path = config(work, tiny_dir)
    fails(monkeypatch, capsys, work, *run_args(path, dry, "--device", "tpu"), needle="model.device: unknown device 'tpu'")
    fails(monkeypatch, capsys, work, *run_args(path, dry, "--dtype", "half-ish"), needle="model.dtype: unknown dtype")


def test_a_missing_gpu_stops_run_and_is_noted_by_a_dry_run(tiny_dir, no_gpu, work, monkeypatch, capsys):
    """A dry run may plan a run for another machine (the paper configs say cuda): a note; `run` stops."""
    path = config(work, tiny_dir, model={"model": str(tiny_dir), "device": "cuda"})
    fails(monkeypatch, capsys, work, *run_args(path, False), needle="model.device cuda: CUDA is not available")
    code, out, _ = cli(monkeypatch, capsys, *run_args(path, True))
    assert code == 0 and "note: `run` would stop here: model.device cuda: CUDA is not available" in out


def test_half_precision_on_the_cpu_is_allowed():
    from refusal_sae.models.device import check_device

    for dtype in ("bfloat16", "bf16", "float16", "fp16", "auto"):
        check_device("cpu", dtype)


# --- 2. weights files -------------------------------------------------------------------------------------------
def _safetensors(tmp: Path) -> bytes:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(64)}, tmp / "ok.safetensors")
    return (tmp / "ok.safetensors").read_bytes()


@pytest.mark.parametrize("damage, reason", [
    (lambda b: b[:-10], "incomplete metadata"),  # cut short
    (lambda b: b + b"xx", "incomplete metadata"),  # padded
    (lambda b: b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "header too large"),  # another file
    (lambda b: b"", "header too small"),
])
def test_check_safetensors(tmp_path, damage, reason):
    from refusal_sae.checks import check_safetensors

    good = _safetensors(tmp_path)
    check_safetensors(tmp_path / "ok.safetensors", "x")
    (tmp_path / "bad.safetensors").write_bytes(damage(good))
    with pytest.raises(ModelLoadError, match=reason):
        check_safetensors(tmp_path / "bad.safetensors", "SAE x")


def _bad_sae_folder(work: Path) -> Path:
    sub = work / "saes" / H1
    sub.mkdir(parents=True)
    (sub / "cfg.json").write_text(json.dumps({"d_in": 64, "d_sae": 96, "metadata": {"hook_name": H1}}))
    (sub / "sae_weights.safetensors").write_bytes(_safetensors(work)[:-100])
    (work / "ok.safetensors").unlink()
    return work / "saes"


SAE_NEEDLE = f"SAE {H1}: saes/{H1}/sae_weights.safetensors is not a valid safetensors file (incomplete metadata"


def test_sae_command_checks_the_weights_before_loading_the_model(tiny_dir, work, monkeypatch, capsys):
    saes = _bad_sae_folder(work)
    fails(monkeypatch, capsys, work, "sae-metrics", "--model", tiny_dir, "--saes", saes.name, needle=SAE_NEEDLE)


@RUN_MODES
def test_run_checks_the_sae_weights(dry, tiny_dir, work, monkeypatch, capsys):
    saes = _bad_sae_folder(work)
    path = config(work, tiny_dir, stages=["sae_metrics"], saes={"folder": saes.name})
    fails(monkeypatch, capsys, work, *run_args(path, dry), needle=SAE_NEEDLE)


def _adapter(work: Path, kind: str) -> Path:
    d = work / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    if kind == "pickle":
        (d / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    else:
        (d / "adapter_model.safetensors").write_bytes(b"<html>rate limited</html>")
    return d


ADAPTER_FAULTS = pytest.mark.parametrize("kind, needle", [
    ("garbage", "adapter adapter: adapter/adapter_model.safetensors is not a valid safetensors file"),
    ("pickle", "adapter adapter holds adapter_model.bin, a pickle, which is never loaded"),
])


@ADAPTER_FAULTS
def test_stage_command_checks_the_adapter(kind, needle, tiny_dir, work, monkeypatch, capsys):
    _adapter(work, kind)
    fails(monkeypatch, capsys, work, "eval", "--model", tiny_dir, "--adapter", "adapter", needle=needle)


@ADAPTER_FAULTS
@RUN_MODES
def test_run_checks_the_adapter(dry, kind, needle, tiny_dir, work, monkeypatch, capsys):
    _adapter(work, kind)
    fails(monkeypatch, capsys, work, *run_args(config(work, tiny_dir), dry, "--adapter", "adapter"), needle=needle)


# --- 3. where it writes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, needle", [
    (["--run-dir", "afile"], "run_dir afile is an existing file, not a directory"),
    (["--run-dir", "afile/sub"], "run_dir afile/sub cannot be created: {work}/afile is a file, not a directory"),
    (["--set", "report.path=afile/r.html"], "report.path afile/r.html cannot be created: {work}/afile is a file"),
    (["--set", "report.path=."], "report.path . is a directory; give a file name"),
])
@RUN_MODES
def test_run_checks_where_it_writes(dry, flags, needle, tiny_dir, work, monkeypatch, capsys):
    (work / "afile").write_text("x")
    path = config(work, tiny_dir)
    fails(monkeypatch, capsys, work, *run_args(path, dry, *flags), needle=needle.format(work=work))


def test_stage_command_checks_its_run_dir(work, monkeypatch, capsys):
    (work / "afile").write_text("x")
    fails(monkeypatch, capsys, work, "eval", "--run-dir", "afile", needle="--run-dir afile is an existing file")


@RUN_MODES
def test_a_folder_without_write_permission(dry, tiny_dir, work, monkeypatch, capsys):
    """os.access stands in for the permission bits (tests may run as root, who may write anywhere)."""
    locked = work / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p).absolute() != locked and real(p, mode, **kw))
    fails(monkeypatch, capsys, work, *run_args(config(work, tiny_dir), dry, "--run-dir", "locked/run"),
          needle=f"run_dir locked/run cannot be written: no permission to write in {locked}")
    fails(monkeypatch, capsys, work, "eval", "--run-dir", "locked/run", needle="no permission to write in")


def test_writing_outside_the_working_directory_is_noted(tiny_dir, work, monkeypatch, capsys):
    inside = work / "w"
    inside.mkdir()
    monkeypatch.chdir(inside)
    path = config(inside, tiny_dir, run_dir=str(work / "elsewhere"), report={"path": "../r.html"})
    code, out, _ = cli(monkeypatch, capsys, *run_args(path, True))
    assert code == 0
    assert f"note: writes outside the working directory: {work / 'elsewhere'}" in out
    assert f"note: writes outside the working directory: {work / 'r.html'}" in out
    assert not (work / "elsewhere").exists()


# --- 4. prompts longer than the model's context -----------------------------------------------------------------
@pytest.fixture
def long_jsonl(work) -> Path:
    """Line 2: 200,000 characters (the prompt that made a run sit in its first forward pass)."""
    path = work / "long.jsonl"
    path.write_text(json.dumps({"prompt": "Tell me a joke."}) + "\n" + json.dumps({"prompt": "word " * 40_000}) + "\n")
    return path


def _long_config(work, tiny_dir, name="long.jsonl", **raw):
    return config(work, tiny_dir, eval=[{"dataset": name, "n": 2, "max_new_tokens": 2, "judge": "substring"}], **raw)


def test_dry_run_counts_the_tokens_of_a_long_prompt(long_jsonl, tiny_dir, work, monkeypatch, capsys):
    fails(monkeypatch, capsys, work, *run_args(_long_config(work, tiny_dir), True),
          needle="eval: dataset 'long' (long.jsonl), line 2: the prompt is 199,999 characters, 120,000 tokens: longer "
                 "than the model's context of 1,024 tokens")


def test_run_refuses_a_huge_prompt_before_loading_the_model(long_jsonl, tiny_dir, work, monkeypatch, capsys):
    monkeypatch.setattr("refusal_sae.models.options.ModelSpec.load", lambda self: pytest.fail("the model was loaded"))
    fails(monkeypatch, capsys, work, *run_args(_long_config(work, tiny_dir), False),
          needle="line 2: the prompt is 199,999 characters: more than 4 per token of the default cap of 32,768 tokens")


def test_a_configured_cap(tiny_dir, work, monkeypatch, capsys):
    (work / "mid.jsonl").write_text(json.dumps({"prompt": "Tell me a joke. " * 20}) + "\n")
    fails(monkeypatch, capsys, work, *run_args(_long_config(work, tiny_dir, "mid.jsonl", max_prompt_tokens=50), True),
          needle="line 1: the prompt is 319 characters, ")


def test_stage_command_checks_prompt_lengths(long_jsonl, tiny_dir, work, monkeypatch, capsys):
    fails(monkeypatch, capsys, work, "eval", "--model", tiny_dir, "--dataset", "long.jsonl",
          needle="dataset 'long' (long.jsonl), line 2: the prompt is 199,999 characters, 120,000 tokens")


def test_run_measures_prompts_with_the_loaded_tokenizer(tiny_dir, tmp_path):
    """Longer in bytes than the context but short in characters: only the loaded model's tokenizer can tell."""
    from refusal_sae.pipeline.config import load_config
    from refusal_sae.pipeline.facts import ModelFacts
    from refusal_sae.pipeline.runner import check

    (tmp_path / "mid.jsonl").write_text(json.dumps({"prompt": "Tell me about the sea. " * 150}) + "\n")
    cfg = load_config(raw=json.loads(_long_config(tmp_path, tiny_dir, str(tmp_path / "mid.jsonl")).read_text()))
    check(cfg, ModelFacts("tiny"))  # before the model loads: no tokenizer, within 4 characters per token
    with pytest.raises(DataError, match="line 1: the prompt is 3,449 characters, 1,499 tokens"):
        check(cfg, ModelFacts.from_handle(build_tiny("llama")))


def test_short_prompts_are_never_tokenized():
    from refusal_sae.data.limits import PromptLimit

    class Refuses:
        def __call__(self, *a, **kw):
            raise AssertionError("tokenized a prompt with fewer bytes than the limit")

    limit = PromptLimit(100, Refuses())
    assert limit.problem("x" * 99) is None and limit.problem("é" * 49) is None  # 98 bytes


# --- 5. the hub, unreachable ------------------------------------------------------------------------------------
PROXIES = [f"{scheme}_proxy" for scheme in ("http", "https", "all")]
PROXIES += [p.upper() for p in PROXIES]  # a proxy would be asked instead of the endpoint


def test_an_unreachable_hub_fails_fast(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *PROXIES)}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there: every hub request goes nowhere, at once
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "refusal_sae", "eval", "--model", "no-such-org/no-such-model"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "cannot load model 'no-such-org/no-such-model'" in lines[0] and "the hub is unreachable" in lines[0]
    assert time.perf_counter() - t < 30 and not any(tmp_path.iterdir())


def test_hub_offline_when_unreachable(monkeypatch):
    from huggingface_hub import constants

    from refusal_sae.models.hub import hub_address
    from refusal_sae.pipeline.facts import hub_offline

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *PROXIES):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    assert hub_address() == ("127.0.0.1", 9)
    assert hub_offline()


# --- 6. file errors name the right line -------------------------------------------------------------------------
def test_jsonl_errors_name_the_file_line(work, monkeypatch, capsys):
    (work / "bad.jsonl").write_text(json.dumps({"prompt": "ok"}) + "\n\n{oops\n")
    fails(monkeypatch, capsys, work, "eval", "--dataset", "bad.jsonl", needle="bad.jsonl: malformed JSON on line 3")


@pytest.mark.parametrize("name, text, needle", [
    ("c.yaml", "model:\n  model: x\n  device: cpu\n stages: [eval]\n", "c.yaml, line 4 column 2: not valid YAML"),
    ("c.yaml", "stages: [direction\neval: 3\n", "c.yaml, line 2 column 5: not valid YAML"),
    ("c.toml", "stages = [\n", "c.toml: not valid TOML"),
    ("c.yaml", "", "config c.yaml is empty"),
    ("c.yaml", "# every stage at full size?\n", "config c.yaml is empty"),
    ("c.toml", "", "config c.toml is empty"),
])
@RUN_MODES
def test_config_file_errors(dry, name, text, needle, work, monkeypatch, capsys):
    (work / name).write_text(text)
    fails(monkeypatch, capsys, work, *run_args(Path(name), dry), needle=needle)


# --- 7. trust_remote_code ---------------------------------------------------------------------------------------
def test_dry_run_never_runs_remote_code(work, monkeypatch, capsys):
    repo = work / "custom"
    repo.mkdir()
    (repo / "config.json").write_text(json.dumps({"model_type": "faultcustom", "num_hidden_layers": 2,
                                                  "auto_map": {"AutoConfig": "configuration_fault.FaultConfig"}}))
    (repo / "configuration_fault.py").write_text("import pathlib\npathlib.Path(__file__).with_name('RAN').touch()\n")
    path = config(work, repo, model={"model": str(repo), "device": "cpu", "trust_remote_code": True})
    code, out, err = cli(monkeypatch, capsys, *run_args(path, True))
    assert code == 0, err
    assert "note: model: its config needs the repository's own code (trust_remote_code), which a check never runs" in out
    assert not (repo / "RAN").exists()


def test_a_real_load_with_remote_code_warns_once(tiny_dir, capsys):
    from refusal_sae.models.options import ModelSpec

    ModelSpec(str(tiny_dir), device="cpu", trust_remote_code=True).load()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: trust_remote_code is on: {tiny_dir} may run Python code from its repository on "
                        "this machine"]


# --- 8. binary files where text is expected ---------------------------------------------------------------------
def test_compare_on_a_binary_file(work, monkeypatch, capsys):
    (work / "a.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    (work / "b.jsonl").write_text(json.dumps({"instruction": "x", "judgement": "complied"}) + "\n")
    fails(monkeypatch, capsys, work, "compare", "a.jsonl", "b.jsonl",
          needle="a.jsonl: not a UTF-8 text file (byte 0 is 0x89); expected an eval JSONL")


def test_labelled_answers_in_a_binary_file(tmp_path):
    from refusal_sae.scoring.labels import load_labelled

    (tmp_path / "answers.jsonl").write_bytes(b"\xff\xfe\0b\0i\0n")
    with pytest.raises(DataError, match="answers.jsonl: not a UTF-8 text file"):
        load_labelled(labels_dir=tmp_path)


# --- 9. Ctrl-C --------------------------------------------------------------------------------------------------
def test_ctrl_c_says_how_to_resume(work, monkeypatch, capsys):
    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr("refusal_sae.scoring.compare.compare_files", interrupted)
    code, _, err = cli(monkeypatch, capsys, "compare", "a", "b")
    assert code == 130
    assert err.strip() == ("interrupted: stopped by Ctrl-C; run the same command again to resume (finished stages and "
                           "results are kept)")
