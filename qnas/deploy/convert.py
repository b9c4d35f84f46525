"""The child in other runtimes — ONNX (onnxruntime) and TorchScript — and the checks that
each runtime computes what PyTorch computes.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import warnings

import torch
from torch import nn

from .. import __version__
from ..errors import QnasError

DEFAULT_OPSET = 20           # LayerNormalization (17) and Gelu (20) stay single nodes
MIN_OPSET = 17
CHILD_ATOL = 1e-5            # child vs supernet: the same ops on the same weights
RUNTIME_ATOL = 1e-4          # onnxruntime / TorchScript vs PyTorch: other kernels, fp32
RUNTIME_RTOL = 1e-4
VERIFY_BATCHES = (1, 3)
ONNX_INPUT, ONNX_OUTPUT = "input", "logits"


def _max_opset() -> int:
    try:
        from torch.onnx import (
            _constants,  # torch's private record of its exporter's range
        )

        return int(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError):
        return DEFAULT_OPSET


def check_opset(opset: int) -> int:
    """``opset`` if this torch's exporter supports it (QnasError, one line, otherwise)."""
    top = _max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise QnasError(f"ONNX opset must be an integer from {MIN_OPSET} to {top} (this "
                        f"torch's exporter), got {opset!r}")
    return opset


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' deprecation notes and the tracer's note about QuadraConv2d's
    input check (a shape test, not data flow); the outputs are verified instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def onnx_bytes(child: nn.Module, sample: torch.Tensor, opset: int = DEFAULT_OPSET,
               metadata: dict[str, str] | None = None) -> bytes:
    """The child as an ONNX model (TorchScript-based exporter, dynamic batch/height/width)."""
    import onnx

    buffer = io.BytesIO()
    with _quiet(), torch.no_grad():
        torch.onnx.export(child, (sample,), buffer, dynamo=False, opset_version=opset,
                          input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                          dynamic_axes={ONNX_INPUT: {0: "batch", 2: "height", 3: "width"},
                                        ONNX_OUTPUT: {0: "batch"}})
    model = onnx.load_from_string(buffer.getvalue())
    model.producer_name, model.producer_version = "qnas", __version__
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_session(model: bytes | str | os.PathLike, threads: int = 1):
    """An onnxruntime CPU session with a fixed intra-op thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def torchscript_bytes(child: nn.Module, sample: torch.Tensor,
                      extra_files: dict[str, str] | None = None) -> bytes:
    """The child traced to TorchScript (``torch.jit.trace``), serialised."""
    buffer = io.BytesIO()
    with _quiet():
        with torch.no_grad():
            traced = torch.jit.trace(child, sample, check_trace=False)
        torch.jit.save(traced, buffer, _extra_files=extra_files or {})
    return buffer.getvalue()


def load_torchscript(data: bytes):
    """A serialised TorchScript module, loaded on the CPU."""
    with _quiet():
        return torch.jit.load(io.BytesIO(data), map_location="cpu")


# --- verification -----------------------------------------------------------------------------

def _diff(a, b, rtol: float) -> tuple[float, float]:
    """(max |a − b|, max of |a − b| − rtol·|b|): the second is ≤ atol when allclose."""
    a = torch.as_tensor(a, dtype=torch.float32)
    b = torch.as_tensor(b, dtype=torch.float32)
    if a.shape != b.shape:
        return math.inf, math.inf
    delta = (a - b).abs()
    return float(delta.max()), float((delta - rtol * b.abs()).max())


def check_close(rows: list[dict], name: str, shape, got, want, atol: float, rtol: float) -> None:
    """Append one verification row to ``rows``; refuse (QnasError, one line) outputs that are
    not close (``|got − want| ≤ atol + rtol·|want|`` everywhere)."""
    worst, excess = _diff(got, want, rtol)
    passed = math.isfinite(worst) and excess <= atol
    rows.append({"check": name, "input": "x".join(map(str, shape)), "max_abs_diff": worst,
                 "atol": atol, "rtol": rtol, "passed": passed})
    if not passed:
        raise QnasError(f"verification failed, nothing written: {name} differs by max "
                        f"|diff| {worst:.3g} at input {'x'.join(map(str, shape))} (tolerance "
                        f"atol {atol:g}, rtol {rtol:g}); this is a bug — please report it with "
                        f"the output of 'qnas --debug export ...'")


def verify_inputs(in_chans: int, resolution: int) -> torch.Tensor:
    """The random inputs (seed 0) every check runs on: max(VERIFY_BATCHES) images."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(max(VERIFY_BATCHES), in_chans, resolution, resolution,
                       generator=generator)
