"""Text the SAEs see: chat-formatted non-test prompts followed by the model's own greedy responses.

Responses are generated once per (model, settings) and cached as JSON in a work directory; generation is
chunked and the cache rewritten after each chunk, so an interrupted run keeps what it generated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from refusal_sae.errors import ConfigError, DataError
from refusal_sae.models.formatting import FormattedPrompt
from refusal_sae.models.handle import ModelHandle
from refusal_sae.runs import config_hash, slug, write_json_atomic
from refusal_sae.saes.config import CorpusConfig


def load_instructions(datasets: Sequence[str], n: int | None, seed: int = 0, data_dir=None) -> list[str]:
    """Seeded samples of ``n`` prompts from each dataset; test splits are refused."""
    from refusal_sae.data import load_dataset

    out: list[str] = []
    for name in datasets:
        pset = load_dataset(name, data_dir, n, seed)
        if pset.is_test:
            raise ConfigError(f"dataset {name!r} is a held-out test split; SAEs are trained and measured on "
                              "train / validation splits only")
        out += pset.instructions
    if not out:
        raise DataError(f"no prompts in {', '.join(datasets)}")
    return out


def weights_fingerprint(handle: ModelHandle) -> str:
    """A cheap fingerprint of the weights, so two models sharing a name never share cached responses."""
    params = list(handle.model.parameters())
    sample = [float(p.detach().flatten()[:4096].double().sum()) for p in (params[0], params[len(params) // 2], params[-1])]
    return config_hash({"n": sum(p.numel() for p in params), "sample": sample})


def model_responses(handle: ModelHandle, instructions: Sequence[str], cache_dir: Path | None, max_new_tokens: int = 64,
                    batch_size: int = 16, chunk: int = 64, progress: bool = True) -> list[str]:
    """The model's greedy response to each instruction, from / into the JSON cache in ``cache_dir``."""
    from refusal_sae.scoring.generation import generate

    key = {"model": handle.name, "system": handle.system_prompt, "max_new_tokens": max_new_tokens,
           "weights": weights_fingerprint(handle)}
    path = Path(cache_dir) / f"responses-{slug(handle.name, 60)}-{config_hash(key)}.json" if cache_dir else None
    cache: dict[str, str] = {}
    if path is not None and path.is_file():
        try:
            cache = json.loads(path.read_text())["responses"]
        except (json.JSONDecodeError, KeyError):
            cache = {}
    missing = [i for i in dict.fromkeys(instructions) if i not in cache]
    for start in range(0, len(missing), chunk):
        part = missing[start : start + chunk]
        cache.update(zip(part, generate(handle, part, max_new_tokens, batch_size, progress=progress,
                                        desc=f"responses {start + len(part)}/{len(missing)}"), strict=True))
        if path is not None:
            write_json_atomic(path, {"key": key, "responses": cache})
    return [cache[i] for i in instructions]


def chat_sequence(handle: ModelHandle, instruction: str, response: str | None, max_len: int) -> FormattedPrompt:
    """Chat-formatted prompt, then the response and the end-of-turn token (when a response is given)."""
    p = handle.format(instruction)
    ids = list(p.input_ids)
    if response is not None:
        tok = handle.tokenizer
        ids += tok(response, add_special_tokens=False)["input_ids"] if response else []
        if tok.eos_token_id is not None:
            ids.append(tok.eos_token_id)
    ids = ids[:max_len]
    return FormattedPrompt(instruction, tuple(ids), min(p.inst_start, len(ids) - 1), min(p.inst_end, len(ids)))


def build_sequences(handle: ModelHandle, cfg: CorpusConfig, data_dir=None, cache_dir: Path | None = None,
                    instructions: Sequence[str] | None = None, progress: bool = True) -> list[FormattedPrompt]:
    """The corpus of ``cfg`` (or of the given ``instructions``) as token sequences."""
    insts = list(instructions) if instructions is not None else load_instructions(cfg.datasets, cfg.n_prompts, cfg.seed, data_dir)
    if not insts:
        raise DataError("the SAE corpus is empty")
    responses: list[str | None] = [None] * len(insts)
    if cfg.with_responses:
        responses = list(model_responses(handle, insts, cache_dir, cfg.max_new_tokens, cfg.gen_batch_size, progress=progress))
    return [chat_sequence(handle, i, r, cfg.max_len) for i, r in zip(insts, responses, strict=True)]


def n_tokens(sequences: Sequence[FormattedPrompt]) -> int:
    return int(sum(len(s) for s in sequences))

