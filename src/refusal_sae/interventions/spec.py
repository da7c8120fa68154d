"""Names of the direction interventions, as the CLI and configs spell them (torch-free, checked before any work)."""

from __future__ import annotations

from refusal_sae.errors import ConfigError

DIRECTION_INTERVENTIONS = ("none", "ablate", "actadd")


def check_intervention(kind: str, ablate_layers: tuple[int, ...] | None = None, n_layers: int | None = None) -> None:
    """``kind`` is known; ablation layers go with ``ablate`` only, are not empty, and (given ``n_layers``) exist."""
    if kind not in DIRECTION_INTERVENTIONS:
        raise ConfigError(f"unknown intervention {kind!r}; expected one of {', '.join(DIRECTION_INTERVENTIONS)}")
    if ablate_layers is None:
        return
    if kind != "ablate":
        raise ConfigError(f"--ablate-layers applies to --intervention ablate only, not {kind!r}")
    if not ablate_layers:
        raise ConfigError("--ablate-layers is empty")
    bad = [L for L in ablate_layers if n_layers is not None and not 0 <= L < n_layers]
    if bad:
        raise ConfigError(f"ablation layers {bad} out of range: the model has layers 0-{n_layers - 1}")
