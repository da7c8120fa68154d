"""Benchmark the feature search on the embedded model: wall time of candidates (decoder cosine + LA-IG + the
activation pass of the baselines) and of greedy filtering, and the same greedy workload run the naive way (one
hooked forward of the prompts per candidate evaluation) in the same run, printing the ratio.

    .venv/bin/python benchmarks/bench_search.py [--n-prompts 32] [--k 30] [--json]

The greedy workload replays the chains' proposals: the engine scores each round's proposals (one per chain) in
one stacked pass; the naive loop scores every proposal with its own hooked forward passes. Both give the same
refusal scores (checked, within 1e-3), so the decisions, and the kept sets, are the same.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    from refusal_sae.data import load_dataset
    from refusal_sae.direction.diff_in_means import compute_candidates
    from refusal_sae.interventions import EngineConfig, InterventionEngine, set_hooks
    from refusal_sae.models import load_model
    from refusal_sae.saes.loading import EMBEDDED_SAE_DIR, SaeSet
    from refusal_sae.scoring.refusal_score import opening_tokens, refusal_scores
    from refusal_sae.search.activations import prompt_codes
    from refusal_sae.search.attribution import la_ig
    from refusal_sae.search.candidates import decoder_cosines, prefilter_mask, ranked
    from refusal_sae.search.greedy import greedy_filter

    ap = argparse.ArgumentParser()
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--k", type=int, default=30, help="size of the set the greedy filter starts from")
    ap.add_argument("--ig-steps", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    h = load_model(device="cpu", dtype="float32")
    saes = SaeSet.from_folder(EMBEDDED_SAE_DIR)
    layers = list(saes.layers())
    harmful = load_dataset("harmful_train").sample(args.n_prompts, 0).instructions
    harmless = load_dataset("harmless_train").sample(args.n_prompts, 0).instructions
    # a direction computed here (the run directory's is not needed for timing)
    d = compute_candidates(h, harmful, harmless, batch_size=32).get(-1, 20).float()
    tokens = opening_tokens(h.tokenizer)

    t0 = time.perf_counter()
    cos = decoder_cosines(saes, layers, dict.fromkeys(layers, d))
    mask = prefilter_mask(cos, 10)
    attr = la_ig(h, saes, layers, d, harmful, tokens, args.ig_steps, 16, progress=False).mean(0)
    prompt_codes(h, saes, layers, harmful, 32)
    prompt_codes(h, saes, layers, harmless, 32)
    start = ranked(attr, layers, args.k, mask)
    t_candidates = time.perf_counter() - t0

    engine = InterventionEngine(h, EngineConfig(prompt_batch_size=32))
    proposals: list = []
    score = engine.score

    def recording(prompts, sets, toks):
        out = score(prompts, sets, toks)
        proposals.append((sets, out))
        return out

    engine.score = recording
    chains = [(0, 0.1), (1, 0.1), (2, 0.1), (0, 0.05), (0, 0.2), (0, 0.4)]
    t0 = time.perf_counter()
    traces = greedy_filter(engine, saes, harmful, tokens, start, 0.0, chains, 5, progress=False)
    t_engine = time.perf_counter() - t0
    n_evals = sum(len(sets) for sets, _ in proposals)

    t0 = time.perf_counter()
    worst = 0.0
    for sets, want in proposals:
        for s, row in zip(sets, want, strict=True):
            with h.hooks(set_hooks(h, s)):
                got = refusal_scores(h, harmful, tokens, 32)
            worst = max(worst, float((got - row).abs().max()))
    t_naive = time.perf_counter() - t0
    res = {"n_prompts": args.n_prompts, "layers": layers, "start_size": args.k, "chains": len(chains),
           "rounds": len(proposals), "evaluations": n_evals, "candidates_s": round(t_candidates, 1),
           "greedy_engine_s": round(t_engine, 1), "greedy_naive_s": round(t_naive, 1),
           "naive_over_engine": round(t_naive / t_engine, 2), "max_score_diff": worst,
           "kept_sizes": [len(t.kept) for t in traces], "clamp": 0.0}
    print(f"candidates (cosine + LA-IG over {len(layers)} layers + activations): {t_candidates:.1f} s")
    print(f"greedy ({len(chains)} chains, {len(proposals)} rounds, {n_evals} evaluations): engine {t_engine:.1f} s, "
          f"naive {t_naive:.1f} s, ratio {t_naive / t_engine:.2f}x (scores agree within {worst:.1e})")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
