"""Sparse autoencoders on the residual stream: train our own (sae-lens TopK), load sae-lens releases,
measure their quality (FVU, L0, dead latents, loss recovered) and inspect latents."""

from refusal_sae.saes.activations import ActivationSource, PositionFilter, SourceStats, massive_masks
from refusal_sae.saes.corpus import EVAL_DATASETS, TRAIN_DATASETS, CorpusConfig, build_sequences
from refusal_sae.saes.features import FeatureExample, FeatureSummary, top_activations
from refusal_sae.saes.loading import SaeSet, SaeSpec, parse_sae_spec
from refusal_sae.saes.metrics import SaeMetrics, evaluate_saes
from refusal_sae.saes.train import SaeTrainConfig, TrainedSae, save_sae, train_saes

__all__ = ["EVAL_DATASETS", "TRAIN_DATASETS", "ActivationSource", "CorpusConfig", "FeatureExample", "FeatureSummary",
           "PositionFilter", "SaeMetrics", "SaeSet", "SaeSpec", "SaeTrainConfig", "SourceStats", "TrainedSae",
           "build_sequences", "evaluate_saes", "massive_masks", "parse_sae_spec", "save_sae", "top_activations",
           "train_saes"]
