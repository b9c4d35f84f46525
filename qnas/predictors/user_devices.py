"""The user's own devices: profiles fitted to their measurements, kept in ``$QNAS_HOME``
(default ``~/.config/qnas/``), outside the package, so that they survive an upgrade of qnas.

    $QNAS_HOME/devices.yaml                 the registry (same schema as predictors/devices.yaml)
    $QNAS_HOME/profiles/<NAME>.yaml          the fitted profile
    $QNAS_HOME/measurements/<NAME>.csv       the measurements it was fitted to
    $QNAS_HOME/measurements/<NAME>.set.yaml  the calibration set those model names refer to

:func:`calibrate_user_device` reads a filled ``measurements.csv``
(:mod:`qnas.predictors.calibration_set`), fits a profile with
:func:`qnas.predictors.calibrate.calibrate_measured` starting from a shipped profile's op classes
and priors (``like``), and registers it; every file is written atomically. Calling it again
for a user device without new measurements refits it from the stored copies (e.g. after an
upgrade changed the profile model). Shipped profiles are never written here.
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import QnasError
from ..runtime.files import write_text_atomic
from .devices import (
    DeviceInfo,
    device_info,
    qnas_home,
    reserved_names,
    user_devices,
    user_registry_path,
)

DEFAULT_LIKE = "cortexA76"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.+-]{0,63}$")
REGISTRY_HEADER = ("# qnas user devices (qnas predictor calibrate NAME --measurements FILE.csv);\n"
                   "# the same schema as qnas's predictors/devices.yaml, paths relative to "
                   "this folder.\n")


def check_device_name(name: str) -> str:
    """``name`` if it can be a user device: a plain name that no shipped device (nor nn-Meter
    predictor name) has."""
    name = str(name).strip()
    if not _NAME.match(name):
        raise QnasError(f"device name {name!r} must start with a letter and hold only letters, "
                        f"digits and _ . + - (at most 64), e.g. pixel7-tflite")
    shipped = reserved_names().get(name.lower())
    if shipped:
        what = ("is reserved" if shipped == "all" else f"is the shipped device {shipped}"
                if shipped.lower() == name.lower() else f"is nn-Meter's name for the shipped "
                f"device {shipped}")
        raise QnasError(f"device name '{name}' {what}; a user device may not shadow it — "
                        f"choose another name (e.g. {name}-mine); to refit a shipped profile "
                        f"run 'qnas predictor calibrate {shipped} --out FILE'")
    return name


def user_device(name: str) -> DeviceInfo | None:
    return {d.name.lower(): d for d in user_devices()}.get(str(name).strip().lower())


@dataclass
class UserCalibration:
    """The outcome of :func:`calibrate_user_device`."""

    result: object                 # CalibrationResult (profile, lomo, median_abs_rel_error)
    measurements: object           # calibration_set.Measurements
    like: str
    info: DeviceInfo | None        # the registered device (None with register=False)
    replaced: bool = False         # a user device of that name existed and was replaced


def calibrate_user_device(name: str, measurements: str | Path | None = None,
                          like: str | None = None, set_path: str | Path | None = None,
                          description: str | None = None,
                          register: bool = True) -> UserCalibration:
    """Fit a profile for the user device ``name`` to the filled measurements CSV
    ``measurements`` (None: refit a registered user device from its stored measurements), with
    the op classes and priors of the shipped profile ``like`` (default cortexA76, or the one
    the device was fitted like), and register it in ``$QNAS_HOME`` unless ``register`` is
    False."""
    from .calibrate import calibrate_measured
    from .calibration_set import read_measurements
    from .profile import load_profile

    name = check_device_name(name)
    existing = user_device(name)
    if measurements is None:
        if existing is None or existing.measurements_path is None:
            raise QnasError(f"'{name}' is not a user device with stored measurements; give "
                            f"--measurements FILE.csv (the template is written by 'qnas "
                            f"predictor calibration-set --out DIR')")
        measurements = existing.measurements_path
        if set_path is None and existing.calibration_set:
            set_path = Path(existing.root) / existing.calibration_set
        like = like or existing.like
        description = description or existing.description
    like_info = device_info(like or DEFAULT_LIKE)
    if like_info.profile_path is None:
        raise QnasError(f"--like {like_info.name} has no profile to start from (it is "
                        f"{like_info.kind}); use a profile device such as cortexA76, adreno640 "
                        f"or myriadvpu")
    template = load_profile(like_info.profile_path)
    read = read_measurements(measurements, set_path)
    cset = read.calibration_set
    against = f"{name}'s measurements"
    result = calibrate_measured(
        name, read.timed, template,
        source=(f"fit to the user's measurements of {len(read.timed)} models of calibration set "
                f"{cset.label} ({Path(read.path).name}), starting from the op classes and "
                f"priors of {like_info.name}'s profile"),
        against=against, reference=f"measurements/{name}.csv")
    result.inputs = f"{name}'s measurements (measurements/{name}.csv)"
    profile = result.profile
    profile["description"] = description or f"user device {name} (fitted like {like_info.name})"
    for key in ("measurements", "runtime"):
        profile.pop(key, None)       # the template device's data file and runtime, not this one's
    profile["notes"] = (f"A user device: fitted by 'qnas predictor calibrate {name}' to the "
                        f"user's own timings, with {like_info.name}'s kernel classes and priors; "
                        f"it predicts the runtime, threads and precision those timings were "
                        f"taken with.")
    info = _register(name, result, read, like_info.name, profile["description"]) \
        if register else None
    return UserCalibration(result, read, like_info.name, info, replaced=existing is not None)


def _register(name: str, result, read, like: str, description: str) -> DeviceInfo:
    from .. import __version__

    home = qnas_home()
    profile_file = f"profiles/{name}.yaml"
    csv_file = f"measurements/{name}.csv"
    set_file = f"measurements/{name}.set.yaml"
    table = read.table[["model", "file", "input_shape", "latency_ms"]]
    write_text_atomic(home / set_file, read.calibration_set.text)
    if Path(read.path).resolve() != (home / csv_file).resolve():
        write_text_atomic(home / csv_file, table.to_csv(index=False))
    write_text_atomic(home / profile_file, result.to_yaml())
    entry = {"name": name, "kind": "profile", "profile": profile_file,
             "description": description, "like": like, "measurements": csv_file,
             "calibration_set": set_file,
             "created": datetime.datetime.now(datetime.timezone.utc).strftime(
                 "%Y-%m-%dT%H:%M:%SZ"),
             "qnas_version": __version__}
    entries = [e for e in _raw_entries() if str(e.get("name", "")).lower() != name.lower()]
    _write_registry(entries + [entry])
    return next(d for d in user_devices() if d.name == name)


def _raw_entries() -> list[dict]:
    path = user_registry_path()
    if not path.is_file():
        return []
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise QnasError(f"{path} is not valid YAML ({str(err).splitlines()[0]}); fix or delete "
                        f"it") from None
    entries = raw.get("devices") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise QnasError(f"{path} must hold a 'devices:' list; fix or delete it")
    return [e for e in entries if isinstance(e, dict)]


def _write_registry(entries: list[dict]) -> Path:
    text = REGISTRY_HEADER + yaml.safe_dump({"devices": entries}, sort_keys=False,
                                            allow_unicode=True, width=100)
    return write_text_atomic(user_registry_path(), text)


def remove_user_device(name: str) -> DeviceInfo:
    """Take the user device ``name`` out of the registry and delete its files."""
    found = {d.name.lower(): d for d in user_devices()}.get(str(name).strip().lower())
    if found is None:
        known = ", ".join(d.name for d in user_devices()) or "none"
        raise QnasError(f"'{name}' is not a user device (user devices: {known}); shipped "
                        f"devices cannot be removed")
    _write_registry([e for e in _raw_entries()
                     if str(e.get("name", "")).lower() != found.name.lower()])
    for relative in (found.profile, found.measurements, found.calibration_set):
        if relative:
            (Path(found.root) / relative).unlink(missing_ok=True)
    return found

