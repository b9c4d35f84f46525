"""Which backend answers for each device (the devices: :mod:`qnas.predictors.devices`).

``get(device)`` picks the best backend available here: nn-Meter when its predictor files for the
device are installed, else the calibrated profile; ``host-cpu``/``host-cuda`` are measured on this
machine; a user device (``$QNAS_HOME``, :mod:`qnas.predictors.user_devices`) is its fitted
profile. Every predictor it returns states its source and known error; ``describe_devices()``
is the table ``qnas devices`` prints.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import QnasError
from .base import Predictor
from .devices import (
    DeviceInfo,
    device_info,
    device_table,
    shadowed_user_devices,
    user_registry_path,
)
from .measured import MeasuredPredictor
from .nnmeter_backend import NNMeterPredictor
from .nnmeter_files import NNMETER_RELEASE_URL, nnmeter_available, nnmeter_files
from .profile import ProfilePredictor

BACKENDS = ("profile", "nn-meter", "measured")
INSTALL_HINT = "qnas predictor install-nnmeter PATH"


def profile_predictor(device: str) -> ProfilePredictor:
    info = device_info(device)
    if info.profile is None:
        raise QnasError(f"device '{info.name}' has no analytic profile; it is {info.kind}")
    return ProfilePredictor(info.name, info.profile_path)


def get(device: str, backend: str | None = None) -> Predictor:
    """The predictor for ``device``.

    ``backend`` None picks automatically: nn-Meter where its predictor files are installed, else
    the calibrated profile; measured devices are timed here. ``"profile"``/``"nn-meter"``/
    ``"measured"`` force one (with a clear error where it cannot serve the device).
    """
    info = device_info(device)
    if backend is not None and backend not in BACKENDS:
        raise QnasError(f"unknown backend '{backend}'; use one of {', '.join(BACKENDS)}")
    if info.kind == "measured":
        if backend == "nn-meter":
            # a kernel predictor built on this host by 'qnas predictor build'
            if not nnmeter_available(info.name):
                raise QnasError(f"no nn-Meter predictor for '{info.name}' on this host; build "
                                f"one with 'qnas predictor build --device {info.name}' or use "
                                f"backend 'measured'")
            return NNMeterPredictor(info.name)
        if backend not in (None, "measured"):
            raise QnasError(f"device '{info.name}' is measured on this machine; it has no "
                            f"{backend} backend")
        return MeasuredPredictor(info.name)
    if backend == "measured":
        raise QnasError(f"device '{info.name}' cannot be measured here; measured devices: "
                        f"{', '.join(d.name for d in device_table() if d.kind == 'measured')}")
    profile = profile_predictor(info.name)
    if backend == "profile":
        return profile
    if info.nnmeter_predictor and nnmeter_available(info.name):
        return NNMeterPredictor(info.name, profile=profile)
    if backend == "nn-meter":
        if not info.nnmeter_predictor:
            raise QnasError(f"nn-Meter has no predictor for '{info.name}'; use backend 'profile'")
        raise QnasError(f"nn-Meter predictor {info.nnmeter_predictor} for '{info.name}' is not "
                        f"installed; install it with '{INSTALL_HINT}' or use backend 'profile'")
    return profile


# --- describing them ----------------------------------------------------------------------------
DEVICE_COLUMNS = ["device", "origin", "kind", "backend", "version", "known_error_short",
                  "error_outside_fit_pct", "error_method", "fitted_to", "known_error", "source",
                  "description", "nnmeter_predictor", "nnmeter_files", "note"]
SHORT_KNOWN_ERROR_CHARS = 44
_METHODS = {"leave-one-model-out": "LOMO", "leave-one-family-out": "LOFO",
            "leave-one-measurement-out": "LOMO", "family-stratified 2-fold": "2-fold"}
_ABBREVIATIONS = (("leave-one-model-out", "LOMO"), ("leave-one-family-out", "LOFO"),
                  ("leave-one-measurement-out", "LOMO"), ("median |rel. error| of", "median"),
                  ("median |rel. error|", "median"), ("|rel. error| ", ""), ("|rel. error|", ""))
_MEDIAN = re.compile(r"median[^0-9;]{0,30}?(\d+(?:\.\d+)?)\s*%")


def _outside_fit(predictor) -> dict:
    outside = getattr(predictor, "outside_fit", None)
    profile = getattr(predictor, "profile", None)
    if not isinstance(outside, dict) and isinstance(profile, dict):
        outside = profile.get("outside_fit")
    return outside if isinstance(outside, dict) else {}


def short_known_error(text: str, outside_fit: dict | None = None,
                      limit: int = SHORT_KNOWN_ERROR_CHARS) -> str:
    """A table-sized summary of a known error, e.g. ``LOFO vs nn-Meter: median 3.1%, max 8%``.

    From a profile's ``outside_fit`` (method, median and max |rel. error| outside the fit) where
    it has numbers, else from the text: its first clause (abbreviated) and the first median of
    its first sentence. The full text is in ``qnas devices --verbose`` and in every JSON/CSV
    output."""
    text = " ".join(str(text or "").split())
    outside_fit = outside_fit or {}
    if outside_fit.get("median_pct") is not None:
        method = str(outside_fit.get("method", ""))
        against = " vs nn-Meter" if "vs nn-Meter" in text else " vs measured"
        short = f"{_METHODS.get(method, method)}{against}: median {outside_fit['median_pct']}%"
        if outside_fit.get("max_pct") is not None:
            short += f", max {float(outside_fit['max_pct']):.0f}%"
    elif not text:
        return ""
    else:
        shortened = text
        for long, abbreviation in _ABBREVIATIONS:
            shortened = shortened.replace(long, abbreviation)
        shortened = re.sub(r"(nn-Meter) \w+_\w+", r"\1", shortened)
        clause = re.split(r"[:;(]|\. ", shortened, maxsplit=1)[0].strip().rstrip(",.")
        median = _MEDIAN.search(re.split(r"\. ", shortened, maxsplit=1)[0])
        short = clause
        if median and median.group(0) not in clause:
            short = f"{clause}: median {median.group(1)}%"
    if len(short) > limit:
        short = short[:limit - 1].rstrip() + "…"
    return short


def known_error_short(predictor) -> str:
    """:func:`short_known_error` of a predictor (its profile's ``outside_fit`` where it has
    one)."""
    return short_known_error(predictor.known_error, _outside_fit(predictor))


def fitted_to(info: DeviceInfo, predictor) -> str:
    """The data a profile was fitted to: a file under the package's ``predictors/`` (shipped)
    or an absolute path (user devices); "" where it was not fitted."""
    profile = getattr(predictor, "profile", None)
    if not isinstance(profile, dict):
        return ""
    fit = profile.get("fit") or {}
    reference = fit.get("reference")
    if not reference and profile.get("measurements"):
        reference = f"reference/{profile['measurements']}"
    if reference and info.origin == "user" and info.root:
        reference = str(Path(info.root) / reference)
    if fit.get("derived_from"):
        return f"derived from {fit['derived_from']}" + (f" ({reference})" if reference else "")
    return str(reference or "")


def nnmeter_status(info: DeviceInfo) -> tuple[str, str]:
    """(nn-Meter predictor name, what is on disk: ``installed``, ``not installed`` or
    ``unusable: …``) of a device; ("", "") where nn-Meter has no predictor for it. Reads
    nn-Meter's config files only (nothing is imported or downloaded)."""
    if info.origin != "shipped":
        return "", ""
    try:
        files = nnmeter_files(info.name)
    except QnasError as err:
        return info.nnmeter_predictor or "", f"unusable: {err}"
    if files.name is None:
        return "", ""
    if files.available:
        return files.name, "installed"
    if files.folder is None or not Path(files.folder).exists():
        return files.name, "not installed"
    return files.name, f"unusable: {files.problem}"


def nnmeter_summary(frame: pd.DataFrame | None = None) -> str:
    """One line: which nn-Meter predictor files are installed and how to add the others."""
    frame = describe_devices() if frame is None else frame
    rows = frame[(frame["nnmeter_predictor"] != "") & (frame["origin"] == "shipped")
                 & (frame["kind"] == "profile")]
    installed = rows[rows["nnmeter_files"] == "installed"]["nnmeter_predictor"].tolist()
    missing = rows[rows["nnmeter_files"] != "installed"]["nnmeter_predictor"].tolist()
    if not missing:
        return (f"nn-Meter predictor files: all installed ({', '.join(installed)}); those "
                f"devices use nn-Meter")
    have = f"installed: {', '.join(installed)}; " if installed else "none installed; "
    return (f"nn-Meter predictor files: {have}missing: {', '.join(missing)} (their devices use "
            f"the calibrated profile). Add them with '{INSTALL_HINT}', PATH being "
            f"<name>.zip from {NNMETER_RELEASE_URL} or its unpacked folder (qnas never "
            f"downloads)")


def describe_devices() -> pd.DataFrame:
    """One row per usable device (shipped, then the user's): where it comes from, the backend
    in use, its version, known error (short and full; the median |rel. error| outside the fit
    and how it was judged, where the profile says), the data it was fitted to, source, nn-Meter
    predictor files and notes (:data:`DEVICE_COLUMNS`). User devices that a shipped name shadows are listed with
    backend ``unavailable`` and a note saying how to rename them."""
    rows = []
    for info in device_table():
        if not info.available:
            continue
        nnmeter_name, nnmeter_state = nnmeter_status(info)
        row = dict.fromkeys(DEVICE_COLUMNS, "")
        row["error_outside_fit_pct"] = None
        row.update(device=info.name, origin=info.origin, kind=info.kind,
                   description=info.description, nnmeter_predictor=nnmeter_name,
                   nnmeter_files=nnmeter_state)
        try:
            predictor = get(info.name)
        except QnasError as err:
            note = str(err)
            if info.origin == "user":
                note += (f"; refit it from its stored measurements with 'qnas predictor "
                         f"calibrate {info.name}'")
            row.update(backend="unavailable", note=note,
                       known_error_short=short_known_error(str(err)))
            rows.append(row)
            continue
        outside = _outside_fit(predictor)
        row.update(backend=predictor.source, version=predictor.version,
                   known_error=predictor.known_error,
                   known_error_short=known_error_short(predictor),
                   error_outside_fit_pct=outside.get("median_pct"),
                   error_method=str(outside.get("method") or ""),
                   fitted_to=fitted_to(info, predictor),
                   source=getattr(predictor, "basis", "") or info.description)
        if info.nnmeter_predictor and predictor.source != "nn-meter":
            row["note"] = (f"nn-Meter predictor {info.nnmeter_predictor} not installed, using the "
                           f"calibrated profile; install: {INSTALL_HINT}")
        elif info.origin == "user":
            row["note"] = (f"user device in {info.root}, fitted like {info.like or '?'} to "
                           f"{info.measurements or 'measurements'}")
        elif info.kind == "profile" and not info.nnmeter_predictor:
            row["note"] = "nn-Meter has no predictor for this device"
        rows.append(row)
    for info in shadowed_user_devices():
        row = dict.fromkeys(DEVICE_COLUMNS, "")
        row["error_outside_fit_pct"] = None
        note = (f"left out: this qnas ships a device named '{info.name}'; rename the user "
                f"device in {user_registry_path()} (name, and its profile's 'device:')")
        row.update(device=info.name, origin=info.origin, kind=info.kind, backend="unavailable",
                   description=info.description, known_error_short="shadowed by a shipped "
                   "device", note=note)
        rows.append(row)
    return pd.DataFrame(rows, columns=DEVICE_COLUMNS)
