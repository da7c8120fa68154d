"""Load a chat model by HF id, local HF directory, GGUF file, or embedded-default name."""

from __future__ import annotations

import hashlib
from pathlib import Path

from refusal_sae.checks import check_adapter_dir
from refusal_sae.errors import ModelLoadError
from refusal_sae.models.device import DTYPES, check_device, check_dtype
from refusal_sae.models.embedded import EMBEDDED_ALIASES, EMBEDDED_REFUSING, embedded_model_dir, merge_adapter
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.hub import env_offline, hub_reachable, unreachable_reason
from refusal_sae.models.options import DEFAULT_MODEL
from refusal_sae.runs.io import file_sha256


def resolve_device(device: str = "auto"):
    """The torch device; a ConfigError when this machine has no such device (checked before any model is built)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    return torch.device(device.strip().lower())


def resolve_dtype(dtype: str, device) -> object:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    check_dtype(dtype)
    return getattr(torch, DTYPES[dtype])


def _weights_identity(source, gguf_file: str | None, hf_model) -> str | None:
    """A cheap identity of the loaded weights, so run stages keyed on it never reuse another model's results:
    the hub commit, or for local files their names, sizes and modification times (hashing gigabytes of
    weights on every load would cost more than most stages)."""
    commit = getattr(hf_model.config, "_commit_hash", None)
    folder = Path(source)
    if not folder.is_dir():
        return commit
    files = [folder / gguf_file] if gguf_file else sorted(
        p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return "files-" + h.hexdigest()[:16]


def load_model(
    model: str | None = None,
    *,
    adapter: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    system_prompt: str | None = None,
    local_files_only: bool = False,
) -> ModelHandle:
    """Load ``model`` into a :class:`ModelHandle`.

    ``model`` may be ``None`` (the embedded refusing default), an embedded name
    (``smollm2-135m-refusing`` / ``embedded``, or ``smollm2-135m`` for the untuned base), a local HF
    directory, a ``.gguf`` file, or a hub id (needs network or a populated HF cache;
    ``local_files_only=True`` or ``HF_HUB_OFFLINE=1`` never touches the network).
    ``adapter``: a LoRA adapter directory merged into the weights; with an embedded name it takes the place of the
    committed safety adapter (the embedded base plus this adapter).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = model or DEFAULT_MODEL
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    kwargs: dict = {"dtype": dt, "trust_remote_code": trust_remote_code}
    path = Path(spec).expanduser()
    revision, unreachable = None, False
    adapter_dir = None if adapter is None else check_adapter_dir(adapter)
    if spec in EMBEDDED_ALIASES:
        if adapter_dir is None:
            source, name = embedded_model_dir(spec), EMBEDDED_ALIASES[spec]
        else:  # the embedded base with this adapter instead of the committed one
            source, name = embedded_model_dir(EMBEDDED_REFUSING, adapter_dir), f"{spec}+{adapter_dir.name}"
        revision = source.name  # <name>-v<cache format>-<gguf sha>[-<adapter sha>]
        adapter_dir = None  # merged into the cached directory
    elif path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        source, name = path.parent, spec
        kwargs["gguf_file"] = path.name
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a directory but has no config.json: not an HF model directory")
        source, name = path, str(path)
    else:
        source, name = spec, spec
        offline = local_files_only or env_offline()
        # not reachable: load as if offline, so the cache answers at once instead of the hub client's retries
        unreachable = not offline and not hub_reachable()
        if offline or unreachable:
            kwargs["local_files_only"] = True
    try:
        tok_kwargs = {k: v for k, v in kwargs.items() if k in ("gguf_file", "trust_remote_code", "local_files_only")}
        tokenizer = AutoTokenizer.from_pretrained(source, **tok_kwargs)
        hf_model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        hub = (f"not in the local HF cache, and {unreachable_reason()}" if unreachable
               else "and not in the local HF cache (offline)" if kwargs.get("local_files_only")
               else "and the hub could not provide it")
        raise ModelLoadError(f"cannot load model {spec!r}: not an embedded name, not a local directory, {hub}. "
                             f"Details: {str(e).splitlines()[0]}") from e
    if revision is None:
        revision = _weights_identity(source, kwargs.get("gguf_file"), hf_model)
    if adapter_dir is not None:
        hf_model = merge_adapter(hf_model, adapter_dir)
        name = f"{name}+{adapter_dir.name}"
        revision = f"{revision}+adapter-{file_sha256(adapter_dir / 'adapter_model.safetensors')[:16]}"
    hf_model.to(dev)
    return ModelHandle(hf_model, tokenizer, name=name, system_prompt=system_prompt, revision=revision,
                       adapter=None if adapter is None else str(adapter))
