"""CLI options generated from a stage's config dataclass, so a setting is declared once, in its config.

Each field becomes one option named as its YAML key (``n_val`` → ``--n-val``; fields of a nested dataclass, such as
``direction.selection.max_kl``, by their own name, ``--max-kl``), its help the field's trailing comment (or
``field(metadata={"help": ...})``), its default the config's. Lists take comma-separated text (``--top-k 10,20``;
integer lists also take ranges, ``--layers 14-26:3``); the values are then converted and checked by the same code
that reads the YAML (:func:`refusal_sae.pipeline.config.convert`), so the CLI and a config file cannot disagree.
Old option names live on as aliases (``aliases={"clamps": ["--clamp"]}``).

Why typer driven by field metadata rather than a dataclass-to-CLI library (tyro, simple-parsing): every other
command, the shared model options, ``--help`` through rich and the one-line ``error:`` + exit 2 contract are typer's
already; tyro would bring a second parser whose nested names (``--selection.max-kl``) differ from the flat keys
users know, and its own help and error output.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

# help for the settings many configs share, where a config's field carries no comment of its own
COMMON_HELP = {
    "seed": "sampling / random-set seed",
    "max_new_tokens": "greedy tokens per judged answer",
    "batch_size": "prompts per forward batch",
    "judge": "judge of the answers: default | tuned[:PARAMS] | learned | heuristic | substring | harmbench[:MODEL] | "
             "llamaguard[:MODEL] | classifier:MODEL (`refusal-sae judge-eval` measures them)",
    "n_boot": "bootstrap resamples",
}


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: help}`` from the comments beside each field of ``cls`` (and its dataclass bases): the comment on the
    field's line plus the indented comment lines (``#   ...``) right under it."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # no source (frozen app): no help text, still working options
            continue
        body = ast.parse(src).body[0].body
        ends = {node.end_lineno: node.target.id for node in body
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
        starts = sorted(node.lineno for node in body)
        comments = [(t.start[0], t.string.lstrip("#").strip(), t.line.strip().startswith("#"), t.string[:4] == "#   ")
                    for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.COMMENT]
        for line, text, alone, indented in comments:
            if not alone and line in ends:
                docs[ends[line]] = text
            elif alone and indented:  # "#   more": continues the comment of the field just above
                above = max((ln for ln in ends if ln < line), default=None)
                if above is not None and not any(above < s <= line for s in starts) and ends[above] in docs:
                    docs[ends[above]] += " " + text
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            docs[f.name] = f.metadata["help"]
    return docs


def _sentence(text: str) -> str:
    """A field comment as help text: capitalised, ending with a full stop (as the hand-written options read)."""
    text = text.strip().replace("(None: ", "(unset: ").replace("; None: ", "; unset: ")
    text = "Unset: " + text[len("None: "):] if text.startswith("None: ") else text
    first = text.split(" ", 1)[0]
    if text and "_" not in first and ":" not in first:  # names (harmful_train, c:) keep their case
        text = text[0].upper() + text[1:]
    return text + ("" if not text or text.endswith((".", ")", "?")) else ".")


def _strip_optional(tp) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True
    return tp, False


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, tuple | list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


@dataclasses.dataclass(frozen=True)
class Opt:
    """One generated option: the config field it fills (``path``: its place in nested dataclasses)."""

    name: str
    path: tuple[str, ...]
    annotation: Any
    default: Any
    kind: str  # "int_list" | "float_list" | "list" | "scalar" | "flag"


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def config_opts(cls: type, exclude: typing.Iterable[str] = (), aliases: dict[str, list[str]] | None = None,
                help_overrides: dict[str, str] | None = None, _path: tuple[str, ...] = ()) -> list[Opt]:
    """The options of every field of ``cls`` (nested dataclasses flattened), minus ``exclude``."""
    aliases, help_overrides, exclude = aliases or {}, help_overrides or {}, set(exclude)
    hints, docs, opts = typing.get_type_hints(cls), field_docs(cls), []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in exclude or f.metadata.get("cli") is False:
            continue
        tp, optional = _strip_optional(hints[f.name])
        default = _field_default(f)
        if dataclasses.is_dataclass(tp):
            opts += config_opts(tp, exclude, aliases, help_overrides, (*_path, f.name))
            continue
        names = [f"--{f.name.replace('_', '-')}", *aliases.get(f.name, [])]
        help_ = _sentence(help_overrides.get(f.name, docs.get(f.name, COMMON_HELP.get(f.name, ""))))
        if tp is bool:
            decl = typer.Option(f"--{f.name.replace('_', '-')}/--no-{f.name.replace('_', '-')}", *aliases.get(f.name, []),
                                help=help_)
            opts.append(Opt(f.name, (*_path, f.name), Annotated[bool, decl], default, "flag"))
            continue
        origin = typing.get_origin(tp)
        if origin in (tuple, list):
            kind = {int: "int_list", float: "float_list"}.get(typing.get_args(tp)[0], "list")
            if "comma" not in help_:
                help_ = help_.removesuffix(".") + " (comma-separated" + (
                    ", ranges like 14-26:3" if kind == "int_list" else "") + ")."
            ann, shown = Optional[str], _text(default)
        elif tp in (int, float, str):
            kind, ann, shown = "scalar", (Optional[tp] if optional else tp), default
        else:  # Literal, unions of a number and a word ('calibrated', 'search'): text, converted like YAML
            kind, ann, shown = "scalar", Optional[str], _text(default)
        opts.append(Opt(f.name, (*_path, f.name), Annotated[ann, typer.Option(*names, help=help_)], shown, kind))
    return opts


def _value(opt: Opt, text):
    from refusal_sae.cli.common import float_list, int_list, names

    if text is None or opt.kind in ("scalar", "flag"):
        return text
    if opt.kind == "float_list":
        return float_list(text) if text.strip() else ()
    return int_list(text) if opt.kind == "int_list" else list(names(text))


def build_config(cls: type, opts: list[Opt], values: dict, where: str):
    """The config of ``cls`` from the parsed option ``values``, converted and checked as the YAML loader does."""
    from refusal_sae.pipeline.config import convert

    raw: dict = {}
    for opt in opts:
        node = raw
        for key in opt.path[:-1]:
            node = node.setdefault(key, {})
        node[opt.path[-1]] = _value(opt, values[opt.name])
    return convert(cls, raw, where)


def with_config(cls: type, *, exclude: typing.Iterable[str] = (), aliases: dict[str, list[str]] | None = None,
                help_overrides: dict[str, str] | None = None, where: str | None = None):
    """Decorate a command so that it takes one option per field of ``cls`` and receives the built config as its
    ``cfg`` argument (placed where ``cfg`` stands in its signature)."""
    opts = config_opts(cls, exclude, aliases, help_overrides)

    def wrap(fn):
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation), kind=inspect.Parameter.KEYWORD_ONLY)
               for p in sig.parameters.values()]
        at = next(i for i, p in enumerate(own) if p.name == "cfg")
        gen = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default, annotation=o.annotation)
               for o in opts]
        params = [*own[:at], *gen, *own[at + 1:]]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            values = {o.name: kwargs.pop(o.name) for o in opts}
            return fn(*args, cfg=build_config(cls, opts, values, where or fn.__name__.removesuffix("_cmd")), **kwargs)

        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return wrap


@dataclasses.dataclass
class Command:
    """What a stage command gets besides its config: the model to load, the run directory, the data folder, the SAE
    options and the output switches, parsed from the options every stage command shares."""

    spec: Any  # ModelSpec
    run: Any  # RunDir
    data_dir: Any
    as_json: bool
    force: bool = False
    sae_args: tuple = (None, None, None)  # --saes, --sae-release, --sae-ids
    datasets: tuple[str, ...] = ()  # the datasets the stage reads: their prompts are checked against the model

    def load(self):
        """The model; then every prompt of the stage's datasets checked against its context, counted by its own
        tokenizer, before any forward pass."""
        from refusal_sae.pipeline.facts import ModelFacts

        handle = self.spec.load()
        check_prompts(self.datasets, self.data_dir, ModelFacts.from_handle(handle))
        return handle

    def resolve_saes(self, handle):
        """``(spec, SaeSet)`` of the SAE options (default: the run's, else the embedded model's), checked against
        ``handle``."""
        from refusal_sae.saes.loading import resolve_saes

        return resolve_saes(handle, *self.sae_args, self.run.root)

    def saes(self, handle):
        return self.resolve_saes(handle)[1]

    def emit(self, payload: dict) -> None:
        """``--json``: the payload as one JSON line, last."""
        if self.as_json:
            import json

            print(json.dumps(payload))


def stage_datasets(cls: type, cfg) -> tuple[str, ...]:
    """The datasets the pipeline stage whose config is ``cls`` reads with ``cfg`` (the stage registry's list)."""
    from refusal_sae.pipeline.stages import STAGES

    for stage in STAGES.values():
        tp = stage.config_type
        item = typing.get_args(tp)[0] if typing.get_origin(tp) in (list, tuple) else None
        if tp is cls:
            return tuple(stage.datasets(cfg))
        if item is not None and (issubclass(item, cls) or issubclass(cls, item)):  # a stage run once per item (eval)
            return tuple(stage.datasets([cfg]))
    return ()


def check_prompts(datasets: typing.Iterable[str], data_dir, facts) -> None:
    """Each dataset exists and its prompts fit the model ``facts`` describe (what is known of it)."""
    from refusal_sae.data import PromptLimit, load_dataset

    limit = PromptLimit.for_model(facts.context, facts.tokenizer)
    for name in dict.fromkeys(datasets):
        load_dataset(name, data_dir, limit=limit)


def _check_before_work(spec, cfg_cls: type, cfg, data_dir, saes_dir) -> tuple[str, ...]:
    """What a stage command can check before it loads the model: its datasets (prompts against the model's context,
    read from its config and tokenizer when it is a local directory or in the HF cache) and an ``--saes`` folder's
    files."""
    from refusal_sae.models.embedded import EMBEDDED_ALIASES
    from refusal_sae.pipeline.facts import ModelFacts, folder_facts, probe_model
    from refusal_sae.saes.loading import SAE_CFG, _has_saes

    if saes_dir is not None and ((Path(saes_dir) / SAE_CFG).is_file() or _has_saes(Path(saes_dir))):
        folder_facts(Path(saes_dir))  # weights files of the SAEs there (a folder without any: the loader says so)
    datasets = stage_datasets(cfg_cls, cfg)
    if datasets:
        # not the embedded model's: its directory is built on first use (~30 s), not worth it for a check that
        # Command.load makes exactly once the model has loaded
        embedded = spec.model is None or spec.model in EMBEDDED_ALIASES
        check_prompts(datasets, data_dir, ModelFacts(spec.name) if embedded else probe_model(spec))
    return datasets


def _resolve(fn, annotation):
    """A string annotation (``from __future__ import annotations``) evaluated in ``fn``'s module."""
    if not isinstance(annotation, str):
        return annotation
    return eval(annotation, {"Annotated": Annotated, "Optional": Optional, **fn.__globals__})  # noqa: S307  (own source)


def stage_command(cls: type, *, saes: bool = False, force: bool = False, **config_kw):
    """Decorate a stage command ``fn(cfg, cmd, **own options)``: the config's options (:func:`with_config`), the model
    options, ``--run-dir``, ``--data-dir``, ``--json``, and ``--saes/--sae-release/--sae-ids`` (``saes``) and
    ``--force`` (``force``), parsed into ``cfg`` and one :class:`Command`."""
    from refusal_sae.cli.common import (
        DataDirOpt,
        ForceOpt,
        IdsOpt,
        JsonOpt,
        ReleaseOpt,
        RunDirOpt,
        SaesOpt,
        model_options,
        run_dir_for,
    )

    kw = inspect.Parameter.KEYWORD_ONLY
    shared = [("run_dir", RunDirOpt, None), *((("saes", SaesOpt, None), ("sae_release", ReleaseOpt, None),
                                                ("sae_ids", IdsOpt, None)) if saes else ()),
              ("data_dir", DataDirOpt, None), *((("force", ForceOpt, False),) if force else ()),
              ("as_json", JsonOpt, False)]

    def wrap(fn):
        own = [p.replace(annotation=_resolve(fn, p.annotation), kind=kw)
               for p in inspect.signature(fn).parameters.values() if p.name not in ("cfg", "cmd")]

        @functools.wraps(fn)
        def wrapper(*, spec, cfg, **values):
            sae_args = tuple(values.pop(n) for n in ("saes", "sae_release", "sae_ids")) if saes else (None,) * 3
            run, data_dir = run_dir_for(spec, values.pop("run_dir")), values.pop("data_dir")
            datasets = _check_before_work(spec, cls, cfg, data_dir, sae_args[0])
            cmd = Command(spec, run, data_dir, values.pop("as_json"), values.pop("force", False), sae_args, datasets)
            return fn(cfg=cfg, cmd=cmd, **values)

        params = [inspect.Parameter("spec", kw, annotation=Any), inspect.Parameter("cfg", kw, annotation=Any), *own,
                  *(inspect.Parameter(n, kw, default=d, annotation=a) for n, a, d in shared)]
        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return model_options(with_config(cls, **config_kw)(wrapper))

    return wrap
