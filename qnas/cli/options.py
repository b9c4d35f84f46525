"""What the commands share: click options derived from the config dataclasses
(:mod:`qnas.settings`) — the name, type, choices, help text and shown default of every option
come from the dataclass field, so no default is written twice. ``--config FILE`` starts from a
run's ``config.json``; options given on the command line override it; ``--print-config`` prints
the resolved config and exits.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing

import click
from click.core import ParameterSource

from ..settings import default_of, from_dict, read_config, to_dict

_SIMPLE = (bool, int, float, str)


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


def _make_option(f, cls):
    kind = _base_type(typing.get_type_hints(cls)[f.name])
    names = [_option_name(f), *f.metadata.get("aliases", ())]
    shown = _shown_default(f, cls)
    help_text = f.metadata.get("help", "") + (f"  [default: {shown}]" if shown else "")
    if kind is bool:
        flag = f.metadata.get("flag")
        decls = [f"{names[0]}/{flag}"] if flag else names
        return click.option(*decls, f.name, default=None, help=help_text,
                            is_flag=not flag or None)
    choices = f.metadata.get("choices")
    click_type = click.Choice(list(choices)) if choices else kind
    return click.option(*names, f.name, default=None, type=click_type, help=help_text,
                        metavar=f.metadata.get("metavar"))


def config_options(cls, exclude: tuple[str, ...] = ()):
    """Decorator: one option per CLI field of ``cls`` (and of its nested configs), plus
    ``--config FILE`` and ``--print-config``."""
    def decorate(function):
        options = [_make_option(f, owner) for f, owner in cli_fields(cls)
                   if f.name not in exclude]
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
    config_file = params.pop("config_file", None)
    print_config = params.pop("print_config", False)
    data = to_dict(read_config(cls, config_file)) if config_file else {}
    hints = typing.get_type_hints(cls)
    nested = {f.name: hints[f.name] for f in dataclasses.fields(cls)
              if dataclasses.is_dataclass(hints[f.name])}
    for f, owner in list(cli_fields(cls)):
        if f.name in exclude:
            continue
        value = params.pop(f.name, None)
        source = context.get_parameter_source(f.name)
        if source in (None, ParameterSource.DEFAULT) or value is None:
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


def run_options(function=None, *, out_default: str = "runs/<space>-<device>-<budget>-s<seed>"):
    """``--out``, ``--resume``, ``--stop-after``, ``--quiet``: what every resumable run takes."""
    options = [
        click.option("--out", default=None, type=click.Path(file_okay=False),
                     help=f"Run folder  [default: {out_default}]"),
        click.option("--resume", is_flag=True,
                     help="Continue the run in --out from its newest good checkpoint."),
        click.option("--stop-after", default=None, type=int,
                     help="Stop after this many epochs in this invocation (resume later)."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate(function) if function is not None else decorate


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
