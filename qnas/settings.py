"""Run settings as dataclasses: the one source of every default and its help text.

A config class (``SearchConfig``, ``RetrainConfig``, …) declares each field with
:func:`setting` — default, help, and how the command line spells it. The CLI derives its options
from these fields (:mod:`qnas.cli.options`), a run writes ``config.json`` with
:func:`to_dict`, and ``--config FILE`` reads it back with :func:`from_dict`, so a run can be
repeated and no default is written down twice. No torch here: the CLI builds ``--help`` from
these classes before anything heavy is imported.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Any

from .errors import QnasError

MISSING = dataclasses.MISSING


def setting(default: Any = MISSING, *, help: str, default_factory: Any = MISSING,
            option: str | None = None, aliases: tuple[str, ...] = (), choices=None,
            flag: str | None = None, metavar: str | None = None, shown: str | None = None,
            cli: bool = True, group: str | None = None) -> Any:
    """A dataclass field with what the CLI needs to offer it.

    Args:
        help: one line for ``--help``.
        option: the option's name (default ``--`` + the field name with dashes).
        aliases: more spellings of the option.
        choices: the allowed values (a click.Choice).
        flag: for booleans, the ``--x/--no-x`` pair's negative name (``"--no-ema"``) — without
            it a boolean is a plain ``--x`` flag.
        metavar: the value's placeholder in ``--help``.
        shown: the default as ``--help`` shows it, where the value alone would mislead
            (``"6; 0 with --supernet"``).
        cli: False for settings the CLI does not offer (set them in a ``--config`` file).
        group: for nested configs, the prefix of their options (unused at the top level).
    """
    metadata = {"help": help, "option": option, "aliases": tuple(aliases), "choices": choices,
                "flag": flag, "metavar": metavar, "shown": shown, "cli": cli, "group": group}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_help(cls, name: str) -> dict:
    """The :func:`setting` metadata of field ``name`` of ``cls``."""
    return dict(next(f for f in dataclasses.fields(cls) if f.name == name).metadata)


def default_of(cls, name: str) -> Any:
    """The default value of field ``name`` of ``cls`` (a factory is called)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def nested_type(cls, name: str):
    """The dataclass type of field ``name`` when it holds a nested config, else None."""
    hints = typing.get_type_hints(cls)
    kind = hints.get(name)
    return kind if dataclasses.is_dataclass(kind) else None


def to_dict(config) -> dict:
    """A config as plain JSON-able data (tuples become lists, nested configs dicts)."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(config)


def from_dict(cls, data: dict, where: str | None = "config"):
    """Build ``cls`` from a mapping (unset fields take their defaults); unknown keys and wrong
    values are refused with one line (prefixed with ``where`` when given). Nested configs may
    be mappings."""
    prefix = f"{where}: " if where else ""
    if not isinstance(data, dict):
        raise QnasError(f"{prefix}expected a mapping of settings, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise QnasError(f"{prefix}unknown setting(s) {', '.join(map(repr, unknown))}; known: "
                        f"{', '.join(sorted(known))}")
    values = {}
    for name, value in data.items():
        inner = nested_type(cls, name)
        if inner is not None and isinstance(value, dict):
            value = from_dict(inner, value, f"{prefix}{name}" if where else name)
        values[name] = value
    try:
        return cls(**values)
    except QnasError as err:
        raise QnasError(f"{prefix}{err}") from None
    except (TypeError, ValueError) as err:
        raise QnasError(f"{prefix}{' '.join(str(err).split())}") from None


def read_config(cls, path: str | Path):
    """A ``config.json`` written by a run (or any JSON/YAML mapping of ``cls``'s settings)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QnasError(f"--config {path} does not exist; pass the config.json of a run") \
            from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise QnasError(f"cannot read --config {path} ({type(err).__name__})") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # noqa: BLE001 -- json and yaml raise their own errors
        raise QnasError(f"--config {path} is not valid {path.suffix.lstrip('.') or 'JSON'} "
                        f"({type(err).__name__})") from None
    return from_dict(cls, data, f"--config {path}")


def merged(cls, base, changes: dict):
    """``base`` (an instance of ``cls`` or None for the defaults) with ``changes`` applied;
    nested configs are merged key by key."""
    data = to_dict(base) if base is not None else {}
    for name, value in changes.items():
        if isinstance(value, dict) and nested_type(cls, name) is not None:
            data[name] = {**(data.get(name) or {}), **value}
        else:
            data[name] = value
    return from_dict(cls, data)


def check_int(value, name: str, low: int = 0) -> int:
    """``value`` as an integer ≥ ``low`` (bools refused), else one line naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(low,
                                                                          f"an integer ≥ {low}")
        raise QnasError(f"{name} must be {kind}, got {value!r}")
    return value


def check_number(value, name: str, low: float, high: float = float("inf"),
                 low_open: bool = False, high_open: bool = True) -> float:
    """``value`` as a finite number in the interval, else one line naming ``name``."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value)
          and (value > low if low_open else value >= low)
          and (value < high if high_open else value <= high))
    if not ok:
        raise QnasError(f"{name} must be a number in "
                        f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
                        f", got {value!r}")
    return float(value)
