"""Sparse autoencoders on the residual stream: train our own (sae-lens TopK), load sae-lens releases,
measure their quality (FVU, L0, dead latents, loss recovered) and inspect latents.

Exports load lazily: ``from refusal_sae.saes.config import SaeTrainConfig`` stays torch-free.
"""

from refusal_sae._lazy import lazy_exports

_EXPORTS = {
    "ActivationSource": "activations", "SourceStats": "activations", "massive_masks": "activations",
    "CorpusConfig": "config", "PositionFilter": "config", "SaeTrainConfig": "config",
    "TRAIN_DATASETS": "config", "build_sequences": "corpus",
    "FeatureExample": "features", "FeatureSummary": "features", "top_activations": "features",
    "SaeSet": "loading", "SaeSpec": "loading", "parse_sae_spec": "loading",
    "SaeMetrics": "metrics", "evaluate_saes": "metrics",
    "TrainedSae": "train", "save_sae": "train", "train_saes": "train",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
