"""ProxylessNAS's MobileNetV2-like search backbone of MBConv layers (the paper's NAS baseline).

3×3/2 stem conv + BN + ReLU6, a fixed first MBConv (k3 e1), stages of (width, stride) whose
first layer carries the stride, a final 1×1 conv (feature mix) + BN + ReLU6, global average pool
and a Linear classifier. A layer op ``"identity"`` (ProxylessNAS's "zero" op: only the shortcut
remains) is allowed wherever the shortcut exists.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..nn.mbconv import MBConv, conv_bn
from .ops import IDENTITY, parse_op


class MBConvNet(nn.Module):
    """MobileNetV2-like network of MBConv layers (ProxylessNAS's search backbone).

    Args:
        layers: per stage, a list of ops ``"k5e6"`` / ``"identity"`` (identity only where the
            shortcut exists: not at a stage's first layer when it strides or changes width).
    """

    def __init__(self, layers: Sequence[Sequence[str]], widths: Sequence[int],
                 strides: Sequence[int], num_classes: int = 1000, in_chans: int = 3,
                 stem_width: int = 32, first_block_width: int = 16, head_width: int = 1280,
                 drop_rate: float = 0.0):
        super().__init__()
        if not (len(layers) == len(widths) == len(strides)):
            raise ValueError(f"layers, widths and strides need one entry per stage; got "
                             f"{len(layers)}, {len(widths)}, {len(strides)}")
        self.num_classes = num_classes
        self.layer_ops = [list(stage) for stage in layers]
        self.stem = conv_bn(in_chans, stem_width, 3, stride=2)
        self.first_block = MBConv(stem_width, first_block_width, 3, 1, 1)
        self.stages = nn.ModuleList()
        dim = first_block_width
        for ops, width, stride in zip(self.layer_ops, widths, strides):
            blocks = []
            for position, op in enumerate(ops):
                kind, kwargs = parse_op(op)
                layer_stride = stride if position == 0 else 1
                if kind == IDENTITY:
                    if layer_stride != 1 or dim != width:
                        raise ValueError(f"identity is not possible where the layer strides or "
                                         f"changes width ({dim}→{width}, stride {layer_stride})")
                    blocks.append(nn.Identity())
                else:
                    blocks.append(MBConv(dim, width, kwargs["kernel_size"], kwargs["expansion"],
                                         layer_stride))
                dim = width
            self.stages.append(nn.Sequential(*blocks))
        self.feature_mix = conv_bn(dim, head_width, 1)
        self.num_features = head_width
        self.head = nn.Module()
        self.head.drop = nn.Dropout(drop_rate)
        self.head.fc = nn.Linear(head_width, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        for stage in self.stages:
            x = stage(x)
        return self.feature_mix(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head.drop(x.mean((2, 3)))
        return x if pre_logits else self.head.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
