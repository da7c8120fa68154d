"""Stage 2 (and 3–4): the SAE features that carry refusal — candidates (decoder cosine + LA-IG attribution, the
CosSim / ActDiff / AP baselines), the clamp and set size chosen on validation prompts against random controls,
greedy filtering to a minimal set, the held-out comparison table; interactions and dormant features build on them."""
