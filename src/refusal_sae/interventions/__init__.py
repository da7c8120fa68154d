"""Interventions on the residual stream: directional ablation, activation addition, weight orthogonalisation."""

from refusal_sae.interventions.base import Intervention, InterventionSet
from refusal_sae.interventions.directional import ActAdd, DirectionAblation
from refusal_sae.interventions.engine import EngineConfig, InterventionEngine
from refusal_sae.interventions.feature_clamp import FeatureClamp
from refusal_sae.interventions.orthogonalize import export_model, orthogonalize_

__all__ = ["ActAdd", "DirectionAblation", "EngineConfig", "FeatureClamp", "Intervention", "InterventionEngine",
           "InterventionSet", "export_model", "orthogonalize_"]
