"""What the stage-1 commands print: the chosen direction, its candidates and the harm-vs-refusal comparison, on the
console (the report draws the same results as HTML). Kept beside the results so the CLI only parses and calls."""

from __future__ import annotations

from rich.console import Console


def show_direction(res, out: Console, run) -> None:
    c = res.chosen
    out.print(f"chosen: position {c.pos}, layer {c.layer}: bypass {c.bypass:.3f}, induce {c.induce:.3f}, "
              f"KL {c.kl:.4f} (median {c.kl_median:.4f}, max {c.kl_max:.3f})  → {run.root / 'direction'}")
    if res.kl_by_prompt:
        out.print("  harmless prompts it moves most (KL; clean → ablated most likely token):")
        for row in res.kl_by_prompt[:3]:
            out.print(f"    {row.kl:.3f}  {row.instruction[:60]!r}: {row.clean_top[0][0]!r} → {row.ablated_top[0][0]!r}")
    for s in sorted((s for s in res.candidates if s.kept), key=lambda s: s.bypass)[:5]:
        out.print(f"  pos {s.pos:3d} layer {s.layer:3d}  bypass {s.bypass:7.3f}  induce {s.induce:7.3f}  KL {s.kl:.4f}")


def show_harm_vs_refusal(hv, out: Console) -> None:
    out.print(f"harm (t_inst) vs refusal (pos {hv.position}): baseline refusal score harmless "
              f"{hv.baseline_harmless:.2f}, harmful {hv.baseline_harmful:.2f}")
    out.print("  layer  cos   add_refusal add_harm  ablate_refusal ablate_harm")
    for r in hv.rows:
        out.print(f"  {r.layer:5d} {r.cosine:5.2f} {r.add_refusal:11.2f} {r.add_harm:8.2f} "
                  f"{r.ablate_refusal:15.2f} {r.ablate_harm:11.2f}")
