"""The report's appendix: what produced the results (model and weights identity, package and commit, the pipeline
config and command), every stage result's folder, config hash, seed and wall time, the SAEs with their sources,
Neuronpedia ids and hashes, results that could not be read, the resolved config and the manifest itself."""

from __future__ import annotations

from refusal_sae.report.markup import esc, num, table
from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, register_section
from refusal_sae.runs.rundir import MANIFEST


def _facts(ctx: ReportContext) -> str:
    m = ctx.manifest
    model, git, pipe = m.model, m.git, m.pipeline
    facts = [
        ("model", esc(model.name)), ("weights", f"<code>{esc(model.revision)}</code>"),
        ("adapter", esc(model.adapter or "–")),
        ("shape", f"{model.n_layers or '?'} layers, d_model {model.d_model or '?'}, {esc(model.dtype or '?')}"),
        ("package", f"refusal-sae {esc(m.package_version or '?')}" + (
            f", commit <code>{esc(git.commit[:12])}</code>{' (local changes)' if git.dirty else ''}" if git else "")),
        ("created / updated", f"{esc(m.created)} / {esc(m.updated or '?')}"),
    ]
    if pipe is not None:
        facts.append(("config", f"{esc(pipe.config or '–')} (hash <code>{esc(pipe.config_hash)}</code>)"))
        facts.append(("command", f"<code>{esc(pipe.command)}</code>"))
    return "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts) + "</table>"


def _stages(ctx: ReportContext) -> str:
    stages = ctx.manifest.stages
    if not stages:
        return ""
    rows = [[f"<code>{esc(name)}</code>", esc(e.kind), f"<code>{esc(e.config_hash)}</code>",
             esc(e.seed if e.seed is not None else "–"), num(e.wall_s, ".1f"), esc(e.finished)]
            for name, e in sorted(stages.items())]
    total = sum(e.wall_s or 0 for e in stages.values())
    return (f"<h3>Stage results ({len(stages)}; {total / 60:.1f} min of compute in total)</h3>"
            + table(["result folder", "kind", "config hash", "seed", "wall s", "finished"], rows, num_from=3, num_to=5))


def _saes(ctx: ReportContext) -> str:
    saes = ctx.manifest.saes
    if not saes:
        return ""
    rows = [[f"<code>{esc(h)}</code>", esc(s.source), esc(s.d_sae),
             f"<code>{esc(ctx.links.by_hook.get(h, '–'))}</code>", f"<code>{esc((s.sha256 or '–')[:16])}</code>"]
            for h, s in saes.items()]
    return (f"<details><summary>SAEs ({len(saes)}; {len(ctx.links.by_hook)} on Neuronpedia)</summary>"
            + table(["hook", "source", "d_sae", "Neuronpedia id (sae-lens)", "weights sha256"], rows, num_from=2,
                    num_to=3) + "</details>")


def render_run(views: list[ResultView], ctx: ReportContext) -> str:
    out = [_facts(ctx), _stages(ctx), _saes(ctx)]
    if ctx.unreadable:
        out.append("<h3>Results left out</h3><ul class='note'>" + "".join(
            f"<li><code>{esc(u.name)}</code>: {esc(u.why)}</li>" for u in ctx.unreadable) + "</ul>")
    for name, what in (("config.yaml", "resolved config (config.yaml)"), (MANIFEST, MANIFEST)):
        if (ctx.run_dir / name).is_file():
            out.append(f"<details><summary>{what}</summary><pre>{esc((ctx.run_dir / name).read_text())}</pre></details>")
    out.append("<p class='note'>Results are deterministic for a config; <code>meta</code> in each result.json holds wall "
               "times and finish stamps, which differ between runs.</p>")
    return "".join(out)


register_section(SectionSpec("run", "Appendix: run metadata and stage results", (), "run", render_run))
