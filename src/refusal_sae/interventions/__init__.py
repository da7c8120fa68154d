"""Interventions on the residual stream: directional ablation, activation addition, SAE feature clamps (error term
kept), weight orthogonalisation, and the batched engine every causal test goes through.

Exports load lazily: ``from refusal_sae.interventions.spec import check_intervention`` stays torch-free.
"""

from refusal_sae._lazy import lazy_exports

_EXPORTS = {
    "Intervention": "base", "InterventionSet": "base", "SaeIntervention": "base", "set_hooks": "base",
    "ActAdd": "directional", "DirectionAblation": "directional",
    "EngineConfig": "engine", "InterventionEngine": "engine", "row_routed_hooks": "engine",
    "direction_interventions": "factory", "FeatureClamp": "feature_clamp", "FeatureClampFrom": "feature_clamp",
    "FeatureSteer": "feature_steer",
    "export_model": "orthogonalize", "orthogonalize_": "orthogonalize",
    "DIRECTION_INTERVENTIONS": "spec", "check_intervention": "spec",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
