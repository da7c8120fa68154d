"""Intervention-engine benchmark: the same greedy-filtering-like workload three ways, side by side.

Workload: ``--sets`` candidate sets, each zero-ablating ``--features`` SAE features (error term kept) at one
middle layer, scored on ``--prompts`` prompts (refusal score at the last position).
  (a) bare: plain forward passes over the prompts (no intervention), full logits, as a user would run them;
  (b) engine: InterventionEngine.score over all sets at once;
  (c) naive: one hooked forward per set over all prompts, no prefix reuse.
"Work it must do": the layers up to the hooked one (resid_post) once for every token + the later layers for each
set on the positions that can change (post-instruction tokens with --positions post, every token with
--positions all), in layer·token units.
Prints tokens/s and the ratios engine/bare (on that work) and naive/engine (wall time).

    python benchmarks/bench_engine.py                          # 64 sets x 64 prompts on the embedded model
    python benchmarks/bench_engine.py --sets 16 --prompts 32   # quicker on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--sets", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--layer", type=int, default=None, help="default: the middle layer")
    ap.add_argument("--positions", choices=["post", "all"], default="post")
    ap.add_argument("--width", type=int, default=4608)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from refusal_sae.data import load_dataset
    from refusal_sae.interventions import EngineConfig, FeatureClamp, InterventionEngine
    from refusal_sae.models import hook_name, load_model
    from refusal_sae.saes.random import random_topk_sae
    from refusal_sae.scoring.refusal_score import opening_tokens, refusal_score_from_logits

    torch.set_grad_enabled(False)
    h = load_model(args.model, device=args.device)
    layer = args.layer if args.layer is not None else h.n_layers // 2
    half = args.prompts // 2  # validation splits only: harmful and harmless halves
    prompts = (load_dataset("harmful_val").instructions[:half]
               + load_dataset("harmless_val", n=args.prompts - half, seed=1).instructions)
    formatted = [h.format(p) for p in prompts]
    n_post = formatted[0].n_post_inst
    k = n_post if args.positions == "post" else None
    # random weights: speed does not depend on what the features mean
    point = hook_name(layer, "resid_post")
    sae = random_topk_sae(h.d_model, args.width, 32, point, std=0.05).to(h.device)
    batch = h.batch(formatted)
    # candidate features = those most often active at the post-instruction positions (as greedy filtering's are)
    acts = h.cache_activations(batch, [point])[point]
    freq = (sae.encode(acts[:, -n_post:].to(sae.W_dec.dtype)) > 0).float().sum((0, 1))
    pool = freq.argsort(descending=True)[:64]
    g = torch.Generator().manual_seed(0)
    sets = [[FeatureClamp(sae, tuple(pool[torch.randperm(len(pool), generator=g)[: args.features]].tolist()), "zero",
                          last_positions=k)] for _ in range(args.sets)]
    toks = opening_tokens(h.tokenizer)
    n_tok = int(batch.attention_mask.sum())
    T = batch.input_ids.shape[1]

    def timed(fn):
        if h.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if h.device.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - t

    h.forward(h.batch(formatted[:2]))  # warm-up
    _, t_bare = timed(lambda: refusal_score_from_logits(h.forward(batch)[:, -1], toks))
    engine = InterventionEngine(h, EngineConfig(prompt_batch_size=args.prompts))
    eng_scores, t_eng = timed(lambda: engine.score(formatted, sets, toks))

    def naive():
        rows = []
        for s in sets:
            with h.hooks([hk for iv in s for hk in iv.hooks(h)]):
                rows.append(refusal_score_from_logits(h.forward(batch)[:, -1], toks))
        return torch.stack(rows)

    naive_scores, t_naive = timed(naive)
    max_diff = float((eng_scores - naive_scores.cpu()).abs().max())
    spread = float((naive_scores - naive_scores.mean(0)).abs().max())  # the sets do change the scores

    L = h.n_layers
    changed = args.prompts * (k if k is not None else T)
    # layer·tokens the engine must compute: layers 0..layer once for every token (the features are edited at that
    # layer's resid_post, so it is the same for every set), then layers layer+1.. for each set's changeable positions
    work = n_tok * (layer + 1) + args.sets * changed * (L - layer - 1)
    bare_rate = n_tok * L / t_bare
    eng_rate = work / t_eng
    res = {
        "model": h.name, "device": str(h.device), "sets": args.sets, "prompts": args.prompts, "layer": layer,
        "positions": args.positions, "tokens_per_pass": n_tok, "bare_s": t_bare, "engine_s": t_eng, "naive_s": t_naive,
        "bare_tokens_per_s": n_tok / t_bare, "engine_set_tokens_per_s": args.sets * n_tok / t_eng,
        "naive_set_tokens_per_s": args.sets * n_tok / t_naive,
        "engine_vs_bare_on_required_work": eng_rate / bare_rate, "naive_over_engine_time": t_naive / t_eng,
        "max_score_diff_engine_vs_naive": max_diff, "max_score_spread_across_sets": spread,
    }
    print(f"{h.name} on {h.device}: {args.sets} sets x {args.prompts} prompts, {args.features} features zeroed at "
          f"layer {layer}, positions={args.positions}")
    print(f"  bare forward    {res['bare_tokens_per_s']:9.0f} tokens/s  ({t_bare:.2f} s for one pass)")
    print(f"  engine          {res['engine_set_tokens_per_s']:9.0f} set-tokens/s ({t_eng:.2f} s)")
    print(f"  naive loop      {res['naive_set_tokens_per_s']:9.0f} set-tokens/s ({t_naive:.2f} s)")
    print(f"  engine / bare throughput on the work it must do: {res['engine_vs_bare_on_required_work']:.2f}x")
    print(f"  engine speed-up over the naive loop:             {res['naive_over_engine_time']:.1f}x")
    print(f"  max |score difference| engine vs naive:          {max_diff:.2e} (spread across sets {spread:.2f})")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
