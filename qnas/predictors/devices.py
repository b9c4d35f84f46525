"""The devices qnas knows: the shipped ones (``predictors/devices.yaml``: name, kind, profile
file and the nn-Meter predictor that serves it, where nn-Meter has one) and the user's own
(``$QNAS_HOME/devices.yaml``, default ``~/.config/qnas/``, written by ``qnas predictor calibrate
NAME --measurements FILE.csv``; see :mod:`qnas.predictors.user_devices`).

A device can be named by its qnas name or, for the four devices nn-Meter publishes predictors
for, by nn-Meter's predictor name (``cortexA76cpu_tflite21`` is ``cortexA76``); names match
case-insensitively. User devices live outside the package, so they survive an upgrade of qnas;
a user device may not take a shipped device's name (one whose name a newer qnas starts to ship
is left out, and ``qnas devices`` says so).
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..errors import QnasError
from ..resources import data_dir

ENV_HOME = "QNAS_HOME"
USER_REGISTRY = "devices.yaml"
SHIPPED, USER = "shipped", "user"
# the keys a devices.yaml entry may have (the shipped table, and the user's with USER_KEYS)
SHIPPED_KEYS = ("name", "kind", "description", "profile", "nnmeter_predictor", "requires")
USER_KEYS = ("name", "kind", "description", "profile", "like", "measurements",
             "calibration_set", "created", "qnas_version")


@dataclass(frozen=True)
class DeviceInfo:
    """One row of a ``devices.yaml`` (the shipped table or the user's)."""

    name: str
    kind: str                              # "profile" or "measured"
    description: str = ""
    profile: str | None = None             # file name, relative to the table's folder
    nnmeter_predictor: str | None = None   # nn-Meter's name for it, where nn-Meter has one
    requires: str | None = None            # "cuda": only listed when a CUDA GPU is visible
    origin: str = SHIPPED                  # "shipped" (in the package) or "user" ($QNAS_HOME)
    root: str | None = None                # the folder ``profile`` is relative to
    like: str | None = None                # user devices: the shipped profile it was fitted like
    measurements: str | None = None        # user devices: its measurements (relative to root)
    calibration_set: str | None = None     # user devices: the set the measured models came from
    created: str | None = None
    qnas_version: str | None = None

    @property
    def profile_path(self) -> Path | None:
        if not self.profile:
            return None
        return Path(self.root or data_dir("predictors")) / self.profile

    @property
    def measurements_path(self) -> Path | None:
        if not self.measurements:
            return None
        return Path(self.root or data_dir("predictors")) / self.measurements

    @property
    def available(self) -> bool:
        return self.requires != "cuda" or torch.cuda.is_available()


def qnas_home() -> Path:
    """Where the user's devices live: ``$QNAS_HOME``, else ``$XDG_CONFIG_HOME/qnas``, else
    ``~/.config/qnas`` (outside the package: an upgrade of qnas keeps them)."""
    value = os.environ.get(ENV_HOME, "").strip()
    if value:
        return Path(value).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME", "").strip()
    return (Path(config).expanduser() if config else Path.home() / ".config") / "qnas"


@contextlib.contextmanager
def using_home(path: str | os.PathLike | None):
    """Point ``$QNAS_HOME`` at ``path`` for the body (None: leave it as it is) — for a
    benchmark or notebook that must not touch the user's own registry."""
    if path is None:
        yield qnas_home()
        return
    before = os.environ.get(ENV_HOME)
    os.environ[ENV_HOME] = str(path)
    try:
        yield Path(path)
    finally:
        if before is None:
            os.environ.pop(ENV_HOME, None)
        else:
            os.environ[ENV_HOME] = before


def user_registry_path() -> Path:
    return qnas_home() / USER_REGISTRY


def _entries(path: str, raw, origin: str) -> list:
    if raw is None and origin == USER:
        return []                      # an empty user registry
    entries = raw.get("devices") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise QnasError(f"{path} must hold a 'devices:' list")
    return entries


@functools.lru_cache(maxsize=8)
def _read_device_table(path: str, mtime_ns: int, origin: str) -> tuple[DeviceInfo, ...]:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise QnasError(f"{path} is not valid YAML ({str(err).splitlines()[0]}); fix or "
                        f"delete it") from None
    keys = SHIPPED_KEYS if origin == SHIPPED else USER_KEYS
    out = []
    for entry in _entries(path, raw, origin):
        unknown = set(entry) - set(keys) if isinstance(entry, dict) else {"?"}
        if unknown or "name" not in entry or entry.get("kind") not in ("profile", "measured") \
                or (origin == USER and entry.get("kind") != "profile"):
            kinds = "profile or measured" if origin == SHIPPED else "profile"
            raise QnasError(f"{path}: bad device entry {entry!r}; each needs name, kind "
                            f"({kinds}) and only the keys {', '.join(keys)}")
        values = {key: (str(v) if v is not None else None) for key, v in entry.items()}
        root = str(Path(path).parent) if origin == USER else None
        out.append(DeviceInfo(**values, origin=origin, root=root))
    return tuple(out)


def _table(path: Path, origin: str) -> tuple[DeviceInfo, ...]:
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        return ()
    return _read_device_table(str(path), mtime, origin)


def shipped_devices() -> list[DeviceInfo]:
    """The devices in the packaged ``predictors/devices.yaml``."""
    path = data_dir("predictors") / "devices.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"qnas data file {path} is missing; reinstall qnas")
    return list(_table(path, SHIPPED))


def reserved_names() -> dict[str, str]:
    """lower-cased names a user device may not take → the shipped device that has it (its
    name and its nn-Meter predictor name)."""
    names = {}
    for info in shipped_devices():
        names[info.name.lower()] = info.name
        if info.nnmeter_predictor:
            names[info.nnmeter_predictor.lower()] = info.name
    names["all"] = "all"
    return names


def _user_split() -> tuple[list[DeviceInfo], list[DeviceInfo]]:
    reserved = reserved_names()
    kept, shadowed = [], []
    for info in _table(user_registry_path(), USER):
        (shadowed if info.name.lower() in reserved else kept).append(info)
    return kept, shadowed


def user_devices() -> list[DeviceInfo]:
    """The user's devices (``$QNAS_HOME/devices.yaml``), less any that take a shipped name."""
    return _user_split()[0]


def shadowed_user_devices() -> list[DeviceInfo]:
    """User devices left out because a shipped device (of a newer qnas) has their name."""
    return _user_split()[1]


def device_table() -> list[DeviceInfo]:
    """Every device, shipped then the user's, including ones this machine cannot serve
    (host-cuda without a GPU)."""
    return shipped_devices() + user_devices()


def list_devices() -> list[str]:
    """Names of the devices usable on this machine, in the table's order (shipped, then user)."""
    return [info.name for info in device_table() if info.available]


def nnmeter_aliases() -> dict[str, str]:
    """nn-Meter predictor name → qnas device name (``predictors/devices.yaml``)."""
    return {info.nnmeter_predictor: info.name for info in shipped_devices()
            if info.nnmeter_predictor}


def device_info(device: str) -> DeviceInfo:
    """The table entry of ``device``: a qnas name or an nn-Meter predictor name (e.g.
    ``cortexA76cpu_tflite21``), matched case-insensitively."""
    key = str(device).strip().lower()
    table = device_table()
    by_name = {info.name.lower(): info for info in table}
    for info in table:
        if info.nnmeter_predictor:
            by_name.setdefault(info.nnmeter_predictor.lower(), info)
    info = by_name.get(key)
    if info is None:
        aliases = ", ".join(nnmeter_aliases())
        raise QnasError(f"unknown device '{device}'; known devices: {', '.join(list_devices())} "
                        f"(nn-Meter names {aliases} are accepted too; add your own with 'qnas "
                        f"predictor calibrate NAME --measurements FILE.csv')")
    if not info.available:
        raise QnasError(f"device '{info.name}' needs a CUDA GPU and torch.cuda.is_available() is "
                        f"False here; use one of: {', '.join(list_devices())}")
    return info
