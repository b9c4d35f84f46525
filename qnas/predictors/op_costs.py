"""Per-op latency models of a host predictor: ``ms = overhead + MB moved·a + GFLOPs·b``.

``qnas predictor build`` (:mod:`qnas.predictors.builder`) fits one such model per kernel type
that nn-Meter ignores (LayerNorm, GELU, mul, copies, softmax, MatMul, …), plus the in-network
framework overhead per kernel, and writes them to ``qnas_op_costs.yaml`` next to the nn-Meter
kernel predictors. :class:`~qnas.predictors.nnmeter_backend.NNMeterPredictor` costs the kernels
nn-Meter ignores with them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from ..errors import QnasError
from ..runtime.files import write_text_atomic
from .base import Kernel

OP_COSTS_FILE = "qnas_op_costs.yaml"
# the kernel types nn-Meter leaves uncosted whose per-op costs the builder fits
EXTRA_OPS = ("layernorm", "gelu", "mul", "copy", "softmax", "sigmoid", "matmul", "linear",
             "add", "pool")
# ops without a fit of their own borrow the nearest fitted one
OP_FALLBACK = {"elementwise": "mul", "reduce": "pool", "resize": "copy", "groupnorm": "layernorm",
               "hswish": "sigmoid", "relu": "mul", "batchnorm": "mul", "other": "copy",
               "conv": "linear", "pwconv": "linear", "gconv": "linear", "dwconv": "linear"}
# the coefficients of one op's model, in the order of :func:`cost_terms`
COST_TERMS = ("overhead_ms", "ms_per_mb", "ms_per_gflop")


def cost_terms(kernel: Kernel) -> tuple[float, float, float]:
    """What each coefficient of :data:`COST_TERMS` multiplies for ``kernel``."""
    return 1.0, kernel.bytes / 1e6, kernel.flops / 1e9


def resolve_op(op: str, fitted: Sequence[str]) -> str:
    """The fitted op that costs kernels of type ``op`` (itself, or its :data:`OP_FALLBACK`)."""
    seen = set()
    while op not in fitted and op not in seen:
        seen.add(op)
        op = OP_FALLBACK.get(op, "copy")
    return op if op in fitted else fitted[0]


def design_row(kernels: Sequence[Kernel], ops: Sequence[str]) -> np.ndarray:
    """One row of the least-squares design matrix: the summed :func:`cost_terms` of
    ``kernels`` in the columns of the op each resolves to."""
    row = np.zeros(len(COST_TERMS) * len(ops))
    width = len(COST_TERMS)
    for kernel in kernels:
        j = width * ops.index(resolve_op(kernel.op, ops))
        row[j:j + width] += cost_terms(kernel)
    return row


class HostOpCosts:
    """Per-op latency models fitted on this host: ms = overhead + bytes·a + FLOPs·b.

    Costs the kernels nn-Meter ignores, for predictors built by ``qnas predictor build``.
    An op without a fit of its own uses the nearest fitted op (:data:`OP_FALLBACK`).
    ``overhead_per_kernel_ms`` is the in-network framework overhead per kernel (PyTorch eager's
    dispatch and Python work between kernels, which a kernel timed alone in a tight loop does
    not pay in full), fitted on whole calibration networks; 0 when none were measured.
    """

    def __init__(self, ops: dict[str, dict], version: str, overhead_per_kernel_ms: float = 0.0,
                 calibration: dict | None = None):
        self.ops = ops
        self.version = version
        self.overhead_per_kernel_ms = float(overhead_per_kernel_ms)
        self.calibration = calibration or {}

    @classmethod
    def from_folder(cls, folder: Path | None) -> "HostOpCosts | None":
        """The op costs in a predictor folder (None when it has none)."""
        if folder is None or not (Path(folder) / OP_COSTS_FILE).is_file():
            return None
        with open(Path(folder) / OP_COSTS_FILE, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle) or {}
        return cls(raw.get("ops") or {}, str(raw.get("version", "host op costs")),
                   float(raw.get("overhead_per_kernel_ms") or 0.0), raw.get("calibration"))

    def write(self, folder: Path) -> Path:
        """Write them into the predictor folder ``folder`` (:data:`OP_COSTS_FILE`)."""
        return write_text_atomic(Path(folder) / OP_COSTS_FILE,
                                 yaml.safe_dump(self.to_dict(), sort_keys=False))

    def cost_kernels(self, kernels: Sequence[Kernel]) -> list[float]:
        fitted = list(self.ops)
        if not fitted:
            raise QnasError("the host predictor's op-cost file is empty; rebuild it with "
                            "'qnas predictor build'")
        out = []
        for kernel in kernels:
            coef = self.ops[resolve_op(kernel.op, fitted)]
            out.append(sum(coef[name] * term
                           for name, term in zip(COST_TERMS, cost_terms(kernel))))
        return out

    def to_dict(self) -> dict:
        return {"version": self.version, "overhead_per_kernel_ms": self.overhead_per_kernel_ms,
                "calibration": self.calibration, "ops": self.ops}
