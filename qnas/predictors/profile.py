"""Calibrated device profiles: an analytic per-kernel latency model with a few constants per device.

Each kernel type maps to a cost class (``op_classes`` in the device's YAML); each class has a
peak compute rate, a memory bandwidth and a fixed per-kernel overhead, and a kernel costs::

    ms = max(flops / peak, bytes / bandwidth) + overhead        (a roofline plus launch cost)

A class with no peak (``memory``: norms, activations, element-wise ops, pooling, copies) is
costed by its bytes alone. The constants live in ``predictors/<device>.yaml`` only — fitted
there by :mod:`qnas.predictors.calibrate` or taken from a datasheet — and nowhere in code.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import yaml
from torch import nn

from ..errors import QnasError
from ..resources import data_dir
from .base import Kernel, Prediction
from .kernels import decompose, parse_input_shape

# The cost classes a profile may define, and the keys each class takes.
CLASS_KEYS = {"peak_gflops", "bandwidth_gbps", "overhead_us"}
PROFILE_KEYS = {"device", "description", "source", "version", "kind", "known_error",
                "op_classes", "classes", "fit", "lomo", "notes", "datasheet"}


@dataclass(frozen=True)
class CostClass:
    """Roofline constants of one class of kernels."""

    name: str
    peak_gflops: float | None      # None: bandwidth-bound only
    bandwidth_gbps: float
    overhead_us: float

    @property
    def flops_per_ms(self) -> float:
        return self.peak_gflops * 1e6 if self.peak_gflops else np.inf

    @property
    def bytes_per_ms(self) -> float:
        return self.bandwidth_gbps * 1e6


class ProfileModel:
    """The roofline model of one device, vectorised over kernels (predictor and fit share it)."""

    def __init__(self, op_classes: dict[str, str], classes: dict[str, dict], where: str = ""):
        if "default" not in op_classes:
            raise QnasError(f"profile {where}: op_classes needs a 'default' entry (the class of "
                            f"every kernel type not listed), e.g. default: memory")
        self.op_classes = dict(op_classes)
        self.classes: dict[str, CostClass] = {}
        for name, spec in classes.items():
            unknown = set(spec) - CLASS_KEYS
            if unknown or "bandwidth_gbps" not in spec or "overhead_us" not in spec:
                raise QnasError(f"profile {where}: class '{name}' needs bandwidth_gbps and "
                                f"overhead_us (and optionally peak_gflops); got {sorted(spec)}")
            peak = spec.get("peak_gflops")
            self.classes[name] = CostClass(name, float(peak) if peak else None,
                                           float(spec["bandwidth_gbps"]),
                                           float(spec["overhead_us"]))
        missing = set(self.op_classes.values()) - set(self.classes)
        if missing:
            raise QnasError(f"profile {where}: op_classes refer to undefined classes "
                            f"{sorted(missing)}; define them under 'classes'")
        self._class_names = list(self.classes)
        self._flops_per_ms = np.array([c.flops_per_ms for c in self.classes.values()])
        self._bytes_per_ms = np.array([c.bytes_per_ms for c in self.classes.values()])
        self._overhead_ms = np.array([c.overhead_us * 1e-3 for c in self.classes.values()])

    def class_of(self, op: str) -> str:
        return self.op_classes.get(op, self.op_classes["default"])

    def class_indices(self, ops: Sequence[str]) -> np.ndarray:
        index = {name: i for i, name in enumerate(self._class_names)}
        return np.array([index[self.class_of(op)] for op in ops], dtype=np.int64)

    def cost(self, class_index: np.ndarray, flops: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        """Milliseconds per kernel."""
        compute = flops / self._flops_per_ms[class_index]
        memory = nbytes / self._bytes_per_ms[class_index]
        return np.maximum(compute, memory) + self._overhead_ms[class_index]

    def cost_kernels(self, kernels: Sequence[Kernel]) -> np.ndarray:
        if not kernels:
            return np.zeros(0)
        return self.cost(self.class_indices([k.op for k in kernels]),
                         np.array([k.flops for k in kernels], dtype=np.float64),
                         np.array([k.bytes for k in kernels], dtype=np.float64))


# --- YAML ----------------------------------------------------------------------------------------
def profile_path(device: str) -> Path:
    return data_dir("predictors") / f"{device}.yaml"


@functools.lru_cache(maxsize=64)
def _read_yaml(path: str, mtime_ns: int) -> dict:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise QnasError(f"profile {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise QnasError(f"profile {path} must be a YAML mapping")
    return raw


def load_profile(path: str | os.PathLike) -> dict:
    """The parsed YAML of a profile (cached until the file changes)."""
    path = Path(path)
    if not path.is_file():
        raise QnasError(f"device profile {path} does not exist; run 'qnas predictor calibrate "
                        f"DEVICE' to create it or check the path")
    raw = _read_yaml(str(path), path.stat().st_mtime_ns)
    missing = {"device", "source", "version", "known_error", "op_classes", "classes"} - set(raw)
    unknown = set(raw) - PROFILE_KEYS
    if missing or unknown:
        raise QnasError(f"profile {path}: " + (f"missing keys {sorted(missing)} " if missing else "")
                        + (f"unknown keys {sorted(unknown)}" if unknown else ""))
    return raw


class ProfilePredictor:
    """Latency from a calibrated analytic profile (the embedded default backend)."""

    source = "profile"

    def __init__(self, device: str, path: str | os.PathLike | None = None,
                 profile: dict | None = None):
        where = str(path or profile_path(device))
        raw = profile if profile is not None else load_profile(path or profile_path(device))
        if str(raw.get("device")) != device:
            raise QnasError(f"profile {where} is for device '{raw.get('device')}', not '{device}'")
        self.device = device
        self.profile = raw
        self.path = where
        self.version = str(raw["version"])
        self.known_error = str(raw["known_error"])
        self.basis = str(raw["source"])            # what the constants come from
        self.description = str(raw.get("description", ""))
        self.model = ProfileModel(raw["op_classes"], raw["classes"], where)
        # changes whenever a constant does, even if someone forgets to bump `version`
        self.fingerprint = hashlib.sha256(json.dumps(
            [raw["op_classes"], raw["classes"]], sort_keys=True).encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"ProfilePredictor({self.device!r}, version={self.version!r})"

    def cost_kernels(self, kernels: Sequence[Kernel]) -> list[float]:
        """Milliseconds of each kernel (for backends that cost some kernels themselves)."""
        return self.model.cost_kernels(list(kernels)).tolist()

    def predict_kernels(self, kernels: Sequence[Kernel]) -> Prediction:
        kernels = list(kernels)
        ms = self.model.cost_kernels(kernels)
        frame = pd.DataFrame({
            "name": [k.name for k in kernels], "op": [k.op for k in kernels],
            "flops": np.array([k.flops for k in kernels], dtype=np.float64),
            "bytes": np.array([k.bytes for k in kernels], dtype=np.float64), "ms": ms})
        return Prediction(latency_ms=float(ms.sum()), device=self.device, source=self.source,
                          version=self.version, known_error=self.known_error, kernels=frame)

    def predict(self, module: nn.Module, input_shape) -> Prediction:
        return self.predict_kernels(decompose(module, parse_input_shape(input_shape)))
