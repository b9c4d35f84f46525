"""Latency predictors: how many milliseconds a module takes on a device at an input shape.

    >>> from qnas import predictors
    >>> predictors.list_devices()
    ['cortexA76', 'myriadvpu', 'a100', 'adreno640', 'adreno630', 'host-cpu']
    >>> predictors.get("cortexA76").predict(model, "1x3x224x224").describe()

Backends: calibrated profiles (:mod:`.profile`, the embedded default),
nn-Meter where its predictor files are installed, and measurements on this host. The search's
lookup table is built by :func:`build_lut`.
"""
from .base import SOURCES, Kernel, Prediction, Predictor
from .devices import DeviceInfo, device_info, device_table, list_devices
from .kernels import decompose, parse_input_shape
from .lut import LatencyTable, build_lut
from .profile import ProfilePredictor
from .registry import describe_devices, get

__all__ = [
    "SOURCES", "Kernel", "Prediction", "Predictor", "decompose", "parse_input_shape",
    "ProfilePredictor", "get", "list_devices", "describe_devices", "device_info", "device_table",
    "DeviceInfo", "build_lut", "LatencyTable",
]
