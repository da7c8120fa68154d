"""``report.html``: one self-contained file rendered from a run directory alone (no model, no network).

Every stage folder's result is loaded as its typed result class (:mod:`.results`). The report's sections are a
registry (:data:`SECTIONS`) keyed by result kind: a section is drawn when the run directory holds results of its kinds
and otherwise shows one "not run" line. A section's ``summary`` gives its rows of the findings table that opens the
report (:mod:`.summary`). A later stage's section is one :func:`register_section` call with a function
``(views, ctx) -> html`` in a module of this package (found by :func:`register_builtin_sections`); see docs/run.md,
"Adding a stage".

Figures are Plotly, with plotly.js inlined once in the page's head, so the file opens offline in any browser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from refusal_sae.report.markup import esc
from refusal_sae.report.neuronpedia import FeatureLinks
from refusal_sae.report.records import RunManifest, typed
from refusal_sae.report.results import ResultView, Unreadable, collect_results
from refusal_sae.report.summary import Finding, render_findings
from refusal_sae.runs.rundir import MANIFEST, RunDir

REPORT = "report.html"
__all__ = ["REPORT", "SECTIONS", "ReportContext", "ResultView", "SectionSpec", "collect_results", "esc",
           "register_section", "render_report"]


@dataclass
class ReportContext:
    run_dir: Path
    manifest: RunManifest
    examples: int = 3
    views: list[ResultView] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    n_figures: int = 0
    links: FeatureLinks | None = None

    def __post_init__(self) -> None:
        if self.links is None:
            self.links = FeatureLinks({hook: s.source for hook, s in self.manifest.saes.items()})

    def of_kind(self, *kinds: str) -> list[ResultView]:
        """Results of these kinds (``"*"``: every result)."""
        return [v for v in self.views if v.kind in kinds or "*" in kinds]

    def one(self, kind: str):
        """The typed result of the first result of ``kind``, or ``None``."""
        return next((v.result for v in self.views if v.kind == kind), None)

    def figure(self, fig, height: int = 360) -> str:
        """A Plotly figure as a div (plotly.js is in the page head)."""
        self.n_figures += 1
        fig.update_layout(height=height, template="plotly_white", margin=dict(l=60, r=20, t=60, b=50),
                          font=dict(size=12), title_font_size=14, title_x=0.02, title_y=0.97)
        return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"figure-{self.n_figures}",
                           config={"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": _MODEBAR_OFF})


_MODEBAR_OFF = ["select2d", "lasso2d", "zoomIn2d", "zoomOut2d", "autoScale2d", "pan2d"]

SectionRenderer = Callable[[list[ResultView], ReportContext], str]
SectionSummary = Callable[[list[ResultView], ReportContext], list[Finding]]


@dataclass(frozen=True)
class SectionSpec:
    id: str
    title: str
    kinds: tuple[str, ...]  # result kinds it draws ("*": any; the renderer picks, "" from it = nothing to show)
    stage: str  # the stage that makes them (for the "not run" line)
    render: SectionRenderer | None = None  # None: the stage does not exist yet
    summary: SectionSummary | None = None  # its rows of the findings table (headline numbers, CIs, controls)


SECTIONS: list[SectionSpec] = []


def register_section(spec: SectionSpec, replace: bool = True) -> None:
    """Add a section (or give a planned one its renderer: same ``id``, keeping its place in the report)."""
    for i, s in enumerate(SECTIONS):
        if s.id == spec.id:
            if not replace:
                raise ValueError(f"section {spec.id!r} is already registered")
            SECTIONS[i] = spec
            return
    SECTIONS.append(spec)


def plan_sections(order: tuple[SectionSpec, ...]) -> None:
    """Put the sections in ``order`` (those already registered keep their renderer), then any others."""
    have = {s.id: s for s in SECTIONS}
    placed = [have.get(spec.id, spec) for spec in order]
    ids = {s.id for s in placed}
    SECTIONS[:] = placed + [s for s in SECTIONS if s.id not in ids]


def register_builtin_sections() -> None:
    """Import every module of this package: ``sections`` first (the report's order, with the planned sections), then
    each stage's renderer module (``search``, ...), whose ``register_section`` call takes its planned place. Adding a
    stage's section is adding its module; nothing here changes."""
    import importlib
    import pkgutil

    import refusal_sae.report as pkg

    importlib.import_module("refusal_sae.report.sections")
    for mod in sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)):
        if mod not in ("render", "browser", "sections"):  # helper modules register nothing
            importlib.import_module(f"refusal_sae.report.{mod}")


def _load_template():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("refusal_sae.report", "templates"), autoescape=select_autoescape(["html", "j2"]))
    return env.get_template("report.html.j2")


def _sections(ctx: ReportContext) -> tuple[list[dict], str]:
    """Each section's body (or why it has none) and the findings table of those that ran."""
    from markupsafe import Markup

    items, found, not_run = [], [], []
    for spec in SECTIONS:
        views = ctx.of_kind(*spec.kinds)
        body = spec.render(views, ctx) if spec.render is not None and (views or not spec.kinds) else ""
        damaged = [u for u in ctx.unreadable if u.kind in spec.kinds and "*" not in spec.kinds]
        if damaged:  # never silently left out: the section says which result it could not draw and how to get it back
            body = "".join(f'<p class="damaged"><strong>damaged: rerun</strong> — <code>{esc(u.name)}</code>: '
                           f'{esc(u.why)}. <code>refusal-sae run CONFIG</code> with this run\'s config recomputes '
                           "it.</p>" for u in damaged) + body
        if body:
            items.append({"id": spec.id, "title": spec.title, "stage": spec.stage, "body": Markup(body)})
            rows = spec.summary(views, ctx) if spec.summary is not None and views else []
            rows += [Finding(f"<code>{esc(u.name)}</code>", "<strong>damaged: rerun</strong>", esc(u.why))
                     for u in damaged]
            if rows:
                found.append((spec.id, spec.title, rows))
        else:
            why = "not run in this run directory" if spec.render is not None else "stage not available yet"
            items.append({"id": spec.id, "title": spec.title, "stage": spec.stage, "why": why})
            not_run.append((spec.id, spec.title))
    return items, render_findings(found, not_run)


def render_report(run_dir: str | Path, out: str | Path | None = None, examples: int = 3, log=print) -> Path:
    """Write the report of ``run_dir`` (default ``<run_dir>/report.html``) and return its path. Damaged results are
    marked in their sections; ``log`` gets one line per repair (a rebuilt manifest)."""
    from markupsafe import Markup
    from plotly.offline import get_plotlyjs

    from refusal_sae.errors import DataError
    from refusal_sae.runs import atomic_path

    register_builtin_sections()
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not (run_dir / MANIFEST).exists():
        raise DataError(f"{run_dir} is not a run directory (no {MANIFEST}); run `refusal-sae run CONFIG` first")
    notices: list[str] = []
    raw = RunDir(run_dir, log=notices.append).manifest()  # an unreadable manifest is rebuilt (and said so)
    for n in notices:
        log(n)
    manifest = typed(RunManifest, raw)
    ctx = ReportContext(run_dir, manifest, examples, *collect_results(run_dir))
    items, findings = _sections(ctx)
    model = manifest.model.name
    page = _load_template().render(
        title=f"refusal-sae report: {model}", run_dir=str(run_dir.resolve()), model=model, findings=Markup(findings),
        sections=items, plotly_js=Markup(get_plotlyjs()), n_figures=ctx.n_figures, generated=manifest.updated,
        version=manifest.package_version)
    path = Path(out) if out else run_dir / REPORT
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
