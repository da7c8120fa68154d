"""Model handles: loading, chat formatting with token positions, TransformerLens-named hooks."""

from refusal_sae.models.formatting import FormattedPrompt, PromptBatch
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hooks import HookPoint, hook_name, parse_hook_point
from refusal_sae.models.loading import DEFAULT_MODEL, load_model

__all__ = ["DEFAULT_MODEL", "FormattedPrompt", "HookPoint", "ModelHandle", "PromptBatch", "hook_name",
           "load_model", "parse_hook_point"]
