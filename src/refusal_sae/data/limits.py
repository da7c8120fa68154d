"""The longest prompt a model can take, checked on every row of a dataset before any forward pass.

One 200,000-character prompt made a run sit in its first forward pass (attention over 50,000 positions, on a model
with 8,192 of context) with no sign of why. The limit is the model's context length (``max_position_embeddings``),
or a cap the config sets; unknown (a ``.gguf`` before it loads, a model not in the cache) it is
:data:`DEFAULT_CONTEXT`.

Cheap and exact: a tokenizer never makes more tokens of a text than its UTF-8 bytes plus one (byte-level BPE: at
most one token per byte; SentencePiece with byte fallback: one more for the leading space it adds), so only the rare
prompt with more bytes than the limit is tokenized. With no tokenizer at hand (``run`` checks once before it loads
the model), such a prompt is refused past :data:`CHARS_PER_TOKEN` characters per token of the limit, more than
natural text packs into it (``max_prompt_tokens`` in the config raises the cap); shorter ones are measured exactly
once the model and its tokenizer have loaded, still before any forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refusal_sae.errors import DataError

DEFAULT_CONTEXT = 32_768  # tokens, when the model's context length is unknown
CHARS_PER_TOKEN = 4  # the no-tokenizer bound: English BPE averages about 4 characters per token, rarely more


@dataclass(frozen=True)
class PromptLimit:
    tokens: int
    tokenizer: Any = None  # a HF tokenizer: counts the tokens of prompts with more bytes than ``tokens``
    what: str = "the model's context"

    @classmethod
    def for_model(cls, context: int | None, tokenizer=None, cap: int | None = None) -> PromptLimit:
        """The configured ``cap``, else the model's ``context``, else :data:`DEFAULT_CONTEXT`."""
        if cap is not None:
            return cls(cap, tokenizer, "max_prompt_tokens")
        if context is not None:
            return cls(context, tokenizer)
        return cls(DEFAULT_CONTEXT, tokenizer, "the default cap")

    def problem(self, text: str) -> str | None:
        """Why ``text`` does not fit, or ``None`` when it does."""
        if len(text.encode("utf-8")) < self.tokens:  # bytes + 1 <= limit: cannot be longer in tokens
            return None
        limit = f"{self.what} of {self.tokens:,} tokens"
        if self.tokenizer is not None:
            n = len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
            return None if n <= self.tokens else (f"{len(text):,} characters, {n:,} tokens: longer than {limit}; shorten "
                                                  "or remove it")
        if len(text) <= CHARS_PER_TOKEN * self.tokens:
            return None
        unknown = " (the model's context is not known before it loads)" if self.what == "the default cap" else ""
        return (f"{len(text):,} characters: more than {CHARS_PER_TOKEN} per token of {limit}{unknown}; shorten or "
                "remove it, or set max_prompt_tokens")


def check_length(limit: PromptLimit | None, text: str, source: str, where: str) -> None:
    """A DataError naming the dataset, the row and the length when ``text`` does not fit ``limit``."""
    problem = None if limit is None else limit.problem(text)
    if problem:
        raise DataError(f"dataset {source}, {where}: the prompt is {problem}")
