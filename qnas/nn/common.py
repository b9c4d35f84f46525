"""What the layers of :mod:`qnas.nn` share: argument checks, whether a graph is captured, and
the view through which weight-shared candidates run."""
from __future__ import annotations

import torch
from torch import nn


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


def kernel_window(max_kernel: int, kernel_size: int) -> slice:
    """The rows (and columns) of a max_kernel × max_kernel filter that form its centred
    kernel_size × kernel_size part: how weight-shared candidates of several kernel sizes slice
    the largest one's filters."""
    start = (max_kernel - kernel_size) // 2
    return slice(start, start + kernel_size)


class CandidateView(nn.Module):
    """One candidate (kernel_size, expansion) of a layer whose candidates share one set of
    weights (:class:`~qnas.nn.mbconv.SharedMBConv`,
    :class:`~qnas.nn.shared_quadra.SharedQuadraBlock`): holds no weights of its own and runs
    ``shared.forward_as``."""

    def __init__(self, shared: nn.Module, kernel_size: int, expansion: float):
        super().__init__()
        self.kernel_size, self.expansion = kernel_size, expansion
        object.__setattr__(self, "shared", shared)    # not a submodule: its weights live once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared.forward_as(x, self.kernel_size, self.expansion)

    def extra_repr(self) -> str:
        return f"shared, k={self.kernel_size}, e={self.expansion}"
