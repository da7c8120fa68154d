"""Wall time of `refusal-sae demo` in a fresh run directory, as a new user meets it: by default with an empty model
cache too, so the embedded model is de-quantised and merged again (what the first run after a fresh install pays).

    .venv/bin/python benchmarks/bench_demo.py [--keep-cache] [--run-dir DIR] [--threads N]

Prints the total wall time, the CPU time of the run, the load average before and after (other work on the machine
slows it), and each stage's wall time as the demo reported it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep-cache", action="store_true", help="reuse the cached embedded model (skip the ~30 s first load)")
    ap.add_argument("--run-dir", type=Path, help="fresh run directory (default: a temporary one)")
    ap.add_argument("--threads", type=int, help="torch threads (OMP_NUM_THREADS); default: torch's choice")
    ap.add_argument("--json", action="store_true", help="also print one JSON line")
    args, extra = ap.parse_known_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    run_dir = args.run_dir or tmp / "demo"
    if run_dir.exists() and any(run_dir.iterdir()):
        print(f"{run_dir} is not empty; the benchmark needs a fresh run directory", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if not args.keep_cache:
        env["REFUSAL_SAE_CACHE"] = str(tmp / "cache")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = [sys.executable, "-m", "refusal_sae", "demo", "--run-dir", str(run_dir), *extra]
    # the demo's torch threads, as it will see them (a site hook or the caller may have pinned OMP_NUM_THREADS)
    probe = "import torch; print(torch.get_num_threads())"
    threads = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout.strip()
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(r.stdout, end="")
    if r.returncode != 0:
        print(f"demo failed (exit {r.returncode})", file=sys.stderr)
        return r.returncode
    stages: dict[str, float] = {}  # per pipeline stage, as the demo printed it ("[i/N] name: ..." then "done in X s")
    current = None
    for line in r.stdout.splitlines():
        if m := re.match(r"\[\d+/\d+\] (\w+):", line):
            current = m.group(1)
        elif current and (m := re.match(r"\s+done in ([\d.]+) s", line)):
            stages[current] = float(m.group(1))
    print(f"\ndemo wall time: {wall:.0f} s = {wall / 60:.1f} min on {os.cpu_count()} cores, {threads} torch thread(s) "
          f"({'fresh model cache' if not args.keep_cache else 'cached model'}); CPU time {ru.ru_utime + ru.ru_stime:.0f} s; "
          f"load average before {load0[0]:.1f}, after {load1[0]:.1f} (1 min)")
    for kind, s in stages.items():
        print(f"  {kind:20s} {s:7.1f} s")
    print(f"  {'other':20s} {wall - sum(stages.values()):7.1f} s  (start-up, model load and first-use build, checks, report)")
    if args.json:
        print(json.dumps({"wall_s": round(wall, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1), "cores": os.cpu_count(),
                          "torch_threads": int(threads) if threads.isdigit() else None,
                          "fresh_cache": not args.keep_cache, "load_before": load0, "load_after": load1,
                          "stages_s": {k: round(v, 1) for k, v in stages.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
