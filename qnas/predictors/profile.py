"""Calibrated device profiles: an analytic per-kernel latency model with a few constants per device.

Each kernel type maps to a cost class (``op_classes`` in the device's YAML); each class has a
peak compute rate, a memory bandwidth and a fixed per-kernel overhead, and a kernel costs::

    ms = max(flops / peak, bytes / bandwidth) + overhead        (a roofline plus launch cost)

A class with no peak (``memory``: norms, activations, element-wise ops, pooling, copies) is
costed by its bytes alone. Optional class keys refine it:

- ``flops_exponent`` γ with ``flops_reference_mflop`` F₀: the compute time is
  ``(flops / F₀)^γ · F₀ / peak`` — with γ < 1 small kernels run below the peak and big ones above
  it (``peak`` is the rate of a kernel of F₀ FLOPs); γ = 1 is the plain roofline.
- ``dispatch_us``: a floor, ``ms = max(dispatch, …)``. Eager PyTorch on a GPU spends tens of µs
  of host time dispatching each kernel while the GPU runs the previous one: a small kernel costs
  its dispatch, a big one its GPU time.

A profile's ``fusion`` table folds kernels into the kernel that produced their input, as
TFLite and OpenVINO fold a BatchNorm into the convolution before it and fuse a ReLU into the
conv/add before it: ``{batchnorm: [conv, pwconv, …], relu: [conv, …, add, batchnorm]}``. A
folded kernel costs 0 (its work is done by the kernel it was folded into); the decomposition
records producers (``params["inputs_from"]``, :mod:`qnas.predictors.kernels`).

The constants live in ``predictors/<device>.yaml`` only — fitted there by
:mod:`qnas.predictors.calibrate` or taken from a datasheet — and nowhere in code.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from torch import nn

from ..errors import QnasError
from ..resources import data_dir
from .base import Kernel, Prediction
from .kernels import decompose, parse_input_shape

# The cost classes a profile may define, and the keys each class takes.
CLASS_KEYS = {"peak_gflops", "bandwidth_gbps", "overhead_us", "flops_exponent",
              "flops_reference_mflop", "dispatch_us"}
PROFILE_KEYS = {"device", "description", "source", "version", "kind", "known_error",
                "op_classes", "classes", "fit", "lomo", "notes", "datasheet", "fusion",
                "runtime", "outside_fit", "measurements", "validation"}


@dataclass(frozen=True)
class CostClass:
    """Roofline constants of one class of kernels."""

    name: str
    peak_gflops: float | None      # None: bandwidth-bound only
    bandwidth_gbps: float
    overhead_us: float
    flops_exponent: float = 1.0
    flops_reference_mflop: float = 1.0
    dispatch_us: float = 0.0

    @property
    def flops_per_ms(self) -> float:
        return self.peak_gflops * 1e6 if self.peak_gflops else np.inf

    @property
    def bytes_per_ms(self) -> float:
        return self.bandwidth_gbps * 1e6


def _cost_class(name: str, spec: dict, where: str) -> CostClass:
    unknown = set(spec) - CLASS_KEYS
    if unknown or "bandwidth_gbps" not in spec or "overhead_us" not in spec:
        raise QnasError(f"profile {where}: class '{name}' needs bandwidth_gbps and overhead_us "
                        f"(and optionally {', '.join(sorted(CLASS_KEYS - {'bandwidth_gbps', 'overhead_us'}))}); "
                        f"got {sorted(spec)}")
    if ("flops_exponent" in spec) != ("flops_reference_mflop" in spec):
        raise QnasError(f"profile {where}: class '{name}' needs flops_exponent and "
                        f"flops_reference_mflop together (e.g. 0.9 and 100)")
    try:
        values = {key: float(value) for key, value in spec.items() if value is not None}
    except (TypeError, ValueError):
        raise QnasError(f"profile {where}: class '{name}' has a non-numeric constant; "
                        f"got {spec}") from None
    if any(v < 0 for v in values.values()) or values["bandwidth_gbps"] <= 0 \
            or values.get("flops_reference_mflop", 1.0) <= 0:
        raise QnasError(f"profile {where}: class '{name}' needs positive rates and "
                        f"non-negative overheads; got {spec}")
    return CostClass(name, values.get("peak_gflops") or None, values["bandwidth_gbps"],
                     values["overhead_us"], values.get("flops_exponent", 1.0),
                     values.get("flops_reference_mflop", 1.0), values.get("dispatch_us", 0.0))


def _fusion_table(fusion: dict | None, where: str) -> dict[str, frozenset]:
    if not fusion:
        return {}
    if not isinstance(fusion, dict) or not all(isinstance(v, list) for v in fusion.values()):
        raise QnasError(f"profile {where}: 'fusion' maps a kernel type to the kernel types it is "
                        f"folded into, e.g. {{batchnorm: [conv, pwconv], relu: [conv, add]}}")
    return {str(op): frozenset(str(into) for into in intos) for op, intos in fusion.items()}


def fused_mask(kernels: Sequence[Kernel], fusion: dict[str, frozenset]) -> np.ndarray:
    """True for each kernel a runtime folds into the kernel that produced its input.

    A kernel of a type in ``fusion`` is folded when its first tensor input comes from a kernel
    of one of the listed types (in ``kernels``) that nothing else in ``kernels`` reads. Kernels
    without producer records (hand-made ones) are never folded.
    """
    mask = np.zeros(len(kernels), dtype=bool)
    if not fusion or not kernels:
        return mask
    position = {k.params.get("id"): i for i, k in enumerate(kernels) if k.params.get("id") is not None}
    readers: dict[int, int] = {}
    for kernel in kernels:
        for source in set(kernel.params.get("inputs_from") or ()):
            if source is not None:
                readers[source] = readers.get(source, 0) + 1
    for i, kernel in enumerate(kernels):
        intos = fusion.get(kernel.op)
        sources = kernel.params.get("inputs_from") or ()
        if not intos or not sources or sources[0] is None:
            continue
        producer = position.get(sources[0])
        if producer is not None and kernels[producer].op in intos \
                and readers.get(sources[0], 0) == 1:
            mask[i] = True
    return mask


class ProfileModel:
    """The roofline model of one device, vectorised over kernels (predictor and fit share it)."""

    def __init__(self, op_classes: dict[str, str], classes: dict[str, dict], where: str = "",
                 fusion: dict | None = None):
        if "default" not in op_classes:
            raise QnasError(f"profile {where}: op_classes needs a 'default' entry (the class of "
                            f"every kernel type not listed), e.g. default: memory")
        self.op_classes = dict(op_classes)
        self.classes: dict[str, CostClass] = {name: _cost_class(name, spec or {}, where)
                                              for name, spec in classes.items()}
        missing = set(self.op_classes.values()) - set(self.classes)
        if missing:
            raise QnasError(f"profile {where}: op_classes refer to undefined classes "
                            f"{sorted(missing)}; define them under 'classes'")
        self.fusion = _fusion_table(fusion, where)
        self._class_names = list(self.classes)
        values = list(self.classes.values())
        self._flops_per_ms = np.array([c.flops_per_ms for c in values])
        self._bytes_per_ms = np.array([c.bytes_per_ms for c in values])
        self._overhead_ms = np.array([c.overhead_us * 1e-3 for c in values])
        self._exponent = np.array([c.flops_exponent for c in values])
        self._reference_flops = np.array([c.flops_reference_mflop * 1e6 for c in values])
        self._dispatch_ms = np.array([c.dispatch_us * 1e-3 for c in values])

    def class_of(self, op: str) -> str:
        return self.op_classes.get(op, self.op_classes["default"])

    def class_indices(self, ops: Sequence[str]) -> np.ndarray:
        index = {name: i for i, name in enumerate(self._class_names)}
        return np.array([index[self.class_of(op)] for op in ops], dtype=np.int64)

    def cost(self, class_index: np.ndarray, flops: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        """Milliseconds per (unfused) kernel."""
        reference = self._reference_flops[class_index]
        scaled = reference * (flops / reference) ** self._exponent[class_index]
        compute = scaled / self._flops_per_ms[class_index]
        memory = nbytes / self._bytes_per_ms[class_index]
        ms = np.maximum(compute, memory) + self._overhead_ms[class_index]
        return np.maximum(ms, self._dispatch_ms[class_index])

    def fused(self, kernels: Sequence[Kernel]) -> np.ndarray:
        """Which of ``kernels`` this device's runtime folds into their producer (cost 0)."""
        return fused_mask(list(kernels), self.fusion)

    def cost_kernels(self, kernels: Sequence[Kernel]) -> np.ndarray:
        kernels = list(kernels)
        if not kernels:
            return np.zeros(0)
        ms = self.cost(self.class_indices([k.op for k in kernels]),
                       np.array([k.flops for k in kernels], dtype=np.float64),
                       np.array([k.bytes for k in kernels], dtype=np.float64))
        return np.where(self.fused(kernels), 0.0, ms)


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


def profile_fingerprint(raw: dict) -> str:
    """A digest of everything that changes a profile's predictions."""
    return hashlib.sha256(json.dumps([raw["op_classes"], raw["classes"], raw.get("fusion")],
                                     sort_keys=True).encode()).hexdigest()[:12]


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
        self.model = ProfileModel(raw["op_classes"], raw["classes"], where, raw.get("fusion"))
        self.outside_fit = raw.get("outside_fit")      # out-of-fit error (None: not measured)
        self.measurements = raw.get("measurements")    # the measurement file a GPU was fitted to
        # changes whenever a constant does, even if someone forgets to bump `version`
        self.fingerprint = profile_fingerprint(raw)

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
