"""refusal-sae: dissect refusal in chat LLMs with refusal directions and sparse autoencoders.

Import is cheap: heavy modules (torch, transformers) load only when their API is used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
