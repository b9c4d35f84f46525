"""What the commands share: click options derived from the config dataclasses
(:mod:`qnas.settings`) — the name, type, choices, help text and shown default of every option
come from the dataclass field, so no default is written twice. ``--config FILE`` starts from a
run's ``config.json``; options given on the command line override it; ``--print-config`` prints
the resolved config and exits.

**One meaning per option name**, in every command (``tests/test_cli_options.py`` walks every
``--help`` and holds them to :data:`MEANINGS`):

- ``--device``: the TARGET hardware a latency is predicted for — a name from ``qnas devices``;
- ``--accelerator``: the hardware THIS process runs on — ``auto``, ``cpu`` or ``cuda``;
- ``--input-shape``: an input shape N×C×H×W (``1x3x224x224``);
- ``--batch-size``: images per step (or per timed call);
- ``--threads``: torch intra-op threads; its default follows the one thread policy
  (:mod:`qnas.runtime.threads`) by what the command does: training, timing or benchmarking;
- ``-q/--quiet`` and ``-v/--verbose``: how much a run prints while it goes on
  (:data:`QUIET_HELP`, :data:`VERBOSE_HELP`);
- ``--format``: the final summary as a table (people), JSON or CSV (programs), on stdout.

An old spelling keeps working for one release as a hidden option that prints a one-line
deprecation note on stderr (:func:`deprecated_option`, ``config_options(deprecated=...)``).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing

import click
from click.core import ParameterSource

from ..runtime.accelerator import ACCELERATOR_HELP, ACCELERATORS
from ..runtime.threads import DEFAULT_TEXT, THREADS_HELP
from ..settings import default_of, from_dict, read_config, to_dict

_SIMPLE = (bool, int, float, str)

QUIET_HELP = ("Print only the final summary, warnings and errors (no progress bar, no "
              "per-epoch lines); run.log still gets everything.")
VERBOSE_HELP = ("Print more: debug lines too (every checkpoint written, the resolved "
                "settings); run.log has them always.")
FORMATS = ("table", "json", "csv")

# the meaning of each shared option name: a phrase its help text must contain, in every command
# (``--format``, ``-q/--quiet`` and ``-v/--verbose`` are held to their form instead: the same
# choices, flags with the same short names)
MEANINGS = {
    "--device": "qnas devices",          # or choices that are all device names
    "--accelerator": "accelerator",
    "--input-shape": "shape",
    "--batch-size": "batch",
    "--threads": "threads",              # and a [default: ...] of the thread policy
    "--keep-checkpoints": "checkpoints",
    "--tensorboard": "TensorBoard",
}
# spellings that meant something else, or the same thing under another name: hidden now
RETIRED = {"--input": "--input-shape", "--batch": "--batch-size"}


def threads_help(purpose: str) -> str:
    """The one help text of ``--threads`` for a command that trains, times or benchmarks
    (``purpose`` of :mod:`qnas.runtime.threads`)."""
    return f"{THREADS_HELP} [default: {DEFAULT_TEXT[purpose]}]."


def note(message: str) -> None:
    """One line on stderr (deprecations, mapped settings)."""
    click.echo(f"qnas: note: {message}", err=True)


def _deprecation_callback(old: str, new: str, target: str, convert=None):
    def callback(context: click.Context, param: click.Parameter, value):
        if value is None or context.get_parameter_source(param.name) in (
                None, ParameterSource.DEFAULT):
            return value
        note(f"{old} is deprecated and will be removed in the next release; use {new}")
        context.meta.setdefault("qnas.aliases", {})[target] = (
            old, new, convert(value) if convert else value)
        return value
    return callback


def deprecated_option(old: str, new: str, target: str, type=None, is_flag: bool = False,
                      convert=None):
    """Decorator: a hidden option ``old`` standing for ``new`` (parameter ``target``) for one
    release. When given it prints a deprecation note and its value goes to ``target`` where
    ``new`` is not given (both at once: one error line). Works on any command: the command's
    function receives ``target`` already filled in."""
    dest = f"_old_{old.lstrip('-').replace('-', '_')}_for_{target}"
    option = click.option(old, dest, default=None, type=type, is_flag=is_flag or None,
                          hidden=True, expose_value=False,
                          callback=_deprecation_callback(old, new, target, convert))

    def decorate(function):
        @functools.wraps(function)
        def with_aliases(*args, **kwargs):
            take_aliases(kwargs)
            return function(*args, **kwargs)
        return option(with_aliases)
    return decorate


def take_aliases(params: dict) -> dict:
    """Fill the parameters of ``params`` (a command's keyword arguments) that were given only
    under an old spelling; refuse both spellings at once (one line)."""
    context = click.get_current_context()
    for target, (old, new, value) in context.meta.get("qnas.aliases", {}).items():
        source = context.get_parameter_source(target)
        if source not in (None, ParameterSource.DEFAULT) and params.get(target) is not None:
            raise click.UsageError(f"give {new} only ({old} is its old spelling)")
        params[target] = value
        context.meta.setdefault("qnas.given", set()).add(target)
    return params


def _given(context: click.Context, name: str) -> bool:
    return name in context.meta.get("qnas.given", set()) or \
        context.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)


def _base_type(annotation):
    """int / float / str / bool of an annotation like ``int | None``; None when it has
    several (``float | list[float] | str``: taken as str)."""
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or \
        typing.get_origin(annotation) is typing.Union else (annotation,)
    kinds = [a for a in args if a is not type(None)]
    if len(kinds) == 1 and kinds[0] in _SIMPLE:
        return kinds[0]
    return str


def cli_fields(cls):
    """``(field, owner class)`` of every field the CLI offers, nested configs flattened."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        inner = hints[f.name]
        if dataclasses.is_dataclass(inner):
            yield from cli_fields(inner)
            continue
        yield f, cls


def _option_name(f) -> str:
    return f.metadata.get("option") or "--" + f.name.replace("_", "-")


def _shown_default(f, cls) -> str | None:
    shown = f.metadata.get("shown")
    if shown is not None:
        return shown
    value = default_of(cls, f.name)
    if value is None or value is dataclasses.MISSING:
        return None
    if isinstance(value, bool):
        return _option_name(f) if value else (f.metadata.get("flag") or None)
    return str(value)


def _make_option(f, cls, name: str | None = None, purpose: str | None = None,
                 help_text: str | None = None):
    kind = _base_type(typing.get_type_hints(cls)[f.name])
    names = [name or _option_name(f), *f.metadata.get("aliases", ())]
    shown = _shown_default(f, cls)
    help_text = (help_text or f.metadata.get("help", "")) + (
        f"  [default: {shown}]" if shown else "")
    if f.name == "threads" and purpose is not None:
        help_text = threads_help(purpose)
    if kind is bool:
        flag = f.metadata.get("flag")
        decls = [f"{names[0]}/{flag}"] if flag else names
        return click.option(*decls, f.name, default=None, help=help_text,
                            is_flag=not flag or None)
    choices = f.metadata.get("choices")
    click_type = click.Choice(list(choices)) if choices else kind
    return click.option(*names, f.name, default=None, type=click_type, help=help_text,
                        metavar=f.metadata.get("metavar"))


def config_options(cls, exclude: tuple[str, ...] = (), rename: dict | None = None,
                   deprecated: dict | None = None, purpose: str | None = None,
                   helps: dict | None = None):
    """Decorator: one option per CLI field of ``cls`` (and of its nested configs), plus
    ``--config FILE`` and ``--print-config``.

    ``rename``: field → the option's name here, where the field's own name would mean something
    else in qnas's vocabulary (``{"batch": "--batch-size"}``). ``deprecated``: field → old
    spellings, accepted for one release with a note. ``purpose``: the thread policy a
    ``threads`` field follows (its help text). ``helps``: field → help text, where the field's
    own text would not say what the option means in this command."""
    rename, deprecated, helps = dict(rename or {}), dict(deprecated or {}), dict(helps or {})

    def decorate(function):
        options = []
        for f, owner in cli_fields(cls):
            if f.name in exclude:
                continue
            option = _make_option(f, owner, rename.get(f.name), purpose, helps.get(f.name))
            options.append(option)
            new = rename.get(f.name) or _option_name(f)
            kind = _base_type(typing.get_type_hints(owner)[f.name])
            choices = f.metadata.get("choices")
            for old in deprecated.get(f.name, ()):
                options.append(deprecated_option(
                    old, new, f.name, type=click.Choice(list(choices)) if choices else
                    (None if kind is bool else kind), is_flag=kind is bool))
        options.append(click.option("--config", "config_file", default=None,
                                    type=click.Path(dir_okay=False),
                                    help="Start from this config.json (a run's, to repeat it); "
                                         "options given here override it."))
        options.append(click.option("--print-config", is_flag=True,
                                    help="Print the resolved config as JSON and exit."))
        for option in reversed(options):
            function = option(function)
        return function
    return decorate


def resolve_config(cls, params: dict, fixed: dict | None = None, exclude: tuple = (),
                   finish=None):
    """The config a command runs with: ``cls``'s defaults ← ``--config`` file ← options given
    on the command line ← ``fixed``, then ``finish(config)`` if given. ``params`` are the
    command's keyword arguments (the config-related ones are removed from it). With
    ``--print-config`` the config is printed as JSON and the command ends here."""
    context = click.get_current_context()
    take_aliases(params)
    config_file = params.pop("config_file", None)
    print_config = params.pop("print_config", False)
    data = _read_config_data(cls, config_file) if config_file else {}
    hints = typing.get_type_hints(cls)
    nested = {f.name: hints[f.name] for f in dataclasses.fields(cls)
              if dataclasses.is_dataclass(hints[f.name])}
    for f, owner in list(cli_fields(cls)):
        if f.name in exclude:
            continue
        value = params.pop(f.name, None)
        if not _given(context, f.name) or value is None:
            continue
        if owner is cls:
            data[f.name] = value
        else:
            parent = next(name for name, kind in nested.items() if kind is owner)
            data.setdefault(parent, {})[f.name] = value
    data.update(fixed or {})
    config = from_dict(cls, data, f"--config {config_file}" if config_file else None)
    if finish is not None:
        config = finish(config)
    if print_config:
        click.echo(json.dumps(to_dict(config), indent=2))
        raise click.exceptions.Exit(0)
    return config


def _read_config_data(cls, path) -> dict:
    """A ``--config`` file as a mapping of ``cls``'s settings; a file written by an older qnas
    is mapped to today's keys by ``cls.upgrade(data)`` (with a note on stderr)."""
    config = read_config(cls, path)             # every error in one line, as before
    upgrade = getattr(cls, "upgrade", None)
    if upgrade is None:
        return to_dict(config)
    raw = _raw_mapping(path)
    data, notes = upgrade(raw)
    for line in notes:
        note(f"--config {path}: {line}")
    return to_dict(from_dict(cls, data, f"--config {path}"))


def _raw_mapping(path) -> dict:
    from pathlib import Path

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return dict(yaml.safe_load(text) or {})
    return dict(json.loads(text))


def _stack(options):
    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


def verbosity_options(function=None):
    """``-q/--quiet`` and ``-v/--verbose``, with one meaning everywhere."""
    decorate = _stack([
        click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP),
        click.option("-v", "--verbose", is_flag=True, help=VERBOSE_HELP),
    ])
    return decorate(function) if function is not None else decorate


def format_option(function=None, *, what: str = "the final summary", csv: str = "the per-epoch "
                  "log"):
    """``--format table|json|csv``: how the final summary is printed on stdout (json/csv: only
    that on stdout; the run's messages go to stderr)."""
    decorate = click.option(
        "--format", "output_format", default="table", show_default=True,
        type=click.Choice(list(FORMATS)),
        help=f"How {what} is printed: a table for people, json (the final summary as one "
             f"JSON object) or csv ({csv}); with json/csv, progress lines go to stderr.")
    return decorate(function) if function is not None else decorate


def run_options(function=None, *, out_default: str = "runs/<space>-<device>-<budget>-s<seed>"):
    """``--out``, ``--resume``, ``--stop-after``, ``-q/--quiet``, ``-v/--verbose``: what every
    resumable run takes."""
    decorate = _stack([
        click.option("--out", default=None, type=click.Path(file_okay=False),
                     help=f"Run folder  [default: {out_default}]"),
        click.option("--resume", is_flag=True,
                     help="Continue the run in --out from its newest good checkpoint."),
        click.option("--stop-after", default=None, type=int,
                     help="Stop after this many epochs in this invocation (resume later)."),
        click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP),
        click.option("-v", "--verbose", is_flag=True, help=VERBOSE_HELP),
    ])
    return decorate(function) if function is not None else decorate


def threads_option(purpose: str):
    """``--threads N`` with the one help text of ``purpose`` (training, measuring, benchmark)."""
    return click.option("--threads", default=None, type=click.IntRange(min=1),
                        help=threads_help(purpose))


def accelerator_option(default: str = "auto"):
    """``--accelerator auto|cpu|cuda``: where the work runs (not the target --device)."""
    return click.option("--accelerator", default=default, show_default=True,
                        type=click.Choice(list(ACCELERATORS)), help=ACCELERATOR_HELP)


def input_shape_option(default: str | None = None, shown: str | None = None):
    """``--input-shape NxCxHxW`` (the old ``--input`` accepted for one release)."""
    help_text = "Input shape N×C×H×W, e.g. 1x3x224x224" + (
        f"  [default: {shown}]" if shown else "")
    decorate = _stack([
        click.option("--input-shape", "input_shape", default=default, metavar="NxCxHxW",
                     help=help_text, show_default=default is not None and shown is None),
        deprecated_option("--input", "--input-shape", "input_shape"),
    ])
    return decorate


def device_help(extra: str = "") -> str:
    """The help of ``--device``: the target hardware, a name from 'qnas devices'."""
    return "Target device (a name from 'qnas devices')" + (f"{extra}" if extra else ".")


def frame_text(frame) -> str:
    """A pandas table for the terminal (no index, wide)."""
    import pandas as pd

    with pd.option_context("display.max_colwidth", 120, "display.width", 200):
        return frame.to_string(index=False)


def parse_shape(text: str | None):
    """``1x3x224x224`` → a shape tuple (None stays None; a bad shape is one line)."""
    if text is None:
        return None
    from ..predictors.kernels import parse_input_shape

    return parse_input_shape(text)
