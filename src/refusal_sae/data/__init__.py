"""Prompt datasets: typed records, a registry by name, loaders for JSON / JSONL / CSV (optionally gzip-compressed)."""

from refusal_sae.data.limits import PromptLimit
from refusal_sae.data.records import PromptRecord, PromptSet
from refusal_sae.data.registry import DATA_DIR_ENV, dataset_names, default_data_dir, load_dataset

__all__ = ["DATA_DIR_ENV", "PromptLimit", "PromptRecord", "PromptSet", "dataset_names", "default_data_dir", "load_dataset"]
