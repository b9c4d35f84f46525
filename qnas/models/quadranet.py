"""The QuadraNet family (timm-style: one file, constructors registered by name).

Stem: 4×4 conv stride 4 + LayerNorm. Four stages of widths [C, 2C, 4C, 8C]; between stages
LayerNorm + 2×2 conv stride 2. Head: global average pool, LayerNorm, Linear.

Any block kind and any per-layer (kernel, expansion) list can be built, because NAS children
are QuadraNets with mixed layers: pass ``layers=[[op, ...] per stage]`` where an op is a string
like ``"k5e2"`` (QuadraBlock, kernel 5, expansion 2), ``"k5e2kw"`` (the same with
KernelWarehouse PW1/PW2), ``"identity"``, or a dict ``{"kind": "hor", "order": 3, ...}`` for
:func:`qnas.nn.build_block`.

KernelWarehouse layers (``…kw`` ops, kind ``quadra-kw``) share one warehouse per stage: the
network owns a :class:`qnas.nn.KWManager` at ``self.kw`` (warehouses at
``kw.warehouses.stage<s>``), sized ``ceil(kw_ratio · cells of the stage's KW layers)`` unless
``kw_plan`` fixes a stage's size (a search space does: for the stage's maximal architecture, so
that a child's warehouses match its supernet's).
"""
from __future__ import annotations

from typing import Sequence

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import LayerNorm, LayerNorm2d, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from ..errors import QnasError
from ..nn.blocks import LN_EPS, build_block, is_kw_kind
from ..nn.kernelwarehouse import KWManager, KWPlan
from .ops import HOR_ORDERS, IDENTITY, parse_op


class QuadraNet(nn.Module):
    """QuadraNet backbone + classifier.

    Args:
        width: C, the width of the first stage (stages are C, 2C, 4C, 8C).
        depths: blocks per stage (ignored when ``layers`` is given).
        block: block kind for every layer (``quadra``, ``conv``, ``hor``, ``swin``, ``skip``).
        kernel_size, expansion: for every layer (ignored when ``layers`` is given).
        layers: per stage, a list of ops (see module doc); identity layers stay as nn.Identity.
        drop_path_rate: stochastic depth, linear over all layers.
        layer_scale_init: γ init of every block (1e-6 in the paper's from-scratch training).
        kw_ratio: KernelWarehouse cells per cell of a stage's KW layers (``…kw`` ops).
        kw_plan: per stage index, a :class:`qnas.nn.KWPlan` fixing that stage's warehouse
            (cell shape, size) instead of sizing it by the stage's own KW layers.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width: int = 64,
                 depths: Sequence[int] = (2, 3, 18, 2), block: str = "quadra",
                 kernel_size: int = 7, expansion: float = 4,
                 layers: Sequence[Sequence[str | dict]] | None = None,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 layer_scale_init: float | None = 1e-6, head_init_scale: float = 1.0,
                 memory_efficient: bool = False, global_pool: str = "avg",
                 kw_ratio: float = 0.5, kw_plan: dict[int, KWPlan] | None = None):
        super().__init__()
        if not isinstance(width, int) or width <= 0:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        if layers is None:
            default_op = {"kind": block}
            if block not in ("skip", "swin"):
                default_op["kernel_size"] = kernel_size
            default_op["expansion"] = expansion
            layers = [[default_op] * d for d in depths]
        if len(layers) != 4:
            raise ValueError(f"QuadraNet has 4 stages; got {len(layers)} stage lists")
        self.num_classes = num_classes
        self.dims = [width, 2 * width, 4 * width, 8 * width]
        self.layer_ops = [list(stage) for stage in layers]
        self.num_features = self.head_hidden_size = self.dims[-1]
        self.drop_rate = drop_rate
        self.global_pool = global_pool

        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 4, stride=4),
                                  LayerNorm2d(width, eps=LN_EPS))
        self.downsamples = nn.ModuleList(
            nn.Sequential(LayerNorm2d(self.dims[i], eps=LN_EPS),
                          nn.Conv2d(self.dims[i], self.dims[i + 1], 2, stride=2))
            for i in range(3))
        total = sum(len(stage) for stage in self.layer_ops)
        rates = torch.linspace(0, drop_path_rate, max(total, 1)).tolist()
        # KernelWarehouse: one warehouse per stage, shared by the stage's kw blocks
        uses_kw = any(is_kw_kind(parse_op(op)[0]) for ops in self.layer_ops for op in ops)
        self.kw = KWManager(ratio=kw_ratio) if uses_kw else None
        if self.kw is not None:
            for stage_index, plan in (kw_plan or {}).items():
                self.kw.plan(f"stage{stage_index}", plan)
        self.stages = nn.ModuleList()
        index = 0
        for stage_index, ops in enumerate(self.layer_ops):
            blocks = []
            for op in ops:
                kind, kwargs = parse_op(op)
                if kind != IDENTITY:
                    kwargs.setdefault("drop_path", rates[index])
                    kwargs.setdefault("layer_scale_init", layer_scale_init)
                    if kind == "hor":
                        kwargs.setdefault("order", HOR_ORDERS[stage_index])
                    if (kind == "quadra" or is_kw_kind(kind)) and memory_efficient:
                        kwargs.setdefault("memory_efficient", True)
                    if is_kw_kind(kind):
                        kwargs.update(kw=self.kw, kw_group=f"stage{stage_index}")
                blocks.append(build_block(kind, self.dims[stage_index], **kwargs))
                index += 1
            self.stages.append(nn.Sequential(*blocks))
        if self.kw is not None:
            self.kw.allocate()
        self.head = nn.Module()
        self.head.norm = LayerNorm(self.dims[-1], eps=LN_EPS)
        self.head.drop = nn.Dropout(drop_rate)
        self.head.fc = nn.Linear(self.dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        if isinstance(self.head.fc, nn.Linear):
            self.head.fc.weight.data.mul_(head_init_scale)
            self.head.fc.bias.data.mul_(head_init_scale)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsamples[i - 1](x)
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head.drop(self.head.norm(x.mean((2, 3))))
        return x if pre_logits else self.head.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --- the registered family -------------------------------------------------------------------

# name → (width C, depths); the paper's L-XXS … L-B at 25 and 36 layers
MODEL_SIZES = {"xxs": 16, "xs": 32, "t": 64, "s": 96, "b": 128}
DEPTHS = {"": (2, 3, 18, 2), "_36": (3, 3, 27, 3)}


def _cfg(**kwargs) -> dict:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "stem.0", "classifier": "head.fc",
        "license": "mit", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    f"quadranet_{size}{suffix}": _cfg() for size in MODEL_SIZES for suffix in DEPTHS})


def _create(variant: str, pretrained: bool = False, **kwargs) -> QuadraNet:
    if pretrained:
        raise QnasError(f"no pretrained weights exist for {variant} and qnas never downloads; "
                        f"train one with 'qnas retrain' or load a checkpoint yourself")
    return build_model_with_cfg(QuadraNet, variant, pretrained=False, **kwargs)


def _register(size: str, suffix: str) -> None:
    name = f"quadranet_{size}{suffix}"

    def constructor(pretrained: bool = False, **kwargs) -> QuadraNet:
        kwargs.setdefault("width", MODEL_SIZES[size])
        kwargs.setdefault("depths", DEPTHS[suffix])
        return _create(name, pretrained, **kwargs)

    constructor.__name__ = constructor.__qualname__ = name
    constructor.__doc__ = (f"QuadraNet-{size.upper()}{suffix}: C={MODEL_SIZES[size]}, "
                           f"depths={list(DEPTHS[suffix])}, QuadraBlock k=7 e=4.")
    constructor.__module__ = __name__
    globals()[name] = register_model(constructor)


for _size in MODEL_SIZES:
    for _suffix in DEPTHS:
        _register(_size, _suffix)

MODEL_NAMES = [f"quadranet_{size}{suffix}" for suffix in DEPTHS for size in MODEL_SIZES]
