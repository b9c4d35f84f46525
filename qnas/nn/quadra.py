"""The quadratic neuron of QuadraNet: low-rank form, as a depthwise convolution and as a layer.

``y = (A⋆x + a) ⊙ (B⋆x + b) + (C⋆x + c)`` per channel. The three depthwise filters are
stored as ONE grouped convolution with 3C outputs (groups = C). Output channel ``3c + i`` of
that convolution is term ``i`` (0 = A, 1 = B, 2 = C) of channel ``c``:
``weight.view(C, 3, k, k)[:, i]`` is filter A, B or C.

How it runs: as three depthwise convs on CPU and for channels_last CUDA input, where the
libraries run a grouped conv with 3 outputs per group far slower; as that one grouped conv
otherwise (NCHW on CUDA, ``meta``) and in every captured graph (tracing, ONNX export,
scripting, torch.compile). In training, a hand-written
backward keeps only x, A⋆x+a and B⋆x+b (or only x with ``memory_efficient=True``); under
autocast (``--precision bf16|fp16``) it runs entirely in the autocast dtype (x and the filters
are cast before it, so the fp32 weights still get fp32 gradients).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .common import capturing, check_kernel_size, check_positive


def split_kernels(x: torch.Tensor) -> bool:
    """Run the three depthwise filters as three depthwise convs instead of one grouped conv?

    A grouped conv with 3 outputs per group is slow wherever the library lacks a kernel for
    it: on CPU (oneDNN, any layout) and on CUDA for channels_last input (cuDNN; measured on an
    H100: forward 8× slower than three depthwise convs). For contiguous (NCHW) CUDA input the
    one grouped conv is the faster form, and on ``meta`` and in every captured graph (see
    ``QuadraConv2d.forward``) it is the form exporters and predictors see.
    """
    if x.device.type == "cpu":
        return True
    return x.device.type == "cuda" and _memory_format(x) == torch.channels_last


def _filter(weight: torch.Tensor, bias: torch.Tensor | None, term: int):
    """Filter ``term`` (0 = A, 1 = B, 2 = C) as a contiguous [C, 1, k, k] weight and its bias."""
    channels = weight.shape[0] // 3
    w = weight.view(channels, 3, *weight.shape[1:])[:, term].contiguous()
    return w, None if bias is None else bias.view(channels, 3)[:, term].contiguous()


def quadra_terms(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 padding: int, split: bool, count: int = 3) -> list[torch.Tensor]:
    """The first ``count`` of A⋆x+a, B⋆x+b, C⋆x+c (views of one grouped-conv output unless
    ``split``: then three depthwise convs, see :func:`split_kernels`). ``weight``/``bias`` are
    a :class:`QuadraConv2d`'s; the latency builder times QuadraConv's eager path with it."""
    channels = x.shape[1]
    if split:
        return [F.conv2d(x, *_filter(weight, bias, i), padding=padding, groups=channels)
                for i in range(count)]
    z = F.conv2d(x, weight, bias, padding=padding, groups=channels)
    return list(z.unflatten(1, (channels, 3)).unbind(2))[:count]


def _conv_backward(grad, x, weight, padding, groups, bias_size, mask):
    return torch.ops.aten.convolution_backward(
        grad, x, weight, bias_size, [1, 1], [padding, padding], [1, 1], False, [0, 0], groups,
        mask)


class _QuadraConvFunction(torch.autograd.Function):
    """QuadraConv's training path with a hand-written backward.

    Saves x, A⋆x+a and B⋆x+b for backward — the paper's minimum, C⋆x+c and the product are
    not kept — or, with ``recompute``, only x (QuadraLib's trick): the cheap depthwise convs
    are then rerun in the backward pass. The backward forms the 3C-channel gradient
    G = [g⊙(B⋆x+b), g⊙(A⋆x+a), g] and gets the weight and bias gradients of all three filters
    from ONE grouped-conv weight gradient (with ``split``, in channels_last, which oneDNN runs
    ~3× faster than three separate depthwise weight gradients); with ``split`` the input
    gradient comes from three depthwise convs.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding: int, recompute: bool, split: bool):
        a, b, c = quadra_terms(x, weight, bias, padding, split)
        out = c.addcmul_(a, b) if split else torch.addcmul(c, a, b)
        ctx.save_for_backward(x, weight, bias, *(() if recompute else (a, b)))
        ctx.padding, ctx.split = padding, split
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight, bias, *ab = ctx.saved_tensors
        padding, split, channels = ctx.padding, ctx.split, x.shape[1]
        a, b = ab or quadra_terms(x, weight, bias, padding, split, count=2)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        need_b = need_b and bias is not None
        # G, the gradient of the 3C-channel conv output: ∂y/∂(A⋆x) = g⊙(B⋆x+b), ∂y/∂(B⋆x) =
        # g⊙(A⋆x+a), ∂y/∂(C⋆x) = g, written straight into its interleaved channels (3c + i)
        fmt = torch.channels_last if split else _memory_format(x)
        grad_z = torch.empty((x.shape[0], 3 * channels, *x.shape[2:]), dtype=grad_out.dtype,
                             device=grad_out.device, memory_format=fmt)
        terms = grad_z.unflatten(1, (channels, 3)).unbind(2)
        torch.mul(grad_out, b, out=terms[0])
        torch.mul(grad_out, a, out=terms[1])
        terms[2].copy_(grad_out)
        del a, b, ab
        grad_x = grad_w = grad_bias = None
        if split and need_x:
            # three depthwise input gradients: oneDNN's grouped one is far slower
            for term, grad_term in enumerate((*terms[:2], grad_out)):
                part = _conv_backward(grad_term, x, _filter(weight, None, term)[0], padding,
                                      channels, None, [True, False, False])[0]
                grad_x = part if grad_x is None else grad_x.add_(part)
        if need_w or need_b or (need_x and not split):
            bias_size = [weight.shape[0]] if bias is not None else None
            grads = _conv_backward(grad_z, x.contiguous(memory_format=fmt), weight, padding,
                                   channels, bias_size, [need_x and not split, need_w, need_b])
            grad_x = grad_x if split else grads[0]
            grad_w, grad_bias = grads[1], grads[2]
        return grad_x, grad_w, grad_bias, None, None, None


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class QuadraConv2d(nn.Module):
    """Quadratic depthwise convolution ``(A⋆x+a) ⊙ (B⋆x+b) + (C⋆x+c)`` (stride 1, 'same' padding).

    Args:
        channels: number of input (= output) channels C.
        kernel_size: odd k of the k×k depthwise filters.
        bias: learn the biases a, b, c.
        memory_efficient: in training, keep only x for backward and recompute A⋆x+a, B⋆x+b
            there (same outputs and gradients; 2C fewer activations kept per call, two extra
            depthwise convs). The default keeps x, A⋆x+a and B⋆x+b.
    """

    def __init__(self, channels: int, kernel_size: int = 7, bias: bool = True,
                 memory_efficient: bool = False):
        super().__init__()
        check_positive("channels", channels)
        check_kernel_size(kernel_size)
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
        params_need_grad = self.weight.requires_grad or (
            self.bias is not None and self.bias.requires_grad)
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or params_need_grad)
        if capturing():
            # the plain differentiable form: what tracing, export and compilers should see
            a, b, c = quadra_terms(x, self.weight, self.bias, self.padding, split=False)
            return a * b + c
        split = split_kernels(x)
        if needs_grad:
            device_type = x.device.type
            if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
                # mixed precision: the hand-written backward needs x, the filters and the
                # gradient in ONE dtype, so cast them here (differentiably: the fp32 weights get
                # fp32 gradients) and run the function with autocast off
                dtype = torch.get_autocast_dtype(device_type)
                weight, bias = self.weight.to(dtype), None if self.bias is None else \
                    self.bias.to(dtype)
                with torch.autocast(device_type, enabled=False):
                    return _QuadraConvFunction.apply(x.to(dtype), weight, bias, self.padding,
                                                     self.memory_efficient, split)
            return _QuadraConvFunction.apply(x, self.weight, self.bias, self.padding,
                                             self.memory_efficient, split)
        a, b, c = quadra_terms(x, self.weight, self.bias, self.padding, split)
        return c.addcmul_(a, b) if split else a * b + c

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
        check_positive("in_features", in_features)
        check_positive("out_features", out_features)
        self.in_features = in_features
        self.out_features = out_features
        self.proj = nn.Linear(in_features, 3 * out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.proj(x).chunk(3, dim=-1)
        return a * b + c

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
