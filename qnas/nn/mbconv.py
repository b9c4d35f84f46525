"""ProxylessNAS's MBConv block (the paper's NAS baseline space; the network is
:class:`qnas.models.MBConvNet`).

MBConv(k, e) = 1×1 expand (C_in → e·C_in) + BN + ReLU6 (absent when e = 1), k×k depthwise conv
(stride s) + BN + ReLU6, 1×1 project (→ C_out) + BN, plus the identity shortcut when s = 1 and
C_in = C_out — ProxylessNAS's ``MBInvertedConvLayer`` inside a ``MobileInvertedResidualBlock``.
"""
from __future__ import annotations

import torch
from torch import nn


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
