"""Model handles: loading, chat formatting with token positions, TransformerLens-named hooks.

Exports load lazily: ``from refusal_sae.models.options import ModelSpec`` stays torch-free.
"""

from refusal_sae._lazy import lazy_exports

_EXPORTS = {
    "FormattedPrompt": "formatting", "PromptBatch": "formatting", "ModelHandle": "handle",
    "HookPoint": "hooks", "hook_name": "hooks", "parse_hook_point": "hooks",
    "load_model": "loading", "DEFAULT_MODEL": "options", "ModelSpec": "options",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
