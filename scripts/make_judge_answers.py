"""Generate the (instruction, answer) pairs of the hand-labelled judge set.

Answers of the embedded refusing model (SmolLM2-135M-Instruct + committed safety LoRA) and of its untuned base,
greedy, 64 new tokens, under the conditions below, on training / validation instructions only (never a test split;
instructions that equal or nearly equal a test-set prompt are left out too). Writes
``src/refusal_sae/artifacts/judge_labels/answers.jsonl`` (one row per answer) and ``manifest.json`` (settings,
counts, the direction's and SAE features' identity, timings). Instructions are stored as references (dataset, row
index, sha256 prefix), never as text; jailbreak prompts as (family, seed), rebuilt with
:func:`refusal_sae.data.jailbreaks.wrap`.

    .venv/bin/python scripts/make_judge_answers.py \\
        --direction runs/smollm2-135m-refusing/direction

Conditions (name: model, intervention, prompts, count):

- ``none/harmful``: tuned, none, harmful, 60
- ``none/harmless``: tuned, none, harmless (harmless_val + harmless_train), 50
- ``base/harmful``: untuned base, none, harmful, 50
- ``ablate/harmful``: tuned, refusal direction ablated at every layer, harmful, 80
- ``actadd/harmless``: tuned, direction added at its layer (coeff 1), harmless, 40
- ``clamp0/harmful``, ``clamp-1/harmful``, ``clamp-3/harmful``: tuned, the top-5 SAE features by decoder cosine
  with the direction at layers 14/17/20/23/26 zeroed / scaled by -1 / by -3 (error term kept), harmful, 40 each
- ``jailbreak/harmful``: tuned, none, harmful wrapped by every jailbreak family, 80

Harmful instructions are sampled per condition, stratified over four sources (HarmBench val = harmful_val ∪
harmbench_val, MaliciousInstruct, TDC2023, AdvBench; harmful_train is the union of samples of the last three), with
a seeded shuffle per (condition, source). ``split`` is dev or test by a hash of the plain instruction (about
60/40), so one instruction is never in both.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "src" / "refusal_sae" / "artifacts" / "judge_labels"

HARMFUL_SOURCES = ("harmful_val", "harmbench_val", "malicious_instruct", "tdc2023", "advbench", "harmful_train")
STRATA = {"harmful_val": "harmbench", "harmbench_val": "harmbench", "malicious_instruct": "malicious_instruct",
          "tdc2023": "tdc2023", "advbench": "advbench", "harmful_train": "advbench"}
HARMLESS_SOURCES = ("harmless_val", "harmless_train")
TEST_SETS = ("jailbreakbench", "harmbench_test", "harmless_test", "xstest")
NEAR_DUPLICATE_JACCARD = 0.5
DEV_FRACTION = 0.6
CLAMP_LAYERS = (14, 17, 20, 23, 26)
CLAMP_TOP_K = 5

# condition → (model, prompt kind, count)
CONDITIONS: dict[str, tuple[str, str, int]] = {
    "none/harmful": ("tuned", "harmful", 60),
    "none/harmless": ("tuned", "harmless", 50),
    "base/harmful": ("base", "harmful", 50),
    "ablate/harmful": ("tuned", "harmful", 80),
    "actadd/harmless": ("tuned", "harmless", 40),
    "clamp0/harmful": ("tuned", "harmful", 40),
    "clamp-1/harmful": ("tuned", "harmful", 40),
    "clamp-3/harmful": ("tuned", "harmful", 40),
    "jailbreak/harmful": ("tuned", "jailbreak", 80),
}


def sha12(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def split_of(plain_instruction: str) -> str:
    """dev / test by a hash of the normalised plain instruction (stable, ~60/40)."""
    h = int(hashlib.sha256(("judge-split:" + norm(plain_instruction)).encode()).hexdigest()[:8], 16)
    return "dev" if h / 2**32 < DEV_FRACTION else "test"


def slug(condition: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", condition.replace("/", "_")).strip("-")


@dataclass(frozen=True)
class Ref:
    dataset: str
    index: int
    instruction: str
    stratum: str

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "index": self.index, "sha": sha12(self.instruction)}


def build_pools(data_dir) -> tuple[dict[str, list[Ref]], list[Ref], dict]:
    """Harmful refs by stratum and harmless refs, deduplicated and decontaminated against every test set."""
    from refusal_sae.data import load_dataset
    from refusal_sae.finetune.tune import near_duplicate_filter

    test_texts = [r.instruction for name in TEST_SETS for r in load_dataset(name, data_dir)]
    banned = {norm(t) for t in test_texts}
    is_near = near_duplicate_filter(test_texts, NEAR_DUPLICATE_JACCARD)
    stats = {"excluded_exact_test": 0, "excluded_near_test": 0, "duplicates": 0}
    seen: set[str] = set()
    harmful: dict[str, list[Ref]] = {}
    for name in HARMFUL_SOURCES:
        pset = load_dataset(name, data_dir)
        assert not pset.is_test, name
        for i, rec in enumerate(pset.records):
            key = norm(rec.instruction)
            if key in seen:
                stats["duplicates"] += 1
                continue
            seen.add(key)
            if key in banned:
                stats["excluded_exact_test"] += 1
                continue
            if is_near(rec.instruction):
                stats["excluded_near_test"] += 1
                continue
            harmful.setdefault(STRATA[name], []).append(Ref(name, i, rec.instruction, STRATA[name]))
    harmless: list[Ref] = []
    for name in HARMLESS_SOURCES:
        pset = load_dataset(name, data_dir)
        assert not pset.is_test, name
        for i, rec in enumerate(pset.records):
            key = norm(rec.instruction)
            if key in seen or key in banned:
                continue
            seen.add(key)
            harmless.append(Ref(name, i, rec.instruction, name))
    stats["harmful_pool"] = {k: len(v) for k, v in harmful.items()}
    stats["harmless_pool"] = len(harmless)
    return harmful, harmless, stats


def sample_harmful(pools: dict[str, list[Ref]], n: int, seed: int, condition: str) -> list[Ref]:
    """``n`` refs, round-robin over the strata (each shuffled with a seed of its own per condition)."""
    strata = sorted(pools)
    queues = {}
    for s in strata:
        q = list(pools[s])
        random.Random(f"{seed}:{condition}:{s}").shuffle(q)
        queues[s] = q
    out: list[Ref] = []
    order = list(strata)
    random.Random(f"{seed}:{condition}:order").shuffle(order)
    while len(out) < n:
        for s in order:
            if len(out) < n and queues[s]:
                out.append(queues[s].pop())
    return out


def sample_harmless(pool: list[Ref], n: int, seed: int, condition: str) -> list[Ref]:
    """Half from harmless_val, half from harmless_train."""
    out = []
    for j, name in enumerate(HARMLESS_SOURCES):
        sub = [r for r in pool if r.dataset == name]
        k = n // 2 + (n % 2 if j == 0 else 0)
        out += random.Random(f"{seed}:{condition}:{name}").sample(sub, k)
    return out


@dataclass
class Item:
    ref: Ref
    prompt: str  # what the model sees (the instruction, or its jailbreak wrapping)
    jailbreak: dict | None


def plan(harmful_pools, harmless_pool, seed: int, counts: dict[str, int]) -> dict[str, list[Item]]:
    from refusal_sae.data import PromptRecord, PromptSet
    from refusal_sae.data.jailbreaks import jailbreak_set

    out: dict[str, list[Item]] = {}
    for cond, (_model, kind, _n) in CONDITIONS.items():
        n = counts[cond]
        if kind == "harmless":
            out[cond] = [Item(r, r.instruction, None) for r in sample_harmless(harmless_pool, n, seed, cond)]
        elif kind == "harmful":
            out[cond] = [Item(r, r.instruction, None) for r in sample_harmful(harmful_pools, n, seed, cond)]
        else:
            refs = sample_harmful(harmful_pools, n, seed, cond)
            pset = PromptSet("judge-jailbreak", [PromptRecord(r.instruction, "harmful", r.dataset) for r in refs])
            jb = jailbreak_set(pset, seed=seed)
            assert not jb.is_test
            out[cond] = [Item(r, rec.instruction, {"family": rec.jailbreak_family, "seed": rec.extra["jailbreak_seed"],
                                                   "template": rec.extra["template"]})
                         for r, rec in zip(refs, jb.records, strict=True)]
    return out


def clamp_features(direction, sae_set) -> dict[int, list[dict]]:
    """Top-k features per clamp layer by cosine(decoder row, direction), highest first."""
    import torch

    d = direction.float() / direction.float().norm()
    out = {}
    for layer in CLAMP_LAYERS:
        sae = sae_set.at_layer(layer)
        w = sae.W_dec.detach().float()
        cos = torch.nn.functional.cosine_similarity(w, d.unsqueeze(0), dim=-1)
        top = torch.topk(cos, CLAMP_TOP_K)
        out[layer] = [{"feature": int(i), "cosine": round(float(c), 4)} for c, i in zip(top.values, top.indices, strict=True)]
    return out


def _uses_direction(condition: str) -> bool:
    return condition.split("/")[0] in ("ablate", "actadd", "clamp0", "clamp-1", "clamp-3")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--direction", type=Path, default=Path("runs/smollm2-135m-refusing/direction"),
                    help="direction stage folder (direction.safetensors + result.json), read only")
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "judge-answers-cache",
                    help="per-condition answers, so an interrupted run resumes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every condition's count (a quick dry run: 0.05)")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--only", default=None, help="comma-separated conditions to generate into the cache only "
                    "(e.g. while the direction is not ready); no output written")
    ap.add_argument("--plan-only", action="store_true", help="print the plan's counts and exit")
    args = ap.parse_args(argv)

    import torch

    from refusal_sae.direction.result import DirectionResult
    from refusal_sae.interventions import ActAdd, DirectionAblation, FeatureClamp
    from refusal_sae.models import load_model
    from refusal_sae.saes.loading import EMBEDDED_SAE_DIR, SaeSet
    from refusal_sae.scoring.generation import generate

    torch.manual_seed(args.seed)
    counts = {c: max(1, round(n * args.scale)) for c, (_m, _k, n) in CONDITIONS.items()}
    harmful_pools, harmless_pool, pool_stats = build_pools(args.data_dir)
    items = plan(harmful_pools, harmless_pool, args.seed, counts)
    plan_key = hashlib.sha256(json.dumps(
        {c: [[i.ref.dataset, i.ref.index, i.prompt] for i in its] for c, its in items.items()}
        | {"max_new_tokens": args.max_new_tokens}).encode()).hexdigest()[:12]
    print(json.dumps({"counts": counts, "pools": pool_stats, "plan": plan_key}, indent=1))
    if args.plan_only:
        return 0

    only = set(args.only.split(",")) if args.only else set(CONDITIONS)
    unknown = only - set(CONDITIONS)
    if unknown:
        ap.error(f"unknown conditions {sorted(unknown)}; known: {', '.join(CONDITIONS)}")
    needs_direction = any(_uses_direction(c) for c in only)
    if needs_direction or not args.only:
        dres = DirectionResult.load(args.direction)
        direction = dres.direction.float()
        direction_sha = file_sha256(args.direction / "direction.safetensors")
        sae_set = SaeSet.from_folder(EMBEDDED_SAE_DIR)
        feats = clamp_features(direction, sae_set)

    def clamp_hooks(handle, mode, value):
        hooks = []
        for layer in CLAMP_LAYERS:
            ids = tuple(f["feature"] for f in feats[layer])
            hooks += FeatureClamp(sae_set.at_layer(layer), ids, mode=mode, value=value).hooks(handle)
        return hooks

    interventions = {
        "none": lambda h: [],
        "base": lambda h: [],
        "ablate": lambda h: DirectionAblation(direction).hooks(h),
        "actadd": lambda h: ActAdd(direction, dres.layer, coeff=1.0).hooks(h),
        "clamp0": lambda h: clamp_hooks(h, "zero", 0.0),
        "clamp-1": lambda h: clamp_hooks(h, "scale", -1.0),
        "clamp-3": lambda h: clamp_hooks(h, "scale", -3.0),
        "jailbreak": lambda h: [],
    }
    cache = args.cache_dir / plan_key
    cache.mkdir(parents=True, exist_ok=True)
    handles: dict[str, object] = {}
    timings: dict[str, float] = {}
    revisions: dict[str, str] = {}
    answers: dict[str, list[str]] = {}
    # tuned-model conditions first, then the base model (one model in memory at a time)
    order = sorted(CONDITIONS, key=lambda c: CONDITIONS[c][0] == "base")
    for cond in order:
        model_kind = CONDITIONS[cond][0]
        if cond not in only:
            continue
        f = cache / (f"{slug(cond)}-{direction_sha[:12]}.json" if _uses_direction(cond) else f"{slug(cond)}.json")
        if f.is_file():
            saved = json.loads(f.read_text())
            answers[cond], timings[cond], revisions[model_kind] = saved["answers"], saved["seconds"], saved["revision"]
            print(f"{cond}: cached ({len(answers[cond])})")
            continue
        if model_kind not in handles:
            handles.clear()
            t0 = time.time()
            handles[model_kind] = load_model(None if model_kind == "tuned" else "smollm2-135m", device="cpu", dtype="float32")
            print(f"loaded {model_kind} model in {time.time() - t0:.1f}s")
        handle = handles[model_kind]
        revisions[model_kind] = handle.revision
        if model_kind == "tuned" and needs_direction:
            sae_set.validate(handle)
        t0 = time.time()
        with handle.hooks(interventions[cond.split("/")[0]](handle)):
            out = generate(handle, [i.prompt for i in items[cond]], max_new_tokens=args.max_new_tokens,
                           batch_size=args.batch_size, desc=cond)
        timings[cond] = round(time.time() - t0, 1)
        answers[cond] = out
        f.write_text(json.dumps({"answers": out, "seconds": timings[cond], "revision": handle.revision}))
        print(f"{cond}: {len(out)} answers in {timings[cond]}s", flush=True)

    if args.only:
        print(f"generated {sorted(only)} into {cache}; run without --only to write the outputs")
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for cond in CONDITIONS:
        for k, (item, ans) in enumerate(zip(items[cond], answers[cond], strict=True)):
            plain = item.ref.instruction
            rows.append({"id": f"{slug(cond)}-{k:03d}", "condition": cond, "source": item.ref.to_dict(),
                         "jailbreak": item.jailbreak, "answer": ans, "split": split_of(plain)})
    with open(args.out_dir / "answers.jsonl", "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    per_cond = {c: {"n": len(items[c]), "dev": sum(split_of(i.ref.instruction) == "dev" for i in items[c])}
                for c in CONDITIONS}
    manifest = {
        "command": "PYTHONPATH=src python scripts/make_judge_answers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed,
        "max_new_tokens": args.max_new_tokens,
        "decoding": "greedy",
        "batch_size": args.batch_size,
        "device": "cpu",
        "dtype": "float32",
        "model_revisions": revisions,
        "direction": {"folder": str(args.direction), "layer": dres.layer, "pos": dres.pos,
                      "direction_safetensors_sha256": direction_sha,
                      "result_json_sha256": file_sha256(args.direction / "result.json"),
                      "norm": round(float(direction.norm()), 4)},
        "actadd_coeff": 1.0,
        "clamp": {"layers": list(CLAMP_LAYERS), "top_k": CLAMP_TOP_K, "by": "cosine(W_dec row, direction), highest",
                  "features": {str(k): v for k, v in feats.items()}, "saes": str(EMBEDDED_SAE_DIR.relative_to(ROOT))},
        "pools": pool_stats,
        "test_sets_excluded": list(TEST_SETS),
        "near_duplicate_jaccard": NEAR_DUPLICATE_JACCARD,
        "dev_fraction": DEV_FRACTION,
        "conditions": {c: {"model": CONDITIONS[c][0], "prompts": CONDITIONS[c][1], **per_cond[c],
                           "seconds": timings[c]} for c in CONDITIONS},
        "total": len(rows),
        "generation_seconds": round(sum(timings.values()), 1),
    }
    (args.out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(rows)} rows to {args.out_dir / 'answers.jsonl'}; generation {manifest['generation_seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
