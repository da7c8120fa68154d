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
