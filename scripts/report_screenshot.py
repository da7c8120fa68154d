"""Render a run directory's report and screenshot it in headless Chromium (the README's docs/report.png: the report's
first screen, its findings summary; docs/report-search.png: the feature-search section).

    .venv/bin/python scripts/report_screenshot.py runs/demo docs/report.png [--height 2600]
    .venv/bin/python scripts/report_screenshot.py runs/demo docs/report-search.png --section search

Needs Debian's chromium + chromium-driver and selenium (a test extra); where they are missing it says so and exits 1
(it installs no browser). Fails (exit 1) when a figure did not draw or the browser console shows an error, so a
screenshot is only ever taken of a report that works.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> int:
    from refusal_sae.report import render_report
    from refusal_sae.report.browser import browser_missing, check_in_browser

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out", type=Path, help="PNG to write")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=2600, help="screenshot height from the top (0: the whole page)")
    ap.add_argument("--section", help="screenshot this section alone (its id: findings, direction, search, evals, cards, "
                                      "run (the appendix), ...)")
    args = ap.parse_args()
    why = browser_missing()
    if why:
        print(f"cannot take a screenshot: {why}", file=sys.stderr)
        return 1
    page = render_report(args.run_dir)
    res = check_in_browser(page, args.out, args.width, args.height or None, section=args.section)
    print(f"{page}: {res.drawn}/{res.figures} figures drawn, {res.overflowing} wider than their column, "
          f"{len(res.errors)} console errors, page height {res.height}px → {args.out}")
    for e in res.errors:
        print(f"  console: {e.get('message')}", file=sys.stderr)
    return 0 if res.drawn == res.figures and not res.errors and not res.overflowing else 1


if __name__ == "__main__":
    sys.exit(main())
