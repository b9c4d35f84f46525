"""What the layers of :mod:`qnas.nn` share: argument checks and whether a graph is captured."""
from __future__ import annotations

import torch


def check_positive(name: str, value: int) -> None:
    """Refuse (ValueError) a ``value`` that is not a positive integer."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_kernel_size(kernel_size: int) -> None:
    """Refuse (ValueError) a kernel size that is not a positive odd integer."""
    check_positive("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(
            f"kernel_size must be odd so the output keeps the input's size, got {kernel_size} "
            f"(use e.g. 3, 5 or 7)"
        )


def capturing() -> bool:
    """Whether the forward runs inside a captured graph (scripting, tracing, ONNX export,
    torch.compile): layers then take their plain, exportable form."""
    return (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling())
