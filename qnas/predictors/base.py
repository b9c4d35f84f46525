"""The one question every predictor answers: milliseconds of a module on a device at a shape.

A predictor decomposes the module into typed kernels (see :mod:`qnas.predictors.kernels`),
costs each, and returns a :class:`Prediction` that always says where its number comes from
(calibrated profile, nn-Meter, measured) and how wrong that source is known to be.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import pandas as pd
from torch import nn

# Where a latency number comes from. An estimate is never presented as a measurement.
SOURCES = ("profile", "nn-meter", "measured")


@dataclass(frozen=True)
class Kernel:
    """One kernel of a module at a concrete input shape.

    op: kernel type (``qnas.predictors.kernels.KERNEL_TYPES``) — ``conv`` (dense),
        ``pwconv`` (1×1 stride 1), ``dwconv`` (one input channel per group, any channel
        multiplier), ``gconv`` (other grouped convs), ``linear`` (a matrix product with a weight),
        ``matmul`` (activation × activation, attention), ``layernorm``, ``groupnorm``,
        ``batchnorm``, ``gelu``, ``relu`` (also relu6/clamp), ``hswish``, ``sigmoid`` (also
        silu/tanh), ``softmax``, ``add``, ``mul`` (also div), ``elementwise`` (other unary/binary
        maths), ``pool``, ``reduce``, ``copy`` (materialising permute/pad/cat/clone/gather),
        ``resize`` and ``other`` (an op with no rule: still costed by its bytes).
    flops: floating-point operations (a multiply-add counts 2).
    bytes: bytes read + written assuming float32 tensors.
    name: the module path that issued it (e.g. ``stages.2.0.spatial``), "" if unknown.
    params: shape facts a predictor may need (cin, cout, kernel_size, stride, groups, hw, …).
    """

    op: str
    flops: float
    bytes: float
    name: str = ""
    params: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Prediction:
    """A predicted (or measured) latency with its provenance."""

    latency_ms: float
    device: str
    source: str            # one of SOURCES
    version: str           # the predictor's version (goes into LUT cache keys)
    known_error: str       # e.g. "leave-one-model-out median |rel. error| 8.7% vs nn-Meter"
    kernels: pd.DataFrame  # columns: name, op, flops, bytes, ms

    def top_kernels(self, n: int = 10) -> pd.DataFrame:
        """The n most expensive kernels."""
        return self.kernels.sort_values("ms", ascending=False).head(n)

    def describe(self) -> str:
        return (f"{self.latency_ms:.3f} ms on {self.device} [{self.source} {self.version}; "
                f"known error: {self.known_error}]")


class Predictor(Protocol):
    """What every backend offers."""

    device: str
    source: str
    version: str
    known_error: str

    def predict(self, module: nn.Module, input_shape: Sequence[int]) -> Prediction: ...
