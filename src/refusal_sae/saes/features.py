"""What SAE latents respond to: top-activating tokens with their context, and decoder norms.

The dataclasses are plain data (``to_dict``) so a later HTML report can render them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from refusal_sae.errors import ConfigError
from refusal_sae.models.formatting import FormattedPrompt
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import parse_hook_point
from refusal_sae.saes.activations import check_finite, indexed_batches, ordinary_mask
from refusal_sae.saes.config import PositionFilter
from refusal_sae.saes.metrics import reconstruct


@dataclass
class FeatureExample:
    activation: float
    sequence: int  # index into the corpus
    position: int  # token index within the sequence (no padding)
    tokens: list[str]  # the window of tokens around ``position``
    center: int  # index of the activating token within ``tokens``
    instruction: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FeatureSummary:
    hook_name: str
    layer: int
    feature: int
    decoder_norm: float
    max_activation: float
    frequency: float  # fraction of the corpus' ordinary tokens on which it fires
    examples: list[FeatureExample] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**asdict(self), "examples": [e.to_dict() for e in self.examples]}


def token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    return [tokenizer.decode([int(i)]) for i in ids]


def check_feature_ids(sae, feature_ids: Sequence[int], top_n: int = 1, window: int = 0) -> list[int]:
    """The distinct feature ids, checked against the SAE's width (and the example settings), before any work."""
    d_sae = int(sae.cfg.d_sae)
    ids = list(dict.fromkeys(int(i) for i in feature_ids))
    bad = [i for i in ids if not 0 <= i < d_sae]
    if not ids or bad:
        raise ConfigError(f"feature ids must lie in [0, {d_sae}) for this SAE of width {d_sae}; got {bad or 'none'}")
    if top_n < 1 or window < 0:
        raise ConfigError("top_n must be positive and window non-negative")
    return ids


@torch.no_grad()
def top_activations(handle: ModelHandle, sae, hook: str, feature_ids: Sequence[int], sequences: Sequence[FormattedPrompt],
                    top_n: int = 10, window: int = 8, batch_size: int = 8, filt: PositionFilter | None = None,
                    progress: bool = True) -> list[FeatureSummary]:
    """For each latent in ``feature_ids``: its ``top_n`` strongest activations over ``sequences`` (ordinary
    positions only), with ``window`` tokens of context either side."""
    point = parse_hook_point(hook, handle.n_layers)
    ids = check_feature_ids(sae, feature_ids, top_n, window)
    filt = filt or PositionFilter()
    n_f = len(ids)
    best_v = torch.full((n_f, top_n), -torch.inf)
    best_s = torch.zeros((n_f, top_n), dtype=torch.long)
    best_p = torch.zeros((n_f, top_n), dtype=torch.long)
    n_fire = torch.zeros(n_f)
    n_tok = 0
    for idx, batch in tqdm(list(indexed_batches(handle, sequences, batch_size)), desc="feature activations",
                           disable=not progress, unit="batch"):
        acts = handle.cache_activations(batch, [point.name])[point.name]
        keep = ordinary_mask(acts, batch.attention_mask, filt)
        rows, cols = keep.nonzero(as_tuple=True)
        feats = reconstruct(sae, acts[keep])[0][:, ids].float().cpu()  # [n, F]
        check_finite(feats, f"SAE latents at {point.name}")
        n_tok += len(feats)
        n_fire += (feats > 0).sum(0)
        seq = torch.tensor(idx, dtype=torch.long)[rows.cpu()]
        pos = (cols - batch.pad_offsets[rows]).cpu()
        v = torch.cat([best_v, feats.T], dim=1)
        top = v.topk(top_n, dim=1)
        best_v = top.values
        best_s = torch.cat([best_s, seq.expand(n_f, -1)], dim=1).gather(1, top.indices)
        best_p = torch.cat([best_p, pos.expand(n_f, -1)], dim=1).gather(1, top.indices)
    norms = sae.W_dec[ids].float().norm(dim=-1).tolist()
    out = []
    for j, f in enumerate(ids):
        examples = []
        for v, s, p in zip(best_v[j].tolist(), best_s[j].tolist(), best_p[j].tolist(), strict=True):
            if v > 0:
                toks = sequences[s].input_ids
                lo, hi = max(0, p - window), min(len(toks), p + window + 1)
                examples.append(FeatureExample(v, s, p, token_strings(handle.tokenizer, toks[lo:hi]), p - lo,
                                               sequences[s].instruction))
        out.append(FeatureSummary(point.name, point.layer, f, norms[j], max(best_v[j, 0].item(), 0.0),
                                  float(n_fire[j]) / max(n_tok, 1), examples))
    return out
