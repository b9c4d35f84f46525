"""Which backend answers for each device (the devices: :mod:`qnas.predictors.devices`).

``get(device)`` picks the best backend available here: nn-Meter when its predictor files for the
device are installed, else the calibrated profile; ``host-cpu``/``host-cuda`` are measured on this
machine. Every predictor it returns states its source and known error.
"""
from __future__ import annotations

import pandas as pd

from ..errors import QnasError
from .base import Predictor
from .devices import device_info, device_table
from .measured import MeasuredPredictor
from .nnmeter_backend import NNMeterPredictor
from .nnmeter_files import nnmeter_available
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


def describe_devices() -> pd.DataFrame:
    """One row per usable device: backend in use, its source, version, known error and notes."""
    rows = []
    for info in device_table():
        if not info.available:
            continue
        row = {"device": info.name, "kind": info.kind, "backend": "", "source": "",
               "version": "", "known_error": "", "note": ""}
        try:
            predictor = get(info.name)
        except QnasError as err:
            row.update(backend="unavailable", note=str(err))
            rows.append(row)
            continue
        row.update(backend=predictor.source, version=predictor.version,
                   known_error=predictor.known_error,
                   source=getattr(predictor, "basis", "") or info.description)
        if info.nnmeter_predictor and predictor.source != "nn-meter":
            row["note"] = (f"nn-Meter predictor {info.nnmeter_predictor} not installed, using the "
                           f"calibrated profile; install: {INSTALL_HINT}")
        elif info.kind == "profile" and not info.nnmeter_predictor:
            row["note"] = "nn-Meter has no predictor for this device"
        rows.append(row)
    return pd.DataFrame(rows, columns=["device", "kind", "backend", "source", "version",
                                       "known_error", "note"])
