import pytest
import torch

from refusal_sae.errors import ConfigError, ModelLoadError
from refusal_sae.models import load_model
from refusal_sae.models.architectures import get_architecture, supported_architectures


def test_local_hf_directory_roundtrip(tmp_path, tiny_handle):
    tiny_handle.model.save_pretrained(tmp_path, safe_serialization=True)
    tiny_handle.tokenizer.save_pretrained(tmp_path)
    h = load_model(str(tmp_path), device="cpu", dtype="float32")
    assert (h.n_layers, h.d_model) == (tiny_handle.n_layers, tiny_handle.d_model)
    assert h.format("Hello there").input_ids == tiny_handle.format("Hello there").input_ids
    batch = h.batch(["Hello there"])
    with torch.no_grad():
        torch.testing.assert_close(h.forward(batch), tiny_handle.forward(batch), atol=1e-5, rtol=1e-5)


def test_unknown_model_offline_is_clear():
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_model("no-such-org/no-such-model-xyz", device="cpu", local_files_only=True)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(str(tmp_path), device="cpu")


def test_bad_dtype():
    with pytest.raises(ConfigError, match="dtype"):
        load_model("whatever", dtype="float7")


def test_architecture_registry():
    assert {"llama", "gemma2", "qwen2"} <= set(supported_architectures())
    with pytest.raises(ConfigError, match="no hook adapter"):
        get_architecture("rwkv")


def test_local_directory_revision_changes_when_weights_are_rewritten(tmp_path, tiny_llama):
    """Run stages key their results on ``handle.revision``: a re-saved (e.g. re-tuned) model must not match."""
    import time

    tiny_llama.model.save_pretrained(tmp_path)
    tiny_llama.tokenizer.save_pretrained(tmp_path)
    first = load_model(str(tmp_path), device="cpu").revision
    assert first and first == load_model(str(tmp_path), device="cpu").revision
    time.sleep(0.01)
    with torch.no_grad():
        tiny_llama.model.lm_head.weight.mul_(2)
    tiny_llama.model.save_pretrained(tmp_path)
    assert load_model(str(tmp_path), device="cpu").revision != first


def _save_adapter(handle, path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    peft_model = get_peft_model(handle.model, LoraConfig(r=2, target_modules=["down_proj"], init_lora_weights=False))
    peft_model.save_pretrained(path)
    return peft_model


def test_adapter_is_merged_and_changes_identity(tmp_path, tiny_llama):
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "my-adapter"
    tiny_llama.model.save_pretrained(base_dir)
    tiny_llama.tokenizer.save_pretrained(base_dir)
    plain = load_model(str(base_dir), device="cpu", dtype="float32")
    peft_model = _save_adapter(load_model(str(base_dir), device="cpu", dtype="float32"), adapter_dir)
    tuned = load_model(str(base_dir), adapter=adapter_dir, device="cpu", dtype="float32")
    assert tuned.name == f"{base_dir}+my-adapter" and tuned.adapter == str(adapter_dir)
    assert tuned.revision != plain.revision and tuned.revision.startswith(plain.revision)
    batch = tuned.batch(["Hello there"])
    with torch.no_grad():
        want = peft_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        got = tuned.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        assert (got - plain.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits).abs().max() > 1e-3
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_bad_adapter_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="not a LoRA adapter directory"):
        load_model("whatever", adapter=tmp_path, device="cpu")


def test_model_spec_names_run_directories():
    from pathlib import Path

    from refusal_sae.models.options import ModelSpec

    assert ModelSpec().default_run_dir() == Path("runs/smollm2-135m-refusing")
    tuned = ModelSpec(adapter="runs/tune/abc/adapter")
    assert tuned.default_run_dir() == Path("runs/smollm2-135m-refusing_runs_tune_abc_adapter")
    assert ModelSpec("google/gemma-2-2b-it").default_run_dir() == Path("runs/google_gemma-2-2b-it")
