"""Which devices exist and which backend answers for each (``predictors/devices.yaml``).

``get(device)`` picks the best backend available here: nn-Meter when its predictor files for the
device are installed, else the calibrated profile; ``host-cpu``/``host-cuda`` are measured on this
machine. Every predictor it returns states its source and known error.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import yaml
from torch import nn

from ..errors import QnasError
from ..resources import data_dir
from .base import Predictor
from .profile import ProfilePredictor

BACKENDS = ("profile", "nn-meter", "measured")
INSTALL_HINT = "qnas predictor install-nnmeter PATH"


@dataclass(frozen=True)
class DeviceInfo:
    """One row of ``predictors/devices.yaml``."""

    name: str
    kind: str                              # "profile" or "measured"
    description: str = ""
    profile: str | None = None             # file name under predictors/
    nnmeter_predictor: str | None = None   # nn-Meter's name for it, where nn-Meter has one
    requires: str | None = None            # "cuda": only listed when a CUDA GPU is visible

    @property
    def profile_path(self) -> Path | None:
        return data_dir("predictors") / self.profile if self.profile else None

    @property
    def available(self) -> bool:
        return self.requires != "cuda" or torch.cuda.is_available()


@functools.lru_cache(maxsize=4)
def _read_device_table(path: str, mtime_ns: int) -> tuple[DeviceInfo, ...]:
    raw = yaml.safe_load(Path(path).read_text())
    entries = (raw or {}).get("devices")
    if not isinstance(entries, list):
        raise QnasError(f"{path} must hold a 'devices:' list")
    fields = set(DeviceInfo.__dataclass_fields__)
    out = []
    for entry in entries:
        unknown = set(entry) - fields
        if unknown or "name" not in entry or entry.get("kind") not in ("profile", "measured"):
            raise QnasError(f"{path}: bad device entry {entry!r}; each needs name, kind "
                            f"(profile or measured) and only the keys {sorted(fields)}")
        out.append(DeviceInfo(**{key: (str(v) if v is not None else None)
                                 for key, v in entry.items()}))
    return tuple(out)


def device_table() -> list[DeviceInfo]:
    """Every device in ``devices.yaml``, including ones this machine cannot serve (host-cuda)."""
    path = data_dir("predictors") / "devices.yaml"
    return list(_read_device_table(str(path), path.stat().st_mtime_ns))


def list_devices() -> list[str]:
    """Names of the devices usable on this machine, in the table's order."""
    return [info.name for info in device_table() if info.available]


def device_info(device: str) -> DeviceInfo:
    """The table entry of ``device`` (names match case-insensitively)."""
    by_name = {info.name.lower(): info for info in device_table()}
    info = by_name.get(str(device).strip().lower())
    if info is None:
        raise QnasError(f"unknown device '{device}'; known devices: {', '.join(list_devices())}")
    if not info.available:
        raise QnasError(f"device '{info.name}' needs a CUDA GPU and torch.cuda.is_available() is "
                        f"False here; use one of: {', '.join(list_devices())}")
    return info


# --- backends ---------------------------------------------------------------------------------
def _optional_backend(module: str):
    """Import ``qnas.predictors.<module>`` if this qnas has it (and its dependencies import)."""
    name = f"{__package__}.{module}"
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _nnmeter_ready(info: DeviceInfo) -> bool:
    if not info.nnmeter_predictor:
        return False
    backend = _optional_backend("nnmeter_backend")
    return bool(backend is not None and backend.nnmeter_available(info.name))


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
            nnmeter = _optional_backend("nnmeter_backend")
            if nnmeter is None or not nnmeter.nnmeter_available(info.name):
                raise QnasError(f"no nn-Meter predictor for '{info.name}' on this host; build "
                                f"one with 'qnas predictor build --device {info.name}' or use "
                                f"backend 'measured'")
            return nnmeter.NNMeterPredictor(info.name)
        if backend not in (None, "measured"):
            raise QnasError(f"device '{info.name}' is measured on this machine; it has no "
                            f"{backend} backend")
        measured = _optional_backend("measured")
        if measured is None:
            raise QnasError(f"device '{info.name}' needs the measured backend "
                            f"(qnas.predictors.measured), which this qnas does not have; use a "
                            f"profile device instead ({', '.join(_profile_devices())})")
        return measured.MeasuredPredictor(info.name)
    if backend == "measured":
        raise QnasError(f"device '{info.name}' cannot be measured here; measured devices: "
                        f"{', '.join(d.name for d in device_table() if d.kind == 'measured')}")
    profile = profile_predictor(info.name)
    if backend == "profile":
        return profile
    if _nnmeter_ready(info):
        return _optional_backend("nnmeter_backend").NNMeterPredictor(info.name, profile=profile)
    if backend == "nn-meter":
        if not info.nnmeter_predictor:
            raise QnasError(f"nn-Meter has no predictor for '{info.name}'; use backend 'profile'")
        raise QnasError(f"nn-Meter predictor {info.nnmeter_predictor} for '{info.name}' is not "
                        f"installed; install it with '{INSTALL_HINT}' or use backend 'profile'")
    return profile


def _profile_devices() -> list[str]:
    return [d.name for d in device_table() if d.kind == "profile"]


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


# --- models by name -----------------------------------------------------------------------------
def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def model_from_spec(spec: str, num_classes: int = 1000, meta: bool = False) -> nn.Module:
    """A model from a name: a qnas/timm model (``quadranet_t``, ``timm/convnext_tiny``), a
    torchvision constructor (``resnet18``, ``torchvision.models.mobilenet_v2``) — or, later, a
    ``best.json`` from ``qnas search``.

    ``meta``: build on the meta device when the model allows it (shapes only; enough for the
    analytic backends, much faster for big models); measured backends need ``meta=False``.
    """
    spec = str(spec).strip()
    if spec.endswith(".json"):
        from ..nas.best import load_best

        return load_best(spec).build_child(num_classes=num_classes)
    import warnings

    import timm
    import torchvision

    from ..models import MODEL_NAMES

    name = spec
    for prefix in ("torchvision.models.", "torchvision/", "tv/"):
        name = name.removeprefix(prefix)
    if spec.startswith("timm/"):
        build = functools.partial(timm.create_model, spec.removeprefix("timm/"), pretrained=False,
                                  num_classes=num_classes)
    elif spec in MODEL_NAMES:
        build = functools.partial(timm.create_model, spec, num_classes=num_classes)
    elif name in _torchvision_names():
        build = functools.partial(torchvision.models.get_model, name, weights=None,
                                  num_classes=num_classes)
    elif spec in timm.list_models():
        build = functools.partial(timm.create_model, spec, pretrained=False,
                                  num_classes=num_classes)
    else:
        raise QnasError(f"unknown model '{spec}'; use a qnas model ({', '.join(MODEL_NAMES[:3])}, "
                        f"…), a torchvision constructor (resnet18, mobilenet_v2, …) or "
                        f"timm/<name>")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torchvision's googlenet/inception warn about init
        if meta:
            try:
                with torch.device("meta"):
                    return build()
            except Exception:  # noqa: BLE001 -- e.g. a constructor that reads a tensor value
                pass
        return build()
