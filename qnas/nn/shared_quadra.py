"""The QuadraBlock candidates of one searchable layer with ONE set of weights (a supernet's).

OFA's elastic kernel and width, Single-Path NAS's super-kernel, applied to QuadraBlocks: the
largest candidate (k_max, e_max) holds the weights; candidate (k, e) uses the k×k centre of the
three QuadraConv filters and the first ``round(C · e)`` hidden channels of PW1/PW2; LayerNorms,
biases of the spatial mixer and the layer scales γ are shared whole.

Why: with independent candidates (ProxylessNAS) each block's weights train only when it is
sampled — 1 step in 7 in the quadranet spaces — and a supernet warmed up for a few hundred
steps learns to classify through the stem, the downsampling layers and the head alone. Measured
(search vs random, quadranet_shallow on digit-pairs, 12+12 epochs): with the supernet's weights
the all-identity child scored 59.5% and the searched children 58.7–59.0%, so the accuracy term
could not tell architectures apart and the search did not beat random children. Shared, every
weight trains in 6 of 7 steps and the candidates compute related functions.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import QuadraBlock
from .common import kernel_window
from .quadra import quadra_terms, split_kernels


class SharedQuadraBlock(nn.Module):
    """The weights of every QuadraBlock candidate (kernel_sizes × expansions) of one layer."""

    def __init__(self, dim: int, kernel_sizes: Sequence[int], expansions: Sequence[float],
                 **block_kwargs):
        super().__init__()
        self.dim = dim
        self.max_kernel = max(kernel_sizes)
        self.largest = QuadraBlock(dim, self.max_kernel, max(expansions), **block_kwargs)

    def hidden(self, expansion: float) -> int:
        return int(round(self.dim * expansion))

    def forward_as(self, x: torch.Tensor, kernel_size: int, expansion: float) -> torch.Tensor:
        """The output of candidate (kernel_size, expansion) with the shared weights (plain
        autograd: the slices are differentiable views of the shared tensors)."""
        big = self.largest
        y = big.norm1(x)
        window = kernel_window(self.max_kernel, kernel_size)
        weight = big.spatial.weight[:, :, window, window]
        a, b, c = quadra_terms(y, weight, big.spatial.bias, kernel_size // 2, split_kernels(y))
        x = x + big.drop_path(big.gamma1(a * b + c))
        hidden = self.hidden(expansion)
        mlp = big.mlp
        y = F.conv2d(big.norm2(x), mlp.pw1.weight[:hidden], mlp.pw1.bias[:hidden])
        # PW2 over the first `hidden` inputs as a matmul: its weight slice is a strided view,
        # which a conv would copy (and save for backward: +70% bytes on quadranet)
        weight = mlp.pw2.weight[:, :hidden, 0, 0]
        y = F.linear(mlp.act(y).permute(0, 2, 3, 1), weight, mlp.pw2.bias).permute(0, 3, 1, 2)
        return x + big.drop_path(big.gamma2(y))

    def candidate_state(self, kernel_size: int, expansion: float) -> dict:
        """The state dict of a plain :class:`QuadraBlock` (kernel_size, expansion) with the
        shared weights (what a child inherits)."""
        hidden = self.hidden(expansion)
        window = kernel_window(self.max_kernel, kernel_size)
        state = {}
        for name, value in self.largest.state_dict().items():
            value = value.detach()
            if name == "spatial.weight":
                value = value[:, :, window, window]
            elif name in ("mlp.pw1.weight", "mlp.pw1.bias"):
                value = value[:hidden]
            elif name == "mlp.pw2.weight":
                value = value[:, :hidden]
            state[name] = value.clone()
        return state
