"""ProxylessNAS's MBConv block (the paper's NAS baseline space; the network is
:class:`qnas.models.MBConvNet`).

MBConv(k, e) = 1×1 expand (C_in → e·C_in) + BN + ReLU6 (absent when e = 1), k×k depthwise conv
(stride s) + BN + ReLU6, 1×1 project (→ C_out) + BN, plus the identity shortcut when s = 1 and
C_in = C_out — ProxylessNAS's ``MBInvertedConvLayer`` inside a ``MobileInvertedResidualBlock``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import kernel_window


def conv_bn(cin: int, cout: int, kernel_size: int, stride: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, groups=groups,
                        bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: expand 1×1, depthwise k×k (stride), project 1×1, shortcut."""

    def __init__(self, in_dim: int, out_dim: int | None = None, kernel_size: int = 3,
                 expansion: float = 6, stride: int = 1):
        super().__init__()
        out_dim = in_dim if out_dim is None else out_dim
        if kernel_size % 2 == 0 or kernel_size <= 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(in_dim * expansion))
        if hidden <= 0:
            raise ValueError(f"expansion must be positive, got {expansion!r}")
        self.in_dim, self.out_dim, self.stride = in_dim, out_dim, stride
        self.kernel_size, self.expansion = kernel_size, expansion
        self.expand = conv_bn(in_dim, hidden, 1) if hidden != in_dim else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, kernel_size, stride, groups=hidden)
        self.project = conv_bn(hidden, out_dim, 1, act=False)
        self.has_shortcut = stride == 1 and in_dim == out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.has_shortcut else y

    def extra_repr(self) -> str:
        return (f"{self.in_dim}→{self.out_dim}, k={self.kernel_size}, e={self.expansion}, "
                f"stride={self.stride}")


class SharedMBConv(nn.Module):
    """The weights of ALL MBConv candidates of one searchable layer, shared (OFA's elastic
    kernel and width, Single-Path NAS's super-kernel): the largest kernel and expansion hold
    the weights; a candidate (k, e) uses the k×k centre of the depthwise kernels and the first
    ``round(in_dim · e)`` hidden channels (and their BatchNorm entries).

    Why: with independent candidates (ProxylessNAS), a layer without a shortcut (a stage's
    first, strided layer) hands the next layer a different random feature basis every step,
    and a short warm-up never gets off the ground (measured on digits, 6 epochs: train loss
    stuck at 2.3–2.6, chance; sampling among independent candidates at even ONE residual layer
    slowed a child's training from loss 0.99 to 1.89 in 3 epochs). Shared candidates compute
    related functions, so the supernet trains like one network (with :meth:`zero_init_last`:
    96% train, 83% validation top-1 after the same 6 epochs), and every candidate's child
    inherits weights that were trained.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_sizes, expansions, stride: int = 1):
        super().__init__()
        self.in_dim, self.out_dim, self.stride = in_dim, out_dim, stride
        self.max_kernel = max(kernel_sizes)
        hidden = max(int(round(in_dim * e)) for e in expansions)
        # the layers of the largest candidate: its state-dict names are MBConv's
        self.largest = MBConv(in_dim, out_dim, self.max_kernel, max(expansions), stride)
        if isinstance(self.largest.expand, nn.Identity) or \
                self.largest.depthwise[0].out_channels != hidden:
            raise ValueError("shared MBConv candidates need an expansion > 1")

    def zero_init_last(self) -> None:
        """Start a residual layer as the identity (its projection BN's γ = 0, timm's
        ``zero_init_last``): sampled candidates then perturb a shared signal instead of
        replacing it with a random one each step. Call after any weight initialisation."""
        if self.largest.has_shortcut:
            nn.init.zeros_(self.largest.project[1].weight)

    def forward_as(self, x: torch.Tensor, kernel_size: int, expansion: float) -> torch.Tensor:
        """The output of candidate (kernel_size, expansion) with the shared weights."""
        big = self.largest
        hidden = int(round(self.in_dim * expansion))
        if hidden == self.in_dim:            # an e = 1 candidate has no expansion layer
            y = x
        else:
            y = _conv_bn_slice(x, big.expand, hidden, slice_in=False)
        y = _conv_bn_slice(y, big.depthwise, hidden, kernel_size=kernel_size, depthwise=True,
                           stride=self.stride)
        y = _conv_bn_slice(y, big.project, big.out_dim, in_channels=hidden)
        return x + y if big.has_shortcut else y

    def candidate_state(self, kernel_size: int, expansion: float) -> dict:
        """The state dict of a plain :class:`MBConv` (kernel_size, expansion) with the shared
        weights (what a child inherits)."""
        big = self.largest
        hidden = int(round(self.in_dim * expansion))
        state = {}
        if hidden != self.in_dim:
            state.update(_sliced(big.expand, "expand", hidden))
        state.update(_sliced(big.depthwise, "depthwise", hidden, kernel_size=kernel_size,
                             max_kernel=self.max_kernel))
        state.update(_sliced(big.project, "project", big.out_dim, in_channels=hidden))
        return state


def _conv_bn_slice(x, block: nn.Sequential, channels: int, slice_in: bool = True,
                   kernel_size: int | None = None, depthwise: bool = False, stride: int = 1,
                   in_channels: int | None = None) -> torch.Tensor:
    """conv → BN (→ ReLU6) of ``block`` restricted to its first ``channels`` outputs (and
    ``in_channels`` inputs; the k×k centre for a depthwise conv)."""
    conv, norm = block[0], block[1]
    weight = conv.weight[:channels]
    if in_channels is not None:
        weight = weight[:, :in_channels]
    padding = conv.padding
    if kernel_size is not None:
        window = kernel_window(conv.kernel_size[0], kernel_size)
        weight = weight[:, :, window, window]
        padding = kernel_size // 2
    y = F.conv2d(x, weight, None, stride if depthwise else conv.stride, padding,
                 groups=channels if depthwise else 1)
    factor = 0.0                 # as nn.BatchNorm2d: momentum None = a cumulative average
    if norm.training and norm.track_running_stats:
        norm.num_batches_tracked.add_(1)
        factor = (1.0 / float(norm.num_batches_tracked) if norm.momentum is None
                  else norm.momentum)
    y = F.batch_norm(y, norm.running_mean[:channels], norm.running_var[:channels],
                     norm.weight[:channels], norm.bias[:channels],
                     norm.training or not norm.track_running_stats, factor, norm.eps)
    return F.relu6(y) if len(block) > 2 else y


def _sliced(block: nn.Sequential, name: str, channels: int, in_channels: int | None = None,
            kernel_size: int | None = None, max_kernel: int | None = None) -> dict:
    conv, norm = block[0], block[1]
    weight = conv.weight.detach()[:channels]
    if in_channels is not None:
        weight = weight[:, :in_channels]
    if kernel_size is not None:
        window = kernel_window(max_kernel, kernel_size)
        weight = weight[:, :, window, window]
    out = {f"{name}.0.weight": weight.clone()}
    for key in ("weight", "bias", "running_mean", "running_var"):
        out[f"{name}.1.{key}"] = getattr(norm, key).detach()[:channels].clone()
    out[f"{name}.1.num_batches_tracked"] = norm.num_batches_tracked.detach().clone()
    return out
