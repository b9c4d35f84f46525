"""Deployment: turn a ``best.json`` into a plain, verified child network and time it here.

    >>> from qnas.deploy import export_child, load_child, measure_best
    >>> result = export_child("runs/demo/best.json")        # -> runs/demo/export/
    >>> model = load_child(result.files["pt"])              # the child as an nn.Module
    >>> measure_best("runs/demo/best.json").table           # PyTorch / onnxruntime / host-cpu

:mod:`.export` builds the child from the supernet checkpoint (ProxylessNAS's "convert to a
normal net"), verifies it, and writes ``.pt``, ONNX, TorchScript and a model card;
:mod:`.measure` times the child on this host next to the ``host-cpu`` prediction.
"""
from ..predictors.kernels import count_macs
from .child import (
    CARD_NAME,
    CHILD_FORMAT,
    CHILD_FORMAT_VERSION,
    FILE_NAMES,
    FORMATS,
    inherited_child,
    load_child,
    read_child,
)
from .export import ExportResult, export_child, parse_formats
from .measure import Measurement, measure_best, measure_child

__all__ = [
    "export_child", "ExportResult", "load_child", "read_child", "inherited_child", "count_macs",
    "parse_formats", "FORMATS", "FILE_NAMES", "CARD_NAME", "CHILD_FORMAT",
    "CHILD_FORMAT_VERSION", "measure_best", "measure_child", "Measurement",
]
