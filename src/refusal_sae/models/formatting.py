"""Chat formatting with exact token positions of the instruction and of the post-instruction tokens.

The prompt is rendered by the tokenizer's own chat template (no hard-coded templates). The instruction
span is located through character offsets, so it is exact for any template: ``t_inst`` is the last
instruction token, ``post_inst`` the template tokens between the instruction and the answer
(e.g. ``<|im_end|>\\n<|im_start|>assistant\\n``). Those are the positions Arditi et al. read refusal at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from refusal_sae.errors import ConfigError


@dataclass(frozen=True)
class FormattedPrompt:
    instruction: str
    input_ids: tuple[int, ...]
    inst_start: int  # first instruction token
    inst_end: int  # one past the last instruction token

    @property
    def t_inst(self) -> int:
        """Index of the instruction's last token."""
        return self.inst_end - 1

    @property
    def post_inst(self) -> range:
        """Indices of the post-instruction tokens (template text up to the start of the answer)."""
        return range(self.inst_end, len(self.input_ids))

    @property
    def n_post_inst(self) -> int:
        return len(self.input_ids) - self.inst_end

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class PromptBatch:
    """Left-padded batch. Positions are given in padded coordinates."""

    prompts: list[FormattedPrompt]
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]

    @property
    def pad_offsets(self) -> torch.Tensor:
        return (self.attention_mask == 0).sum(dim=1)

    @property
    def t_inst(self) -> torch.Tensor:
        """[B] padded index of each prompt's last instruction token."""
        return self.pad_offsets + torch.tensor([p.t_inst for p in self.prompts])

    @property
    def n_post_inst(self) -> int:
        """Number of post-instruction tokens, shared by every prompt (same template suffix)."""
        counts = {p.n_post_inst for p in self.prompts}
        if len(counts) != 1:
            raise ConfigError(f"prompts in one batch have different post-instruction lengths: {sorted(counts)}")
        return counts.pop()

    def to(self, device: torch.device | str) -> PromptBatch:
        return PromptBatch(self.prompts, self.input_ids.to(device), self.attention_mask.to(device))

    def __len__(self) -> int:
        return len(self.prompts)


def render_chat(tokenizer, instruction: str, system: str | None = None) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": instruction}]
    if getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError("this tokenizer has no chat template; refusal-sae needs a chat (instruction-tuned) model")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _needs_bos(tokenizer, text: str) -> bool:
    bos = tokenizer.bos_token
    if bos is None or text.startswith(bos):
        return False
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return len(probe) > 0 and probe[0] == tokenizer.bos_token_id


def format_instruction(tokenizer, instruction: str, system: str | None = None) -> FormattedPrompt:
    if not instruction or not instruction.strip():
        raise ConfigError("cannot format an empty instruction")
    text = render_chat(tokenizer, instruction, system)
    char_start = text.rfind(instruction)
    if char_start < 0:
        raise ConfigError("the chat template altered the instruction text; cannot locate its tokens")
    char_end = char_start + len(instruction)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    if _needs_bos(tokenizer, text):
        ids, offsets = [tokenizer.bos_token_id, *ids], [(0, 0), *offsets]
    inside = [i for i, (a, b) in enumerate(offsets) if b > a and a < char_end and b > char_start]
    if not inside:
        raise ConfigError("instruction produced no tokens")
    return FormattedPrompt(instruction, tuple(ids), inside[0], inside[-1] + 1)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of similar length (less padding), longest first so memory peaks early."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(prompts: Sequence[FormattedPrompt], pad_token_id: int) -> PromptBatch:
    """Left-pad prompts into one batch (left padding keeps the answer start aligned at the end)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p.input_ids)
        mask[i, width - len(p) :] = 1
    return PromptBatch(list(prompts), ids, mask)
