"""SAE quality on held-out text: FVU, L0, dead latents and next-token loss recovered.

Everything is measured over *ordinary* token positions; the massive-norm positions (first token, norm outliers;
see :mod:`refusal_sae.saes.activations`) are counted and their reconstruction error reported separately. For the
loss, the SAE reconstruction replaces ``blocks.L.hook_resid_post`` at the ordinary positions (massive positions
keep their true activation) and the zero-ablation baseline zeroes the same positions:
``recovered = (zero - spliced) / (zero - base)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from refusal_sae.models.formatting import FormattedPrompt, PromptBatch
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import parse_hook_point
from refusal_sae.saes.activations import check_finite, massive_masks, prompt_batches
from refusal_sae.saes.config import PositionFilter


@dataclass
class SaeMetrics:
    hook_name: str
    layer: int
    d_sae: int
    n_sequences: int
    n_tokens: int  # ordinary positions measured
    fvu: float | None  # None when the eval tokens have no variance
    mean_l0: float
    dead_fraction: float  # latents that never fired on the ordinary eval tokens
    ce_base: float
    ce_spliced: float
    ce_zero: float
    loss_recovered: float | None
    n_massive: int
    massive_fvu: float | None  # FVU over the massive positions alone (their own mean)
    massive_rel_error: float | None  # sum |x - x_hat|^2 / sum |x|^2 over the massive positions
    ce_tokens: int = 0  # next-token targets behind the CE / loss-recovered numbers

    def to_dict(self) -> dict:
        return asdict(self)


def reconstruct(sae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(latents, reconstruction)`` of ``x [n, d]`` (cast to the SAE's dtype and back)."""
    dtype = getattr(sae, "dtype", x.dtype)
    feats = sae.encode(x.to(dtype))
    return feats, sae.decode(feats).to(x.dtype)


class _Fvu:
    def __init__(self) -> None:
        self.sse = self.sum_sq = 0.0
        self.sum: torch.Tensor | None = None
        self.n = 0

    def add(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        if not len(x):
            return
        x, x_hat = x.double(), x_hat.double()
        self.sse += float((x - x_hat).pow(2).sum())
        self.sum_sq += float(x.pow(2).sum())
        s = x.sum(0)
        self.sum = s if self.sum is None else self.sum + s
        self.n += len(x)

    def fvu(self) -> float | None:
        if self.n < 2 or self.sum is None:
            return None
        var = self.sum_sq - float(self.sum.pow(2).sum()) / self.n
        return self.sse / var if var > 0 else None

    def rel_error(self) -> float | None:
        return self.sse / self.sum_sq if self.sum_sq > 0 else None


def token_ce(logits: torch.Tensor, batch: PromptBatch) -> tuple[float, int]:
    """Summed next-token cross-entropy over real (non-padding) targets, and their count."""
    mask = (batch.attention_mask[:, 1:] * batch.attention_mask[:, :-1]).bool()
    lp = torch.nn.functional.cross_entropy(logits[:, :-1][mask].float(), batch.input_ids[:, 1:][mask], reduction="sum")
    return float(lp), int(mask.sum())


@torch.no_grad()
def evaluate_saes(handle: ModelHandle, saes: Mapping[str, object], sequences: Sequence[FormattedPrompt],
                  batch_size: int = 8, filt: PositionFilter | None = None, progress: bool = True,
                  ce_batches: int | None = None) -> list[SaeMetrics]:
    """Metrics of each ``hook name → SAE`` on ``sequences`` (held-out prompts with the model's responses).

    FVU, L0 and dead latents need one forward pass per batch; the loss-recovered numbers need two more per SAE
    (spliced and zero-ablated), so ``ce_batches`` limits those to N batches spread evenly over the length-sorted
    batches, while FVU / L0 / dead latents still use every sequence. ``None`` = every batch.
    """
    filt = filt or PositionFilter()
    names = [parse_hook_point(n, handle.n_layers).name for n in saes]
    fvu = {n: _Fvu() for n in names}
    massive = {n: _Fvu() for n in names}
    l0 = dict.fromkeys(names, 0.0)
    fired: dict[str, torch.Tensor | None] = dict.fromkeys(names)
    ce = {n: {"base": 0.0, "spliced": 0.0, "zero": 0.0} for n in names}
    n_ce = 0
    batches = list(prompt_batches(handle, sequences, batch_size))
    stride = 1 if ce_batches is None else max(1, -(-len(batches) // max(ce_batches, 1)))
    for i, batch in enumerate(tqdm(batches, desc="SAE metrics", disable=not progress, unit="batch")):
        with_ce = i % stride == 0
        acts: dict[str, torch.Tensor] = {}
        with handle.hooks([(n, _reader(acts, n)) for n in names]):
            base, count = token_ce(handle.forward(batch), batch)
        if with_ce:
            n_ce += count
        for n in names:
            a = acts[n]
            check_finite(a, n)
            first, outlier = massive_masks(a, batch.attention_mask, filt)
            big = first | outlier
            ordinary = batch.attention_mask.bool() & ~big
            feats, recon = reconstruct(saes[n], a[ordinary])
            check_finite(recon, f"the SAE reconstruction at {n}")
            fvu[n].add(a[ordinary], recon)
            on = feats != 0
            l0[n] += float(on.sum())
            fired[n] = on.any(0) if fired[n] is None else fired[n] | on.any(0)
            if big.any():
                massive[n].add(a[big], reconstruct(saes[n], a[big])[1])
            if not with_ce:
                continue
            ce[n]["base"] += base
            for kind, repl in (("spliced", recon), ("zero", torch.zeros_like(recon))):
                ce[n][kind] += token_ce(_spliced_forward(handle, batch, n, ordinary, repl), batch)[0]
    return [_result(n, saes[n], len(sequences), fvu[n], massive[n], l0[n], fired[n], ce[n], n_ce) for n in names]


def _reader(store: dict, name: str):
    def fn(act: torch.Tensor) -> None:
        store[name] = act.detach().clone()

    return fn


def _spliced_forward(handle: ModelHandle, batch: PromptBatch, name: str, where: torch.Tensor, values: torch.Tensor):
    def fn(a: torch.Tensor) -> torch.Tensor:
        new = a.clone()
        new[where] = values.to(a.dtype)
        return new

    with handle.hooks([(name, fn)]):
        return handle.forward(batch)


def _result(name, sae, n_seq, fvu: _Fvu, massive: _Fvu, l0: float, fired, ce: dict, n_ce: int) -> SaeMetrics:
    d_sae = int(fired.numel()) if fired is not None else int(sae.cfg.d_sae)
    base, spliced, zero = (ce[k] / max(n_ce, 1) for k in ("base", "spliced", "zero"))
    recovered = (zero - spliced) / (zero - base) if abs(zero - base) > 1e-12 else None
    return SaeMetrics(name, int(name.split(".")[1]), d_sae, n_seq, fvu.n, fvu.fvu(),
                      l0 / max(fvu.n, 1), 1.0 - (float(fired.float().mean()) if fired is not None else 0.0),
                      base, spliced, zero, recovered, massive.n, massive.fvu(), massive.rel_error(), n_ce)
