"""Does another way of removing the refusal direction move harmless outputs less? (docs/refusal-direction.md)

The selected direction's KL on harmless prompts sits near the paper's bound of 0.1 on the embedded 135M model. This
script measures, side by side on the same validation prompts, the bypass score and the harmless KL of the chosen
(position, layer) candidate under variants of the ablation and of the direction itself:

- ``arditi``: the stage's ablation (every layer, every position, massive directions projected out, k = 4);
- ``massive-k=K``: K principal massive-activation directions projected out of the candidate instead of 4;
- ``perp-harmless-mean``: the candidate with its component along the harmless mean activation removed;
- ``from-layer-F``: ablation only in layers ≥ F;
- ``post-inst-only``: ablation only at the post-instruction positions;
- ``mean-ablation``: the projection set to its mean over harmless-training tokens at each layer instead of 0.

Only validation and training splits are read. Usage (≈1 min on 2 cores):

    .venv/bin/python scripts/direction_kl_variants.py [--model M] [--pos -1] [--layer 20] [--n-train 260] [--n-val 32]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import torch

from refusal_sae.data import load_dataset
from refusal_sae.direction.diff_in_means import massive_mask, mean_activations
from refusal_sae.interventions.directional import DirectionAblation
from refusal_sae.interventions.engine import InterventionEngine
from refusal_sae.models.hooks import hook_name
from refusal_sae.models.loading import load_model
from refusal_sae.ops import kl_divergence, project_out, top_eigenvectors, unit
from refusal_sae.scoring.refusal_score import discover_refusal_tokens, refusal_score_from_logits


@dataclass(frozen=True)
class PartialAblation:
    """Projects ``direction`` out (or onto ``targets[L]``, its mean harmless value at ``resid_pre`` of layer L)
    at every layer; with ``last_k``, only at the last ``last_k`` positions. A variant of
    :class:`DirectionAblation` for this diagnostic only; the stage and the export use the plain one."""

    direction: torch.Tensor
    last_k: int | None = None
    targets: tuple[float, ...] = ()
    last_positions = None  # may touch every position (the engine's contract)

    def hooks(self, handle):
        d = unit(self.direction.float())

        def make(layer: int, kind: str):
            def fn(act: torch.Tensor) -> torch.Tensor:
                dd = d.to(act.dtype)
                delta = act @ dd
                if self.targets and kind == "resid_pre":
                    delta = delta - self.targets[layer]
                if self.last_k is not None:
                    keep = torch.zeros_like(delta)
                    keep[:, -self.last_k:] = 1
                    delta = delta * keep
                return act - delta.unsqueeze(-1) * dd
            return fn

        return [(hook_name(L, k), make(L, k)) for L in range(handle.n_layers)
                for k in ("resid_pre", "attn_out", "mlp_out")]


def mean_projection(handle, prompts, direction, ratio=5.0, batch_size=32) -> tuple[float, ...]:
    """Mean of ``resid_pre · unit(direction)`` per layer over the real, non-massive tokens of ``prompts``."""
    d = unit(direction.double())
    names = [hook_name(L, "resid_pre") for L in range(handle.n_layers)]
    total, count = torch.zeros(handle.n_layers, dtype=torch.float64), torch.zeros(handle.n_layers, dtype=torch.float64)
    for i in range(0, len(prompts), batch_size):
        batch = handle.batch([handle.format(x) for x in prompts[i : i + batch_size]])
        cache = handle.cache_activations(batch, names)
        acts = torch.stack([cache[n] for n in names], 2).double().cpu()  # [B, T, L, d]
        attention = batch.attention_mask.cpu()
        ok = attention.bool()[:, :, None] & ~massive_mask(acts, attention, ratio)  # [B, T, L]
        total += ((acts @ d) * ok).sum((0, 1))
        count += ok.sum((0, 1))
    return tuple((total / count).tolist())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--pos", type=int, default=-1)
    ap.add_argument("--layer", type=int, default=20)
    ap.add_argument("--n-train", type=int, default=260)
    ap.add_argument("--n-val", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    h = load_model(args.model)
    harmful = load_dataset("harmful_train").sample(args.n_train, args.seed).instructions
    harmless = load_dataset("harmless_train").sample(args.n_train, args.seed).instructions
    a = mean_activations(h, harmful, desc="harmful activations")
    b = mean_activations(h, harmless, desc="harmless activations")
    raw = (a.post_inst - b.post_inst)[args.pos, args.layer]
    gram = a.massive_gram + b.massive_gram
    r = project_out(raw, top_eigenvectors(gram, 4)).float()  # the stage's default candidate
    mu = b.post_inst[args.pos, args.layer].float()
    mu = mu / mu.norm()
    n_post = h.format(harmless[0]).n_post_inst
    variants = {"arditi": DirectionAblation(r)}
    for k in (8, 16):
        variants[f"massive-k={k}"] = DirectionAblation(project_out(raw, top_eigenvectors(gram, k)).float())
    variants["perp-harmless-mean"] = DirectionAblation(r - (r @ mu) * mu)
    for start in (8, 16):
        variants[f"from-layer-{start}"] = DirectionAblation(r, layers=tuple(range(start, h.n_layers)))
    variants["post-inst-only"] = PartialAblation(r, last_k=n_post)
    variants["mean-ablation"] = PartialAblation(r, targets=mean_projection(h, harmless[:64], r))

    tokens = discover_refusal_tokens(h, load_dataset("harmful_train").sample(32, args.seed + 1).instructions)
    fv = load_dataset("harmful_val").sample(args.n_val, args.seed).instructions
    hv = load_dataset("harmless_val").sample(args.n_val, args.seed).instructions
    engine = InterventionEngine(h)
    clean = engine.last_logits([*fv, *hv], [[]])[0].double()
    print(f"clean: refusal score harmful {refusal_score_from_logits(clean[: len(fv)], tokens).mean():.2f}")
    rows = []
    for name, iv in variants.items():
        logits = engine.last_logits([*fv, *hv], [[iv]])[0].double()
        kl = kl_divergence(clean[len(fv) :], logits[len(fv) :])
        row = {"variant": name, "bypass": refusal_score_from_logits(logits[: len(fv)], tokens).mean().item(),
               "kl_mean": kl.mean().item(), "kl_median": kl.median().item(), "kl_max": kl.max().item()}
        rows.append(row)
        print(f"{name:20s} bypass {row['bypass']:6.2f}  KL mean {row['kl_mean']:.3f}  median {row['kl_median']:.3f}  "
              f"max {row['kl_max']:.3f}", flush=True)
    print(json.dumps({"model": h.name, "pos": args.pos, "layer": args.layer, "n_train": args.n_train,
                      "n_val": args.n_val, "seed": args.seed, "rows": rows}))


if __name__ == "__main__":
    main()
