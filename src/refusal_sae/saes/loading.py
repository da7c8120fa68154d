"""``SaeSet``: SAEs keyed by hook name, from a sae-lens release or from directories saved by sae-lens.

A folder of SAEs holds one sub-folder per SAE (``cfg.json`` + ``sae_weights.safetensors``, as written by
``save_inference_model``); ``refusal-sae train-sae`` writes exactly that. The hook name comes from
``sae.cfg.metadata.hook_name``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from refusal_sae.checks import check_safetensors
from refusal_sae.errors import ConfigError, MismatchError, ModelLoadError
from refusal_sae.models.hooks import hook_name, parse_hook_point
from refusal_sae.saes.lens import sae_lens_imports

SAE_CFG = "cfg.json"
SAE_WEIGHTS = "sae_weights.safetensors"
TRAINING_CONFIG = "training_config.json"
# SAEs trained by `refusal-sae train-sae` on the embedded refusing model and shipped with the package
EMBEDDED_SAE_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "saes" / "smollm2-135m-refusing"


def _has_saes(folder: Path) -> bool:
    return folder.is_dir() and any((p / SAE_CFG).is_file() for p in folder.iterdir() if p.is_dir())


def default_sae_folder(handle, run_saes: Path) -> Path:
    """``<run>/saes`` when it holds SAEs; else, for the embedded refusing model, the committed SAEs.

    Committed SAEs are checked against the loaded weights (``model_revision`` in each ``training_config.json``):
    SAEs of another adapter version would silently describe another model.
    """
    from refusal_sae.models.embedded import EMBEDDED_REFUSING

    if _has_saes(run_saes) or handle.name != EMBEDDED_REFUSING:
        return run_saes
    for sub in sorted(p for p in EMBEDDED_SAE_DIR.iterdir() if p.is_dir()) if EMBEDDED_SAE_DIR.is_dir() else []:
        info = json.loads((sub / TRAINING_CONFIG).read_text())
        if info["config"].get("model_revision") != handle.revision:
            raise MismatchError(f"committed SAE {sub.name} was trained on {info['config'].get('model_revision')}, "
                                f"but the embedded model is {handle.revision}; retrain with the command in "
                                f"{sub / TRAINING_CONFIG}")
    return EMBEDDED_SAE_DIR if _has_saes(EMBEDDED_SAE_DIR) else run_saes


def _layer_key(key: str | int) -> str:
    return hook_name(key) if isinstance(key, int) else key


class SaeSet(Mapping):
    """Mapping hook name → ``sae_lens.SAE``; also indexable by layer (``saes[12]`` = ``blocks.12.hook_resid_post``)."""

    def __init__(self) -> None:
        self._saes: dict = {}
        self.sources: dict[str, str] = {}

    def add(self, sae, source: str) -> None:
        name = sae.cfg.metadata.hook_name
        if not name:
            raise MismatchError(f"SAE from {source} records no hook name (cfg.metadata.hook_name); cannot place it in the model")
        if name in self._saes:
            raise ConfigError(f"two SAEs for {name}: {self.sources[name]} and {source}")
        self._saes[name] = sae
        self.sources[name] = source

    # --- Mapping ---------------------------------------------------------------------------------
    def __getitem__(self, key: str | int):
        return self._saes[_layer_key(key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._saes)

    def __len__(self) -> int:
        return len(self._saes)

    def __contains__(self, key) -> bool:
        return isinstance(key, str | int) and _layer_key(key) in self._saes

    def at_layer(self, layer: int, kind: str = "resid_post"):
        """The SAE at ``blocks.{layer}.hook_{kind}``, or a ConfigError naming the available ones."""
        name = hook_name(layer, kind)
        if name not in self._saes:
            raise ConfigError(f"no SAE for {name}; available: {', '.join(self._saes) or 'none'}")
        return self._saes[name]

    # --- construction ----------------------------------------------------------------------------
    @classmethod
    def from_release(cls, release: str, ids: Sequence[str], device: str = "cpu", dtype: str = "float32") -> SaeSet:
        with sae_lens_imports():
            from sae_lens import SAE

        if not ids:
            raise ConfigError(f"no SAE ids given for release {release!r}")
        out = cls()
        for sae_id in ids:
            try:
                sae = SAE.from_pretrained(release, sae_id, device=device, dtype=dtype)
            except (ValueError, KeyError) as e:
                raise ConfigError(f"sae-lens release {release!r} has no SAE {sae_id!r}: {str(e).splitlines()[0]}") from e
            except OSError as e:
                raise ModelLoadError(f"cannot download SAE {release}/{sae_id} (offline?): {str(e).splitlines()[0]}") from e
            out.add(sae, f"{release}/{sae_id}")
        return out

    @classmethod
    def from_dirs(cls, dirs: Sequence[str | Path], device: str = "cpu", dtype: str | None = None) -> SaeSet:
        with sae_lens_imports():
            from sae_lens import SAE

        out = cls()
        for d in dirs:
            d = Path(d)
            if not (d / SAE_CFG).is_file():
                raise ConfigError(f"{d} is not an SAE directory saved by sae-lens (no {SAE_CFG})")
            check_safetensors(d / SAE_WEIGHTS, f"SAE {d.name}")  # sae-lens' own error on a damaged file is a traceback
            try:
                sae = SAE.load_from_disk(d, device=device, dtype=dtype)
            except (ValueError, KeyError, OSError) as e:
                raise ModelLoadError(f"cannot load the SAE in {d}: {str(e).splitlines()[0]}") from e
            out.add(sae, str(d))
        return out

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu", dtype: str | None = None) -> SaeSet:
        """Every sub-folder holding a saved SAE (or ``folder`` itself when it is one)."""
        folder = Path(folder)
        if (folder / SAE_CFG).is_file():
            return cls.from_dirs([folder], device, dtype)
        subs = sorted(p for p in folder.iterdir() if p.is_dir() and (p / SAE_CFG).is_file()) if folder.is_dir() else []
        if not subs:
            raise ConfigError(f"no SAEs in {folder} (expected sub-folders with {SAE_CFG}); train some with "
                              "`refusal-sae train-sae` or pass --sae-release/--sae-ids")
        return cls.from_dirs(subs, device, dtype)

    # --- checks ----------------------------------------------------------------------------------
    def validate(self, handle) -> None:
        """Each SAE's width matches the model's d_model and its hook point exists in the model."""
        for name, sae in self._saes.items():
            if sae.cfg.d_in != handle.d_model:
                raise MismatchError(f"SAE for {name} ({self.sources[name]}) has d_in {sae.cfg.d_in} but model "
                                    f"{handle.name} has d_model {handle.d_model}")
            try:
                parse_hook_point(name, handle.n_layers)
            except ConfigError as e:
                raise MismatchError(f"SAE {self.sources[name]} does not fit model {handle.name}: {e}") from None

    def layers(self, kind: str = "resid_post") -> tuple[int, ...]:
        """The layers that have an SAE at ``blocks.L.hook_{kind}``, sorted."""
        return tuple(sorted(p.layer for p in (parse_hook_point(n, 10**6) for n in self._saes) if p.kind == kind))

    def hook_of(self, layer: int, kind: str = "resid_post") -> str:
        self.at_layer(layer, kind)
        return hook_name(layer, kind)

    def identity(self) -> list[dict]:
        """What a result computed with these SAEs depends on: each hook, its source and (local files) weights hash.

        A local SAE is named by its folder's name and its weights' hash, not its absolute path: the same SAEs in a
        moved checkout, another clone or a copied run directory give the same identity (results stay complete);
        different weights under the same name do not. A release SAE is named by its release id."""
        from refusal_sae.runs import file_sha256

        out = []
        for name in sorted(self._saes):
            weights = Path(self.sources[name]) / SAE_WEIGHTS
            local = weights.is_file()
            out.append({"hook_name": name, "source": Path(self.sources[name]).name if local else self.sources[name],
                        "sha256": file_sha256(weights) if local else None})
        return out

    def describe(self) -> list[dict]:
        return [{"hook_name": n, "source": self.sources[n], "d_in": s.cfg.d_in, "d_sae": s.cfg.d_sae,
                 "architecture": s.cfg.architecture()} for n, s in self._saes.items()]


@dataclass(frozen=True)
class SaeSpec:
    """Where the CLI takes SAEs from: a folder of saved SAEs, or a sae-lens release and ids."""

    folder: Path | None = None
    release: str | None = None
    ids: tuple[str, ...] = field(default=())

    def load(self, device: str = "cpu") -> SaeSet:
        if self.release is not None:
            return SaeSet.from_release(self.release, self.ids, device)
        return SaeSet.from_folder(self.folder, device)

    def describe(self) -> str:
        return f"{self.release} [{', '.join(self.ids)}]" if self.release else str(self.folder)


def resolve_saes(handle, saes: str | Path | None, release: str | None, ids: str | None, run_root: Path,
                 device: str | None = None) -> tuple[SaeSpec, SaeSet]:
    """The SAEs a command names (``--saes DIR`` or ``--sae-release R --sae-ids a,b``; by default ``<run>/saes``, else
    the embedded model's committed SAEs), loaded and checked against the model (width, hook layers)."""
    default = None if saes or release or ids else default_sae_folder(handle, Path(run_root) / "saes")
    spec = parse_sae_spec(saes, release, ids, default_folder=default)
    sae_set = spec.load(device or str(handle.device))
    sae_set.validate(handle)
    return spec, sae_set


def parse_sae_spec(saes: str | Path | None, release: str | None, ids: str | None,
                   default_folder: Path | None = None) -> SaeSpec:
    """``--saes DIR`` or ``--sae-release R --sae-ids a,b`` (else ``default_folder``)."""
    id_list = tuple(i.strip() for i in (ids or "").split(",") if i.strip())
    if saes is not None and (release or id_list):
        raise ConfigError("give either --saes DIR or --sae-release/--sae-ids, not both")
    if release:
        if not id_list:
            raise ConfigError(f"--sae-release {release} needs --sae-ids, e.g. layer_12/width_16k/canonical")
        return SaeSpec(release=release, ids=id_list)
    if id_list:
        raise ConfigError("--sae-ids needs --sae-release")
    folder = Path(saes) if saes is not None else default_folder
    if folder is None:
        raise ConfigError("no SAEs given: pass --saes DIR or --sae-release R --sae-ids a,b")
    return SaeSpec(folder=folder)
