"""``ModelSpec``: the model options every command shares, as one value (torch-free)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from refusal_sae.models.embedded import EMBEDDED_REFUSING
from refusal_sae.runs.io import slug

DEFAULT_MODEL = EMBEDDED_REFUSING


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how.

    ``model``: ``None`` (the embedded refusing default), an embedded name (``smollm2-135m-refusing``,
    ``smollm2-135m`` for the untuned base), a local HF directory, a ``.gguf`` file, or a hub id.
    ``adapter``: a LoRA adapter directory (peft format) merged into the model; for the embedded names it replaces
    the committed safety adapter. ``offline``: never touch the hub (hub ids must be in the local HF cache).
    """

    model: str | None = None
    adapter: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    offline: bool = False
    system_prompt: str | None = None

    @property
    def name(self) -> str:
        """A readable identity of model + adapter (default run-directory names derive from it)."""
        base = self.model or DEFAULT_MODEL
        return base if self.adapter is None else f"{base}+{Path(self.adapter).as_posix()}"

    def default_run_dir(self) -> Path:
        return Path("runs") / slug(self.name)

    def check(self, where: str = "", device_present: bool = True) -> str | None:
        """The checks that need no model, made before any work: dtype and device names, the device present on this
        machine (``device_present=False``: its absence is returned as a reason instead, for a dry run planning a run
        on another machine), and the adapter's files. Raises a RefusalSaeError."""
        from refusal_sae.models.device import check_dtype, device_unavailable

        check_dtype(self.dtype, f"{where}dtype")
        problem = device_unavailable(self.device, f"{where}device")
        if problem and device_present:
            from refusal_sae.errors import ConfigError

            raise ConfigError(problem)
        if self.adapter is not None:
            from refusal_sae.checks import check_adapter_dir

            check_adapter_dir(self.adapter)
        return problem

    def load(self):
        """Load the model (see :func:`refusal_sae.models.load_model`)."""
        from refusal_sae.models.loading import load_model

        if self.trust_remote_code:  # said once per load, where the user sees it: the repository's code runs here
            import sys

            print(f"warning: trust_remote_code is on: {self.model or DEFAULT_MODEL} may run Python code from its "
                  "repository on this machine", file=sys.stderr, flush=True)
        return load_model(self.model, adapter=self.adapter, device=self.device, dtype=self.dtype,
                          trust_remote_code=self.trust_remote_code, system_prompt=self.system_prompt,
                          local_files_only=self.offline)

    def to_dict(self) -> dict:
        return asdict(self)
