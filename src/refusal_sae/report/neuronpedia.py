"""Links from the report's features to their Neuronpedia pages, for SAEs loaded from a sae-lens release that Neuronpedia
hosts (Gemma Scope, Llama Scope, ...).

The run records each SAE's source in the manifest (``saes: {hook: {source}}``): a folder, or ``<release>/<sae id>``
for a release (:meth:`refusal_sae.saes.loading.SaeSet.from_release`). Which Neuronpedia id a release's SAE has is
sae-lens' own mapping (the ``neuronpedia`` key of each SAE in its ``pretrained_saes.yaml``), read from the file
sae-lens ships, without importing sae-lens (its import loads torch and transformer-lens). Local and embedded SAEs
get no link.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from refusal_sae.report.markup import esc
from refusal_sae.report.records import typed

URL = "https://www.neuronpedia.org/{id}/{index}"
_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_post$")


@dataclass
class _Sae:
    id: str
    neuronpedia: str | None = None


@dataclass
class _Release:
    saes: list[_Sae] = field(default_factory=list)


@cache
def release_ids() -> dict[str, dict[str, str]]:
    """sae-lens' directory as ``release → {sae id → neuronpedia id}`` (SAEs without one left out); ``{}`` when sae-lens
    is not installed."""
    spec = importlib.util.find_spec("sae_lens")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained_saes.yaml"
    if not path.is_file():
        return {}
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return {release: {s.id: s.neuronpedia for s in entry.saes if s.neuronpedia}
            for release, entry in typed(dict[str, _Release], data).items()}


def _maybe_release(source: str) -> bool:
    """A source that can only be ``<release>/<sae id>``: relative, with a slash, and no such folder here."""
    return "/" in source and not Path(source).is_absolute() and not Path(source).exists()


def neuronpedia_id(source: str) -> str | None:
    """The Neuronpedia id (``gemma-2-2b/12-gemmascope-res-16k``) of the SAE loaded from ``source``, or ``None``."""
    if not _maybe_release(source):
        return None
    release, _, sae_id = source.partition("/")
    return release_ids().get(release, {}).get(sae_id)


class FeatureLinks:
    """Neuronpedia pages of the run's SAEs, by hook name and by layer (the residual-stream SAE of a layer, as the
    search's ``(layer, feature)`` pairs mean)."""

    def __init__(self, sources: dict[str, str]):
        self.by_hook = {hook: np for hook, src in sources.items() if (np := neuronpedia_id(src))}
        self.by_layer = {int(m.group(1)): np for hook, np in self.by_hook.items() if (m := _HOOK.match(hook))}

    def url(self, feature: int, hook: str | None = None, layer: int | None = None) -> str | None:
        np = self.by_hook.get(hook) if hook is not None else self.by_layer.get(layer)
        return URL.format(id=np, index=int(feature)) if np else None

    def link(self, feature: int, hook: str | None = None, layer: int | None = None, text: str = "Neuronpedia ↗") -> str:
        """An ``<a>`` to the feature's page, or ``""`` when its SAE has none."""
        url = self.url(feature, hook, layer)
        return f"<a class='np' href='{esc(url)}' target='_blank' rel='noopener'>{esc(text)}</a>" if url else ""
