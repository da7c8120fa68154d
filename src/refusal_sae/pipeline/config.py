"""The pipeline's config file: one typed schema, read from YAML or TOML, checked strictly before any work.

The schema is the stage configs themselves (``DirectionConfig``, ``EvalConfig``, ...), nested under a few top-level
sections::

    model:    {model, adapter, device, dtype, trust_remote_code, offline, system_prompt}   # = ModelSpec
    saes:     {folder} | {release, ids} | {release, id_template, layers}                    # = SaeSource
    data_dir: null          # prompt data (default: found automatically)
    run_dir:  null          # default: runs/<config file name>
    seed:     null          # when set, the seed of every stage section that does not set its own
    judge:    null          # when set, the judge of every stage section that does not set its own; a preference
                            # "harmbench|default" takes the first that can run here (refusal_sae.scoring.judge.choice)
    stages:   [direction, harm_vs_refusal, sae_metrics, calibrate_actadd, eval]              # order of execution
    report:   {examples, path}
    max_prompt_tokens: null # the longest prompt allowed (default: the model's context length)
    <stage>:  the settings of each stage, typed by the stage registry (:mod:`refusal_sae.pipeline.stages`)

Unknown keys are an error naming the key and its section; values are converted and checked by pydantic against the
field types; every stage config's own checks (``__post_init__``) run on load. Torch-free.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from refusal_sae.errors import ConfigError
from refusal_sae.models.options import ModelSpec

TOP_LEVEL = ("model", "saes", "data_dir", "run_dir", "seed", "judge", "stages", "report", "max_prompt_tokens")


@dataclass(frozen=True)
class SaeSource:
    """Where the SAEs come from: a local folder (one sub-folder per SAE saved by sae-lens), a sae-lens release and
    ids, or a release with ``id_template`` formatted for each of ``layers``. Neither: the committed SAEs for the
    embedded model, else ``<run_dir>/saes``."""

    folder: str | None = None
    release: str | None = None
    ids: tuple[str, ...] = ()
    id_template: str | None = None  # e.g. "layer_{layer}/width_65k/canonical"
    layers: tuple[int, ...] = ()
    device: str | None = None  # default: the model's device
    dtype: str | None = None  # default: as saved (sae-lens loads float32)

    def __post_init__(self) -> None:
        if self.folder is not None and (self.release or self.ids or self.id_template):
            raise ConfigError("give either folder or release (+ ids), not both")
        if self.release is None and (self.ids or self.id_template or self.layers):
            raise ConfigError("ids, id_template and layers need a release")
        if self.release is not None:
            if self.ids and self.id_template:
                raise ConfigError("give either ids or id_template + layers, not both")
            if self.id_template and not self.layers:
                raise ConfigError("id_template needs layers")
            if self.id_template and "{layer}" not in self.id_template:
                raise ConfigError(f"id_template {self.id_template!r} has no {{layer}} placeholder")
            if not self.resolved_ids():
                raise ConfigError(f"release {self.release!r} needs ids (or id_template + layers)")

    def resolved_ids(self) -> tuple[str, ...]:
        if self.id_template:
            return tuple(self.id_template.format(layer=L) for L in self.layers)
        return tuple(self.ids)

    def describe(self) -> str:
        if self.release:
            return f"{self.release} [{', '.join(self.resolved_ids())}]"
        return self.folder or "default (committed SAEs of the embedded model, else <run_dir>/saes)"


@dataclass(frozen=True)
class ReportConfig:
    examples: int = 3  # example generations shown per prompt set
    path: str | None = None  # default: <run_dir>/report.html

    def __post_init__(self) -> None:
        if self.examples < 0:
            raise ConfigError(f"examples must be non-negative, got {self.examples}")


@dataclass
class PipelineConfig:
    """A whole run: model, SAEs, data, and each listed stage's settings (``stage_configs[name]``)."""

    model: ModelSpec = field(default_factory=ModelSpec)
    saes: SaeSource = field(default_factory=SaeSource)
    data_dir: str | None = None
    run_dir: str | None = None
    seed: int | None = None
    stages: tuple[str, ...] = ()
    report: ReportConfig = field(default_factory=ReportConfig)
    stage_configs: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # the file it was read from
    judge: str | None = None  # the top-level judge, as chosen here (a preference resolved)
    judge_notes: tuple[str, ...] = ()  # how each judge preference was resolved
    max_prompt_tokens: int | None = None  # longest prompt allowed; None: the model's context length

    def section(self, name: str):
        return self.stage_configs[name]

    def resolved_run_dir(self) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        stem = Path(self.source).stem if self.source else "pipeline"
        return Path("runs") / stem

    def to_dict(self) -> dict:
        """The resolved config as plain data (what ``run`` writes to ``<run_dir>/config.yaml``)."""
        out: dict[str, Any] = {
            "model": dataclasses.asdict(self.model),
            "saes": _plain(dataclasses.asdict(self.saes)),
            "data_dir": self.data_dir, "run_dir": str(self.resolved_run_dir()), "seed": self.seed,
            "stages": list(self.stages), "report": dataclasses.asdict(self.report),
        }
        if self.judge is not None:
            out["judge"] = self.judge
        if self.max_prompt_tokens is not None:  # only when set: older runs' resolved configs stay the same
            out["max_prompt_tokens"] = self.max_prompt_tokens
        for name in self.stages:
            out[name] = _plain(_asdict(self.stage_configs[name]))
        return out


def _asdict(obj):
    if isinstance(obj, list | tuple):
        return [_asdict(o) for o in obj]
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _plain(obj):
    """Tuples as lists (YAML and JSON friendly)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


# --- reading ------------------------------------------------------------------------------------------------
def read_config_file(path: str | Path) -> dict:
    """The raw mapping in a ``.yaml`` / ``.yml`` / ``.toml`` file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    try:
        if path.suffix.lower() == ".toml":
            raw = tomllib.loads(text)  # its errors say "(at line N, column M)"
        elif path.suffix.lower() in (".yaml", ".yml"):
            raw = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: config files are .yaml, .yml or .toml")
    except yaml.MarkedYAMLError as e:  # the mark is where the parser gave up (0-based); the message alone has no line
        mark = e.problem_mark or e.context_mark
        at = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        what = ": ".join(filter(None, (e.context, e.problem)))
        raise ConfigError(f"{path}{at}: not valid YAML: {what or str(e).splitlines()[0]}") from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {str(e).splitlines()[0]}") from None
    if raw is None or raw == {}:  # read as "every default": a full-size run of every stage, which nobody meant
        raise ConfigError(f"config {path} is empty; list at least the stages to run, e.g. stages: [direction, eval]")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict, overrides: typing.Sequence[str]) -> dict:
    """``section.key=value`` assignments (value parsed as YAML: ``8``, ``null``, ``[1, 2]``, ``{a: 1}``); list
    sections take an index or ``*`` (every item): ``eval.*.n=8``, ``eval.0.dataset=harmful_val``."""
    import copy

    import yaml

    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not sep or not parts:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        _assign(raw, parts, value, item)
    return raw


def _assign(node, parts: list[str], value, item: str) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(node, list):
        if head == "*":
            targets = range(len(node))
        else:
            try:
                targets = [int(head)]
                node[targets[0]]
            except (ValueError, IndexError):
                raise ConfigError(f"--set {item}: {head!r} is not an index of a list of {len(node)} items") from None
        for i in targets:
            if rest:
                if node[i] is None:
                    node[i] = {}
                _assign(node[i], rest, value, item)
            else:
                node[i] = value
        return
    if not isinstance(node, dict):
        raise ConfigError(f"--set {item}: {head!r} is inside a setting, not a section")
    if not rest:
        node[head] = value
        return
    if node.get(head) is None:
        node[head] = {}
    _assign(node[head], rest, value, item)


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = (), raw: dict | None = None) -> PipelineConfig:
    """Read, override and check a pipeline config (a file, or an already parsed ``raw`` mapping)."""
    from refusal_sae.pipeline.stages import STAGES, default_stages

    if raw is None:
        raw = read_config_file(path) if path is not None else {}
    raw = apply_overrides(raw, overrides)
    unknown = [k for k in raw if k not in TOP_LEVEL and k not in STAGES]
    if unknown:
        raise ConfigError(f"unknown top-level key {unknown[0]!r}; expected one of {', '.join(TOP_LEVEL)} or a stage "
                          f"section ({', '.join(STAGES)})")
    stages = raw.get("stages")
    if stages is None:
        stages = default_stages()
    if isinstance(stages, str) or not isinstance(stages, list | tuple):
        raise ConfigError(f"stages must be a list of stage names, got {stages!r}")
    for s in stages:
        if s not in STAGES:
            raise ConfigError(f"unknown stage {s!r} in stages; known stages: {', '.join(STAGES)}")
    if not stages:
        raise ConfigError("stages is empty: list the stages to run, e.g. [direction, eval]")
    if len(set(stages)) != len(stages):
        raise ConfigError(f"a stage is listed twice in stages: {list(stages)}")
    seed = convert(int | None, raw.get("seed"), "seed")
    judge = convert(str | None, raw.get("judge"), "judge")
    model = convert(ModelSpec, raw.get("model") or {}, "model")
    choices: dict[str, str] = {}
    stage_configs = {}
    for name, stage in STAGES.items():
        section = raw.get(name)
        if section is None and name not in stages:
            continue
        section = stage.default_section() if section is None else section
        if seed is not None and _has_seed(stage.config_type):
            section = _with_seed(section, seed)
        if _has_field(stage.config_type, "judge"):
            section = _with_judge(section, judge, model, choices, name)
        stage_configs[name] = convert(stage.config_type, section, name)
    if judge is not None:
        judge = _choose(judge, model, choices, "judge")
    return PipelineConfig(
        model=model,
        saes=convert(SaeSource, raw.get("saes") or {}, "saes"),
        data_dir=convert(str | None, raw.get("data_dir"), "data_dir"),
        run_dir=convert(str | None, raw.get("run_dir"), "run_dir"),
        seed=seed, stages=tuple(stages), report=convert(ReportConfig, raw.get("report") or {}, "report"),
        stage_configs=stage_configs, source=None if path is None else str(path), judge=judge,
        judge_notes=tuple(dict.fromkeys(choices.values())), max_prompt_tokens=_max_prompt_tokens(raw))


def _max_prompt_tokens(raw: dict) -> int | None:
    value = convert(int | None, raw.get("max_prompt_tokens"), "max_prompt_tokens")
    if value is not None and value <= 0:
        raise ConfigError(f"max_prompt_tokens must be positive, got {value}")
    return value


def _has_field(tp, name: str) -> bool:
    args = typing.get_args(tp)
    cls = args[0] if typing.get_origin(tp) in (list, tuple) and args else tp
    return dataclasses.is_dataclass(cls) and any(f.name == name for f in dataclasses.fields(cls))


def _has_seed(tp) -> bool:
    return _has_field(tp, "seed")


def _choose(spec, model: ModelSpec, choices: dict[str, str], where: str) -> str:
    """A judge preference (``harmbench|default``) → the first judge that can run here, its note kept in ``choices``."""
    if not isinstance(spec, str) or "|" not in spec:
        return spec
    from refusal_sae.pipeline.facts import hub_offline
    from refusal_sae.scoring.judge.choice import choose_judge

    try:
        chosen, note = choose_judge(spec, model.device, hub_offline(model))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    choices[spec] = f"{note} (from {spec!r})"
    return chosen


def _with_judge(section, judge: str | None, model: ModelSpec, choices: dict[str, str], where: str):
    """The top-level judge fills in ``judge`` where a section (or list item) does not set one; preferences resolved."""
    if isinstance(section, dict):
        spec = section.get("judge", judge)
        return section if spec is None else {**section, "judge": _choose(spec, model, choices, f"{where}.judge")}
    if isinstance(section, list):
        return [_with_judge(s, judge, model, choices, f"{where}[{i}]") for i, s in enumerate(section)]
    return section


def _with_seed(section, seed: int):
    """The top-level seed fills in ``seed`` where a stage section (or list item) does not set one."""
    if isinstance(section, dict):
        return {"seed": seed, **section}
    if isinstance(section, list):
        return [_with_seed(s, seed) for s in section]
    return section


# --- strict conversion ----------------------------------------------------------------------------------------
@cache
def _adapter(tp):
    from pydantic import TypeAdapter

    return TypeAdapter(tp)


def _dataclass_in(tp):
    """The dataclass inside ``tp`` (``X``, ``X | None``), else ``None``."""
    if dataclasses.is_dataclass(tp):
        return tp
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return _dataclass_in(args[0])
    return None


def convert(tp, value, where: str):
    """``value`` (parsed YAML / TOML) as type ``tp``; unknown keys and wrong types raise one clear ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (list, tuple) and (args := typing.get_args(tp)) and dataclasses.is_dataclass(args[0]):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list of {args[0].__name__} settings, got {value!r}")
        items = [convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    cls = _dataclass_in(tp)
    if cls is not None:
        if value is None and cls is not tp:
            return None
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {cls.__name__} settings, got {value!r}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        for key in value:
            if key not in fields:
                raise ConfigError(f"unknown key {key!r} in section {where!r}; known keys: {', '.join(fields)}")
        hints = typing.get_type_hints(cls)
        kwargs = {k: convert(hints[k], v, f"{where}.{k}") for k, v in value.items()}
        try:
            return cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    from pydantic import ValidationError

    try:
        return _adapter(tp).validate_python(value)
    except ValidationError as e:
        first = e.errors()[0]
        raise ConfigError(f"{where}: {first['msg'].lower()} (got {value!r})") from None
