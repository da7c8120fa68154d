"""A judge *preference*: ``harmbench|default`` means "HarmBench's classifier where it can run here, else the default
judge". The paper configs use it, so a run counts compliance the way the seed papers did when the hub (or a local copy
of the classifier) and a GPU are there, and otherwise says that it fell back.

A classifier judge can run when CUDA is available (``device`` allows it) and its weights are a local folder, in the
local Hugging Face cache, or on a reachable hub (not offline). Offline judges (``default``, ``tuned``, ``learned``,
``heuristic``, ``substring``) can always run. The choice is made once when a config is loaded, so the chosen spec, not
the preference, is what a result's identity and the report name.
"""

from __future__ import annotations

from pathlib import Path

from refusal_sae.errors import ConfigError
from refusal_sae.scoring.judge.base import get_judge

SEPARATOR = "|"


def is_preference(spec: str) -> bool:
    return SEPARATOR in spec


def _weights_reachable(model: str, offline: bool) -> tuple[bool, str]:
    if Path(model).is_dir():
        return True, f"local folder {model}"
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(model, "config.json"), str):
            return True, f"{model} in the local HF cache"
    except Exception:  # noqa: BLE001 (a malformed id is simply not cached)
        pass
    if offline:
        return False, f"{model} is not in the local HF cache and the hub is offline"
    try:
        from huggingface_hub import model_info

        model_info(model, timeout=5)
        return True, f"{model} on the hub"
    except Exception as e:  # noqa: BLE001 (no hub, no such repo, gated: all mean "cannot use it here")
        return False, f"{model} is not in the local HF cache and the hub did not answer ({type(e).__name__})"


def judge_available(spec: str, device: str = "auto", offline: bool = False) -> tuple[bool, str]:
    """Whether the judge ``spec`` can run here, and why (or why not)."""
    from refusal_sae.scoring.judge.classifiers import HFClassifierJudge

    judge = get_judge(spec)  # unknown or malformed: ConfigError; cheap (classifiers load on first use)
    if not isinstance(judge, HFClassifierJudge):
        return True, "runs offline on the CPU"
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return False, "needs a CUDA GPU (none here)" if device != "cpu" else "needs a GPU (device is cpu)"
    return _weights_reachable(judge.model_source, offline)


def choose_judge(spec: str, device: str = "auto", offline: bool = False) -> tuple[str, str | None]:
    """The first judge of a preference ``A|B|...`` that can run here, and a one-line note on the choice (``None``
    for a plain spec)."""
    if not is_preference(spec):
        return spec, None
    options = [s.strip() for s in spec.split(SEPARATOR)]
    if not all(options):
        raise ConfigError(f"judge preference {spec!r} has an empty option")
    skipped = []
    for s in options:
        ok, why = judge_available(s, device, offline)
        if ok:
            note = f"judge: {s} ({why})" + (f"; not {', '.join(skipped)}" if skipped else "")
            return s, note
        skipped.append(f"{s}: {why}")
    raise ConfigError(f"no judge of {spec!r} can run here: " + "; ".join(skipped))
