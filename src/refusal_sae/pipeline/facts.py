"""What the checks need to know about the model and the SAEs, found as cheaply as possible.

``run`` takes the facts from the loaded model; ``--dry-run`` reads them without loading weights: the config and
tokenizer of a local directory, of the embedded model's cached directory, or of a hub id already in the local HF
cache. Facts that cannot be had offline are ``None`` and their checks are reported as skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refusal_sae.errors import ConfigError, ModelLoadError
from refusal_sae.models.options import ModelSpec
from refusal_sae.pipeline.config import SaeSource


@dataclass
class ModelFacts:
    name: str
    n_layers: int | None = None
    d_model: int | None = None
    n_post_inst: int | None = None  # post-instruction tokens of the chat template
    note: str = ""  # why some facts are missing
    context: int | None = None  # the longest input in tokens (max_position_embeddings)
    tokenizer: Any = field(default=None, repr=False, compare=False)  # counts the tokens of over-long prompts

    @classmethod
    def from_handle(cls, handle) -> ModelFacts:
        return cls(handle.name, handle.n_layers, handle.d_model, handle.format("x").n_post_inst,
                   context=context_length(handle.config), tokenizer=handle.tokenizer)


def context_length(config) -> int | None:
    """The model's context length from its HF config (``max_position_embeddings``, or an older family's name)."""
    text = getattr(config, "text_config", None) or config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def hub_offline(spec: ModelSpec | None = None) -> bool:
    """Whether the hub must not (or cannot) be used: ``model.offline``, ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``,
    or the hub does not answer (:mod:`refusal_sae.models.hub`: one connection of at most 2 s, once per process)."""
    from refusal_sae.models.hub import env_offline, hub_reachable

    return env_offline() or bool(spec is not None and spec.offline) or not hub_reachable()


def probe_model(spec: ModelSpec) -> ModelFacts:
    """Layers, width and template of the model without loading its weights (``--dry-run``)."""
    from transformers import AutoConfig, AutoTokenizer

    from refusal_sae.models.embedded import EMBEDDED_ALIASES, embedded_model_dir
    from refusal_sae.models.formatting import format_instruction
    from refusal_sae.models.hub import env_offline
    from refusal_sae.models.options import DEFAULT_MODEL

    name = spec.model or DEFAULT_MODEL
    path = Path(name).expanduser()
    # never the model's own code: a check (a dry run above all) must not run a repository's Python
    kwargs: dict = {"trust_remote_code": False}
    if name in EMBEDDED_ALIASES:
        source = embedded_model_dir(name)  # builds the cached directory on first use (~30 s), else instant
    elif path.suffix == ".gguf":
        return ModelFacts(name, note="a .gguf file: its layers are read when the model loads")
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a directory but has no config.json: not an HF model directory")
        source = path
    else:
        source = name
        kwargs["local_files_only"] = True  # a dry run never downloads
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        if "trust_remote_code" in str(e):
            return ModelFacts(name, note="its config needs the repository's own code (trust_remote_code), which a check "
                                         "never runs: checks against its layers are skipped")
        where = "offline" if spec.offline or env_offline() else "a dry run does not download"
        return ModelFacts(name, note=f"not in the local HF cache ({where}): checks against its layers are skipped")
    text = getattr(config, "text_config", None) or config
    facts = ModelFacts(name, getattr(text, "num_hidden_layers", None), getattr(text, "hidden_size", None),
                       context=context_length(config))
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
        facts.n_post_inst = format_instruction(tok, "x", spec.system_prompt).n_post_inst
        facts.tokenizer = tok
    except (OSError, ValueError, ConfigError) as e:
        facts.note = f"tokenizer not available ({str(e).splitlines()[0][:80]}): position checks skipped"
    return facts


@dataclass
class SaeFacts:
    """Per SAE: hook name and widths where known (read from ``cfg.json`` without loading weights)."""

    source: str
    entries: list[dict] = field(default_factory=list)  # {id, hook_name, layer, d_in, d_sae, cached}
    model: str | None = None  # the model a release was trained on (sae-lens directory)
    note: str = ""


def _layer_of(hook: str | None) -> int | None:
    if hook and hook.startswith("blocks."):
        try:
            return int(hook.split(".")[1])
        except ValueError:
            return None
    return None


def folder_facts(folder: Path, given: bool = True) -> SaeFacts:
    """Every SAE sub-folder's ``cfg.json`` (or ``folder`` itself when it is one), and its weights file checked to be
    complete safetensors (sae-lens would fail on a damaged one only when it loads it, after the model)."""
    from refusal_sae.checks import check_safetensors
    from refusal_sae.saes.loading import SAE_CFG, SAE_WEIGHTS

    subs = [folder] if (folder / SAE_CFG).is_file() else sorted(
        p for p in folder.iterdir() if p.is_dir() and (p / SAE_CFG).is_file()) if folder.is_dir() else []
    if not subs and not given:
        raise ConfigError(f"no SAEs: saes.folder and saes.release are not set and {folder} holds none; point saes.folder "
                          "at a folder of SAEs (one sub-folder per SAE as sae-lens saves them) or name a sae-lens release")
    if not subs:
        raise ConfigError(f"saes.folder {folder}: no SAEs there (expected sub-folders with {SAE_CFG}, as sae-lens "
                          "saves them or `refusal-sae train-sae` writes them)")
    facts = SaeFacts(str(folder))
    for sub in subs:
        try:
            cfg = json.loads((sub / SAE_CFG).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{sub / SAE_CFG}: unreadable ({e})") from None
        if not isinstance(cfg, dict):
            raise ConfigError(f"{sub / SAE_CFG}: expected a JSON object of SAE settings")
        check_safetensors(sub / SAE_WEIGHTS, f"SAE {sub.name}")
        hook = (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name")
        facts.entries.append({"id": sub.name, "hook_name": hook, "layer": _layer_of(hook), "d_in": cfg.get("d_in"),
                              "d_sae": cfg.get("d_sae"), "cached": True})
    return facts


def _hub_cache() -> Path:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return Path(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return Path.home() / ".cache" / "huggingface" / "hub"


def _cached(repo_id: str, path: str) -> bool:
    repo = _hub_cache() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return repo.is_dir() and any((snap / path).exists() for snap in repo.iterdir())


def release_facts(src: SaeSource) -> SaeFacts:
    """A sae-lens release's ids checked against sae-lens' own directory (shipped with it, offline), and whether each
    SAE is already in the local HF cache."""
    from refusal_sae.saes.lens import sae_lens_imports

    with sae_lens_imports():
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    directory = get_pretrained_saes_directory()
    if src.release not in directory:
        import difflib

        close = difflib.get_close_matches(src.release, list(directory), n=4, cutoff=0.6)
        raise ConfigError(f"unknown sae-lens release {src.release!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    rel = directory[src.release]
    facts = SaeFacts(src.release, model=rel.model)
    for sae_id in src.resolved_ids():
        if sae_id not in rel.saes_map:
            near = [i for i in rel.saes_map if i.split("/")[0] == sae_id.split("/")[0]][:4]
            raise ConfigError(f"sae-lens release {src.release!r} has no SAE {sae_id!r}" +
                              (f"; at that layer: {', '.join(near)}" if near else ""))
        layer = _release_layer(sae_id)
        facts.entries.append({"id": sae_id, "hook_name": None if layer is None else f"blocks.{layer}.hook_resid_post",
                              "layer": layer, "d_in": None, "d_sae": None,
                              "cached": _cached(rel.repo_id, rel.saes_map[sae_id])})
    return facts


def _release_layer(sae_id: str) -> int | None:
    """The layer in a release id: ``layer_12/width_65k/canonical`` (Gemma Scope), ``l12r_8x`` (Llama Scope)."""
    import re

    m = re.match(r"^(?:layer_|blocks\.|l)(\d+)", sae_id)
    return int(m.group(1)) if m else None


def offline_release_error(src: SaeSource, missing: list[str]) -> ModelLoadError:
    return ModelLoadError(
        f"SAE release {src.release} is not in the local HF cache ({len(missing)} of {len(src.resolved_ids())} ids missing, "
        f"e.g. {missing[0]}) and the hub is unreachable (offline). Download it where the hub is reachable "
        "(it is then cached), or point the config at a local copy: saes: {folder: DIR} with one sub-folder per SAE "
        "as sae-lens saves them (cfg.json + sae_weights.safetensors), e.g. --saes DIR")


def sae_facts(src: SaeSource, default_folder: Path) -> SaeFacts:
    if src.release:
        return release_facts(src)
    if src.folder:
        return folder_facts(Path(src.folder))
    return folder_facts(default_folder, given=False)
