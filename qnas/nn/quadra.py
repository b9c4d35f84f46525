"""The quadratic neuron of QuadraNet: low-rank form, as a depthwise convolution and as a layer.

``y = (A⋆x + a) ⊙ (B⋆x + b) + (C⋆x + c)`` per channel. The three depthwise filters are
stored as ONE grouped convolution with 3C outputs (groups = C), so a single kernel launch
computes all three terms. Output channel ``3c + i`` of that convolution is term ``i`` (0 = A,
1 = B, 2 = C) of channel ``c``: ``weight.view(C, 3, k, k)[:, i]`` is filter A, B or C.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_kernel_size(kernel_size: int) -> None:
    _check_positive("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(
            f"kernel_size must be odd so the output keeps the input's size, got {kernel_size} "
            f"(use e.g. 3, 5 or 7)"
        )


class _QuadraConvRecompute(torch.autograd.Function):
    """Quadratic depthwise conv that saves only its input (and the parameters) for backward.

    The backward pass recomputes the cheap depthwise convolution to get A⋆x+a and B⋆x+b
    (QuadraLib's trick), then one ``convolution_backward`` gives the grads of x, weight, bias.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding: int):
        channels = x.shape[1]
        z = F.conv2d(x, weight, bias, padding=padding, groups=channels)
        a, b, c = z.unflatten(1, (channels, 3)).unbind(2)
        # weight and bias are parameters: saving them keeps no extra memory alive
        ctx.save_for_backward(x, weight, bias)
        ctx.padding = padding
        return torch.addcmul(c, a, b)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias = ctx.saved_tensors
        channels = x.shape[1]
        z = F.conv2d(x, weight, bias, padding=ctx.padding, groups=channels)
        z = z.unflatten(1, (channels, 3))
        # dy/d(A*x) = g*(B*x+b), dy/d(B*x) = g*(A*x+a), dy/d(C*x) = g
        grad_z = torch.stack((grad_out * z[:, :, 1], grad_out * z[:, :, 0], grad_out), dim=2)
        del z
        grad_z = grad_z.flatten(1, 2)
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_z, x, weight, [weight.shape[0]] if bias is not None else None,
            [1, 1], [ctx.padding, ctx.padding], [1, 1], False, [0, 0], channels,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
             bias is not None and ctx.needs_input_grad[2]],
        )
        return grad_x, grad_w, grad_b, None


class QuadraConv2d(nn.Module):
    """Quadratic depthwise convolution ``(A⋆x+a) ⊙ (B⋆x+b) + (C⋆x+c)`` (stride 1, 'same' padding).

    Args:
        channels: number of input (= output) channels C.
        kernel_size: odd k of the k×k depthwise filters.
        bias: learn the biases a, b, c.
        memory_efficient: in training, keep only x for backward and recompute A⋆x, B⋆x
            (same outputs and gradients; less activation memory, one extra depthwise conv).
    """

    def __init__(self, channels: int, kernel_size: int = 7, bias: bool = True,
                 memory_efficient: bool = False):
        super().__init__()
        _check_positive("channels", channels)
        _check_kernel_size(kernel_size)
        self.channels = channels
        self.kernel_size = kernel_size
        self.padding = kernel_size // 2
        self.memory_efficient = memory_efficient
        self.weight = nn.Parameter(torch.empty(3 * channels, 1, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(3 * channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the same default as nn.Conv2d (fan_in = k*k for a depthwise filter)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.kernel_size * self.kernel_size)
            nn.init.uniform_(self.bias, -bound, bound)

    def filters(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The A, B, C filters as three [C, 1, k, k] tensors (views of ``weight``)."""
        w = self.weight.view(self.channels, 3, 1, self.kernel_size, self.kernel_size)
        return w[:, 0], w[:, 1], w[:, 2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"QuadraConv2d({self.channels}) expects N×{self.channels}×H×W input, "
                             f"got shape {tuple(x.shape)}")
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or self.weight.requires_grad)
        if self.memory_efficient and needs_grad:
            return _QuadraConvRecompute.apply(x, self.weight, self.bias, self.padding)
        z = F.conv2d(x, self.weight, self.bias, padding=self.padding, groups=self.channels)
        a, b, c = z.unflatten(1, (self.channels, 3)).unbind(2)
        return a * b + c

    def extra_repr(self) -> str:
        return (f"{self.channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}, "
                f"memory_efficient={self.memory_efficient}")


class QuadraLinear(nn.Module):
    """The quadratic neuron as a layer: ``(W_a x + b_a) ⊙ (W_b x + b_b) + W_c x + b_c``.

    One ``Linear`` with 3·out_features outputs computes the three terms (rows
    ``[0:out]`` = a, ``[out:2out]`` = b, ``[2out:3out]`` = c).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        _check_positive("in_features", in_features)
        _check_positive("out_features", out_features)
        self.in_features = in_features
        self.out_features = out_features
        self.proj = nn.Linear(in_features, 3 * out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.proj(x).chunk(3, dim=-1)
        return a * b + c

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
