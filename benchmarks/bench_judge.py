"""Judge throughput: answers judged per second, each judge on the same answers, side by side in one run.

Workload: ``--n`` (instruction, answer) pairs from the public human-labelled sets (val split by instruction; never
the test split), every answer cut or padded to about ``--tokens`` word pieces of the default judge's tokenizer
(256 by default: the aim is ≥ 10 answers a second for 256-token answers on 2 CPU cores). Each judge is built and
warmed on 8 pairs first (model loading is not timed), then times one ``judge()`` call over all pairs.

    python benchmarks/bench_judge.py --threads 2                        # default, learned, heuristic
    python benchmarks/bench_judge.py --judges default --n 64 --json
"""

from __future__ import annotations

import argparse
import json
import time


def pairs(n: int, tokens: int, data_dir=None) -> tuple[list[str], list[str]]:
    """``n`` val-split pairs with answers of about ``tokens`` word pieces (long answers cut, short ones repeated)."""
    from refusal_sae.scoring.judge.encoder import AnswerEncoder
    from refusal_sae.scoring.judge.public import load_public_labels

    tok = AnswerEncoder().tokenizer
    rows = [a for a in load_public_labels("val", data_dir=data_dir) if len(a.answer) > 200][:n]
    answers = []
    for a in rows:
        ids = tok(a.answer, add_special_tokens=False, verbose=False)["input_ids"]
        while len(ids) < tokens:
            ids = ids + ids
        answers.append(tok.decode(ids[:tokens]))
    return [a.prompt for a in rows], answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judges", default="default,learned,heuristic")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from refusal_sae.scoring.judge import get_judge

    if args.threads:
        torch.set_num_threads(args.threads)
    instructions, answers = pairs(args.n, args.tokens, args.data_dir)
    results = {}
    for spec in [s.strip() for s in args.judges.split(",") if s.strip()]:
        judge = get_judge(spec)
        judge.judge(instructions[:8], answers[:8])  # load and warm
        t = time.perf_counter()
        labels = [j.label for j in judge.judge(instructions, answers)]
        dt = time.perf_counter() - t
        results[spec] = {"answers": len(answers), "seconds": round(dt, 2), "answers_per_s": round(len(answers) / dt, 2),
                         "complied": labels.count("complied")}
        print(f"{spec:12s} {len(answers)} answers of ~{args.tokens} tokens in {dt:6.1f} s: "
              f"{len(answers) / dt:6.2f} answers/s", flush=True)
    base = results.get("default", {}).get("answers_per_s")
    for spec, r in results.items():
        if base and spec != "default":
            print(f"default vs {spec}: {base / r['answers_per_s']:.1f}x")
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "tokens": args.tokens, "judges": results}))


if __name__ == "__main__":
    main()
