"""``report.html``: one self-contained file rendered from a run directory alone (no model, no torch, no network).

Every stage folder's ``result.json`` is read as a :class:`ResultView` (kind, schema, meta, data, row files). The
report's sections are a registry (:data:`SECTIONS`) keyed by result kind: a section is drawn when the run directory
holds results of its kinds and otherwise shows one "not run" line. A later stage's section is one
:func:`register_section` call with a function ``(views, ctx) -> html`` in a module of this package (found by
:func:`register_builtin_sections`); see docs/run.md, "Adding a stage".

Figures are Plotly, with plotly.js inlined once in the page's head, so the file opens offline in any browser.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from refusal_sae.runs.io import read_json, read_jsonl
from refusal_sae.runs.rundir import MANIFEST

REPORT = "report.html"
SKIP_DIRS = ("responses", "saes")  # caches and trained weights, not results


@dataclass
class ResultView:
    """One saved stage result, read from its folder as plain JSON (renderers need no model and no torch)."""

    name: str  # the folder relative to the run directory, e.g. "eval/smollm2__jailbreakbench__ablate"
    kind: str
    schema: int
    meta: dict
    data: dict
    folder: Path

    @property
    def config(self) -> dict:
        return self.meta.get("config") or {}

    def rows(self, name: str = "rows") -> list[dict]:
        """The row file ``<name>.jsonl`` of the result (e.g. an evaluation's per-prompt rows); ``[]`` when absent."""
        path = self.folder / f"{name}.jsonl"
        return read_jsonl(path) if path.is_file() else []


def collect_results(run_dir: Path) -> list[ResultView]:
    """Every stage result under ``run_dir``, sorted by folder name."""
    views = []
    for path in sorted(Path(run_dir).rglob("result.json")):
        rel = path.parent.relative_to(run_dir)
        if rel.parts and rel.parts[0] in SKIP_DIRS:
            continue
        info = read_json(path)
        if not info or "kind" not in info or "data" not in info:
            continue
        views.append(ResultView(rel.as_posix(), info["kind"], info.get("schema", 1), info.get("meta") or {},
                                info["data"], path.parent))
    return views


@dataclass
class ReportContext:
    run_dir: Path
    manifest: dict
    examples: int = 3
    views: list[ResultView] = field(default_factory=list)
    n_figures: int = 0

    def of_kind(self, *kinds: str) -> list[ResultView]:
        """Results of these kinds (``"*"``: every result)."""
        return [v for v in self.views if v.kind in kinds or "*" in kinds]

    def figure(self, fig, height: int = 360) -> str:
        """A Plotly figure as a div (plotly.js is in the page head)."""
        self.n_figures += 1
        fig.update_layout(height=height, template="plotly_white", margin=dict(l=60, r=20, t=60, b=50),
                          font=dict(size=12), title_font_size=14, title_x=0.02, title_y=0.97)
        return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"figure-{self.n_figures}",
                           config={"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": _MODEBAR_OFF})


_MODEBAR_OFF = ["select2d", "lasso2d", "zoomIn2d", "zoomOut2d", "autoScale2d", "pan2d"]

SectionRenderer = Callable[[list[ResultView], ReportContext], str]


@dataclass(frozen=True)
class SectionSpec:
    id: str
    title: str
    kinds: tuple[str, ...]  # result kinds it draws ("*": any; the renderer picks, "" from it = nothing to show)
    stage: str  # the stage that makes them (for the "not run" line)
    render: SectionRenderer | None = None  # None: the stage does not exist yet


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


def register_builtin_sections() -> None:
    """Import every module of this package: ``sections`` first (the report's order, with the planned sections), then
    each stage's renderer module (``search``, ...), whose ``register_section`` call takes its planned place. Adding a
    stage's section is adding its module; nothing here changes."""
    import importlib
    import pkgutil

    import refusal_sae.report as pkg

    importlib.import_module("refusal_sae.report.sections")
    for mod in sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)):
        if mod not in ("render", "browser", "sections"):
            importlib.import_module(f"refusal_sae.report.{mod}")


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def _load_template():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("refusal_sae.report", "templates"), autoescape=select_autoescape(["html", "j2"]))
    return env.get_template("report.html.j2")


def render_report(run_dir: str | Path, out: str | Path | None = None, examples: int = 3) -> Path:
    """Write the report of ``run_dir`` (default ``<run_dir>/report.html``) and return its path."""
    from markupsafe import Markup
    from plotly.offline import get_plotlyjs

    from refusal_sae.errors import DataError
    register_builtin_sections()
    from refusal_sae.runs import atomic_path

    run_dir = Path(run_dir)
    manifest = read_json(run_dir / MANIFEST)
    if not run_dir.is_dir() or manifest is None:
        raise DataError(f"{run_dir} is not a run directory (no {MANIFEST}); run `refusal-sae run CONFIG` first")
    ctx = ReportContext(run_dir, manifest, examples, collect_results(run_dir))
    items = []
    for spec in SECTIONS:
        views = ctx.of_kind(*spec.kinds)
        body = spec.render(views, ctx) if spec.render is not None and (views or not spec.kinds) else ""
        if body:
            items.append({"id": spec.id, "title": spec.title, "stage": spec.stage, "body": Markup(body)})
        else:
            why = "not run in this run directory" if spec.render is not None else "stage not available yet"
            items.append({"id": spec.id, "title": spec.title, "stage": spec.stage, "why": why})
    model = (manifest.get("model") or {}).get("name", "?")
    page = _load_template().render(
        title=f"refusal-sae report: {model}", run_dir=str(run_dir.resolve()), model=model,
        sections=items, plotly_js=Markup(get_plotlyjs()), n_figures=ctx.n_figures,
        generated=manifest.get("updated", ""), version=manifest.get("package_version", ""),
        manifest_json=json.dumps(manifest, indent=1))
    path = Path(out) if out else run_dir / REPORT
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
