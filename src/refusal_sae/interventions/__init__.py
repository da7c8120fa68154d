"""Interventions on the residual stream: directional ablation, activation addition, weight orthogonalisation."""

from refusal_sae.interventions.directional import ActAdd, DirectionAblation
from refusal_sae.interventions.orthogonalize import export_model, orthogonalize_

__all__ = ["ActAdd", "DirectionAblation", "export_model", "orthogonalize_"]
