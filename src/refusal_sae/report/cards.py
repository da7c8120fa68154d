"""The report's feature cards: the top-activating contexts of each latent of any result holding
:class:`~refusal_sae.saes.features.FeatureSummary` lists (e.g. the search's ``search/cards``), its decoder cosine
with the refusal direction where the result records it, the stage that found it, and its Neuronpedia page where its
SAE comes from a sae-lens release Neuronpedia hosts."""

from __future__ import annotations

from dataclasses import dataclass, fields

from refusal_sae.report.markup import esc, num
from refusal_sae.report.render import ReportContext, ResultView, SectionSpec, register_section


@dataclass
class Card:
    summary: object  # FeatureSummary
    group: str  # the field (and key) it sits in; "" for a result's ``cards``
    cosine: float | None  # decoder cosine with the refusal direction (None: not recorded)
    found_by: str


def cards_of(v: ResultView) -> list[Card]:
    """Every FeatureSummary in a result's fields (lists, or dicts of lists), with the result's ``cosine`` map
    (``"layer:feature"`` → decoder cosine) and ``found_by`` where it has them."""
    from refusal_sae.saes.features import FeatureSummary

    res = v.result
    cosine = getattr(res, "cosine", None)
    cosine = cosine if isinstance(cosine, dict) else {}
    stage = v.name.split("/")[0]
    found_by = getattr(res, "found_by", None)
    found = f"{stage}: {found_by}" if isinstance(found_by, str) and found_by else stage
    out = []
    for f in fields(res):
        val = getattr(res, f.name)
        groups = val.items() if isinstance(val, dict) else [("", val)]
        for key, items in groups:
            if not isinstance(items, list):
                continue
            group = "" if f.name == "cards" and not key else (f"{f.name}: {key}" if key else f.name)
            out += [Card(c, group, cosine.get(f"{c.layer}:{c.feature}"), found) for c in items if isinstance(c, FeatureSummary)]
    return out


def _context(e) -> str:
    def show(ts):
        return esc("".join(ts)).replace("\n", "⏎")

    toks, c = e.tokens, e.center
    return (f"<div class='ctx'><span class='act'>{num(e.activation, '.2f')}</span>{show(toks[:c])}"
            f"<mark>{show(toks[c : c + 1])}</mark>{show(toks[c + 1:])}</div>")


def render_card(card: Card, ctx: ReportContext) -> str:
    s = card.summary
    extra = [] if card.cosine is None else [f"decoder cos to the direction {num(card.cosine)}"]
    extra += [f"decoder norm {num(s.decoder_norm)}", f"max {num(s.max_activation)}"]
    if s.frequency is not None:
        extra.append(f"fires on {100 * s.frequency:.2f}% of tokens")
    where = s.hook_name or f"layer {s.layer}"
    link = ctx.links.link(s.feature, hook=s.hook_name)
    return (f"<div class='card'><h4>latent {esc(s.feature)} @ {esc(where)}{' ' + link if link else ''}</h4>"
            f"<div class='note'>{' · '.join(extra)} · found by <code>{esc(card.found_by)}</code>"
            f"{' (' + esc(card.group) + ')' if card.group else ''}</div>"
            f"{''.join(_context(e) for e in s.examples) or '<p class=note>no activating tokens</p>'}</div>")


def render_cards(views: list[ResultView], ctx: ReportContext) -> str:
    out = []
    for v in views:
        cards = cards_of(v)
        if cards:
            out.append(f"<h3><code>{esc(v.name)}</code>: {len(cards)} latents</h3><div class='cards'>"
                       + "".join(render_card(c, ctx) for c in cards) + "</div>")
    if not out:
        return ""
    out.insert(0, "<p class='note'>Top-activating contexts of each latent (activating token highlighted, its activation "
                  "on the left), its decoder direction's cosine with the refusal direction where known, the stage "
                  "that found it, and its Neuronpedia page where its SAE is a sae-lens release Neuronpedia hosts.</p>")
    return "".join(out)


register_section(SectionSpec("cards", "Feature cards", ("*",), "search", render_cards))
