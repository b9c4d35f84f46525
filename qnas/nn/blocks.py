"""QuadraBlock and the paper's baseline blocks, all on one ConvNeXt/HorNet meta-architecture.

Every block maps N×C×H×W to N×C×H×W and is pre-norm with two residual branches::

    x = x + DropPath(γ1 · SpatialMixer(LayerNorm(x)))      # absent in SkipBlock
    x = x + DropPath(γ2 · PW2(GELU(PW1(LayerNorm(x)))))    # PW1: C→eC, PW2: eC→C (1×1 convs)

Only the spatial mixer differs: QuadraConv (QuadraBlock), a plain depthwise conv (ConvBlock),
HorNet's gnConv (HorBlock), 7×7 window self-attention (SwinBlock), or nothing (SkipBlock).
QuadraBlockKW is a QuadraBlock whose PW1/PW2 are KernelWarehouse convolutions
(:mod:`qnas.nn.kernelwarehouse`).
PW1/PW2 are 1×1 convolutions (the same maths as Linear on channels-last) so that every
exporter and latency predictor sees them as the convolutions they are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, LayerScale2d, trunc_normal_
from torch import nn

from .common import check_kernel_size, check_positive
from .kernelwarehouse import KWConv2d, KWManager, KWPlan
from .mbconv import MBConv
from .quadra import QuadraConv2d

LN_EPS = 1e-6


class ChannelMlp(nn.Module):
    """PW1 (C→eC) → GELU → PW2 (eC→C), as 1×1 convolutions."""

    def __init__(self, dim: int, expansion: float = 4):
        super().__init__()
        hidden = int(round(dim * expansion))
        check_positive("hidden channels (dim × expansion)", hidden)
        self.pw1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.pw2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.pw2(self.act(self.pw1(x)))


class MetaBlock(nn.Module):
    """The shared block skeleton; subclasses only choose the spatial mixer."""

    def __init__(self, dim: int, spatial: nn.Module | None, expansion: float = 4,
                 drop_path: float = 0.0, layer_scale_init: float | None = 1e-6,
                 mlp: nn.Module | None = None):
        super().__init__()
        check_positive("dim", dim)
        if not expansion or expansion <= 0:
            raise ValueError(f"expansion must be positive, got {expansion!r}")
        self.dim = dim
        self.expansion = expansion
        if spatial is not None:
            self.norm1 = LayerNorm2d(dim, eps=LN_EPS)
            self.spatial = spatial
            self.gamma1 = _layer_scale(dim, layer_scale_init)
        else:
            self.norm1 = self.spatial = self.gamma1 = None
        self.norm2 = LayerNorm2d(dim, eps=LN_EPS)
        self.mlp = ChannelMlp(dim, expansion) if mlp is None else mlp
        self.gamma2 = _layer_scale(dim, layer_scale_init)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial is not None:
            x = x + self.drop_path(self.gamma1(self.spatial(self.norm1(x))))
        return x + self.drop_path(self.gamma2(self.mlp(self.norm2(x))))


def _layer_scale(dim: int, init: float | None) -> nn.Module:
    return LayerScale2d(dim, init) if init else nn.Identity()


class QuadraBlock(MetaBlock):
    """QuadraNet's block: quadratic depthwise conv for spatial mixing, GELU MLP for channels.

    At expansion 4 and kernel 7 it has exactly 8C² + 161C parameters.
    """

    def __init__(self, dim: int, kernel_size: int = 7, expansion: float = 4,
                 drop_path: float = 0.0, layer_scale_init: float | None = 1e-6,
                 memory_efficient: bool = False, mlp: nn.Module | None = None):
        check_positive("dim", dim)
        check_kernel_size(kernel_size)
        super().__init__(dim, QuadraConv2d(dim, kernel_size, memory_efficient=memory_efficient),
                         expansion, drop_path, layer_scale_init, mlp)
        self.kernel_size = kernel_size


class KWChannelMlp(nn.Module):
    """PW1 (C→eC) → GELU → PW2 (eC→C) as KernelWarehouse 1×1 convolutions of one group."""

    def __init__(self, dim: int, expansion: float, kw: KWManager, group: str):
        super().__init__()
        hidden = int(round(dim * expansion))
        check_positive("hidden channels (dim × expansion)", hidden)
        self.pw1 = KWConv2d(dim, hidden, 1, kw=kw, group=group)
        self.act = nn.GELU()
        self.pw2 = KWConv2d(hidden, dim, 1, kw=kw, group=group)

    def forward(self, x):
        return self.pw2(self.act(self.pw1(x)))


class QuadraBlockKW(QuadraBlock):
    """QuadraBlock whose channel MLP (PW1, PW2) are KernelWarehouse convolutions.

    The QuadraConv spatial mixer stays static. ``kw`` is the network's :class:`KWManager` and
    ``kw_group`` the sharing group (QuadraNet: ``"stage<s>"``); the block runs once
    ``kw.allocate()`` has been called. Without ``kw`` the block makes a private manager
    (``ratio=kw_ratio``, sized by ``kw_plan`` if given, else by its own two convolutions),
    allocates it at once and registers it as ``self.kw`` — a self-contained block, e.g. for a
    latency table, whose warehouse has the size ``kw_plan`` says the network's has.
    """

    def __init__(self, dim: int, kernel_size: int = 7, expansion: float = 4,
                 drop_path: float = 0.0, layer_scale_init: float | None = 1e-6,
                 memory_efficient: bool = False, kw: KWManager | None = None,
                 kw_group: str = "block", kw_ratio: float = 0.5, kw_plan: KWPlan | None = None):
        check_positive("dim", dim)
        private = kw is None
        if private:
            kw = KWManager(ratio=kw_ratio)
            if kw_plan is not None:
                kw.plan(kw_group, kw_plan)
        elif kw_plan is not None:
            raise ValueError("kw_plan sizes a private warehouse; plan a shared one on its "
                             "KWManager")
        mlp = KWChannelMlp(dim, expansion, kw, kw_group)
        super().__init__(dim, kernel_size, expansion, drop_path, layer_scale_init,
                         memory_efficient, mlp)
        self.kw_group = kw_group
        if private:
            kw.allocate()
            self.kw = kw

    @staticmethod
    def kw_conv_shapes(dim: int, expansion: float) -> list[tuple[int, int, int, int]]:
        """The (out, in, kh, kw) kernels of its KW convolutions: PW1 and PW2."""
        hidden = int(round(dim * expansion))
        return [(hidden, dim, 1, 1), (dim, hidden, 1, 1)]


class ConvBlock(MetaBlock):
    """ConvNeXt-style block: a plain k×k depthwise conv for spatial mixing."""

    def __init__(self, dim: int, kernel_size: int = 7, expansion: float = 4,
                 drop_path: float = 0.0, layer_scale_init: float | None = 1e-6):
        check_positive("dim", dim)
        check_kernel_size(kernel_size)
        dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        super().__init__(dim, dwconv, expansion, drop_path, layer_scale_init)
        self.kernel_size = kernel_size


class GnConv(nn.Module):
    """HorNet's recursive gated convolution of order n (gnConv).

    proj_in (C→2C) splits into p0 (C/2^(n-1) channels) and q (the rest); one shared depthwise
    conv over q, scaled by s, splits into widths [C/2^(n-1), …, C/2, C]; then
    p_{i+1} = W_i(p_i) ⊙ q_i and a final 1×1 projection.
    """

    def __init__(self, dim: int, order: int = 3, kernel_size: int = 7, scale: float = 1.0 / 3):
        super().__init__()
        check_positive("order", order)
        if dim % (2 ** (order - 1)):
            raise ValueError(f"gnConv of order {order} needs dim divisible by {2 ** (order - 1)}, "
                             f"got {dim}")
        self.order = order
        self.dims = [dim // 2 ** i for i in range(order)][::-1]
        self.scale = scale
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        self.dwconv = nn.Conv2d(sum(self.dims), sum(self.dims), kernel_size,
                                padding=kernel_size // 2, groups=sum(self.dims))
        self.pws = nn.ModuleList(nn.Conv2d(self.dims[i], self.dims[i + 1], 1)
                                 for i in range(order - 1))
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        p, q = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        gates = torch.split(self.dwconv(q) * self.scale, self.dims, dim=1)
        x = p * gates[0]
        for pw, gate in zip(self.pws, gates[1:]):
            x = pw(x) * gate
        return self.proj_out(x)


class HorBlock(MetaBlock):
    """HorNet's block: gnConv of order n (2, 3, 4, 5 by stage in the paper), s = 1/3."""

    def __init__(self, dim: int, order: int = 3, kernel_size: int = 7, expansion: float = 4,
                 drop_path: float = 0.0, layer_scale_init: float | None = 1e-6,
                 scale: float = 1.0 / 3):
        check_positive("dim", dim)
        check_kernel_size(kernel_size)
        super().__init__(dim, GnConv(dim, order, kernel_size, scale), expansion, drop_path,
                         layer_scale_init)
        self.order = order


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping w×w windows, relative position bias.

    Takes and returns N×C×H×W; pads H and W up to a multiple of the window (zeros, as Swin).
    """

    def __init__(self, dim: int, num_heads: int | None = None, window_size: int = 7):
        super().__init__()
        check_positive("window_size", window_size)
        num_heads = num_heads or max(1, dim // 32)
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.window_size = dim, num_heads, window_size
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        w = window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * w - 1) ** 2, num_heads))
        trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij"))
        coords = coords.flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (w - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * w - 1) + rel[..., 1],
                             persistent=False)

    def forward(self, x):
        n, c, h, w_ = x.shape
        ws = self.window_size
        pad_h, pad_w = (-h) % ws, (-w_) % ws
        x = x.permute(0, 2, 3, 1)
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w_ + pad_w
        # partition into windows: (n * nW, ws*ws, c)
        x = x.reshape(n, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(-1, ws * ws, c)
        qkv = self.qkv(x).reshape(x.shape[0], ws * ws, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(ws * ws, ws * ws, -1).permute(2, 0, 1).unsqueeze(0)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(-1, ws * ws, c)
        x = self.proj(x)
        x = x.reshape(n, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(n, hp, wp, c)[:, :h, :w_]
        return x.permute(0, 3, 1, 2).contiguous()


class SwinBlock(MetaBlock):
    """Swin-style block: 7×7 window self-attention (relative position bias) for spatial mixing."""

    def __init__(self, dim: int, num_heads: int | None = None, window_size: int = 7,
                 expansion: float = 4, drop_path: float = 0.0,
                 layer_scale_init: float | None = 1e-6):
        check_positive("dim", dim)
        super().__init__(dim, WindowAttention(dim, num_heads, window_size), expansion, drop_path,
                         layer_scale_init)


class SkipBlock(MetaBlock):
    """No spatial mixing at all (and no residual for it): only the channel MLP branch."""

    def __init__(self, dim: int, expansion: float = 4, drop_path: float = 0.0,
                 layer_scale_init: float | None = 1e-6):
        super().__init__(dim, None, expansion, drop_path, layer_scale_init)


BLOCKS: dict[str, type[nn.Module]] = {
    "quadra": QuadraBlock,
    "quadra-kw": QuadraBlockKW,
    "conv": ConvBlock,
    "hor": HorBlock,
    "swin": SwinBlock,
    "skip": SkipBlock,
    "mbconv": MBConv,        # ProxylessNAS's block, for the MBConv baseline space
}


_ALIASES = {"quadra_kw": "quadra-kw", "quadrakw": "quadra-kw", "kw": "quadra-kw"}


def is_kw_kind(kind: str) -> bool:
    """Is ``kind`` the KernelWarehouse QuadraBlock (``quadra-kw``)?"""
    key = str(kind).lower().removesuffix("block")
    return _ALIASES.get(key, key) == "quadra-kw"


def build_block(kind: str, dim: int, **kwargs) -> nn.Module:
    """Build a block by kind: ``quadra``, ``quadra-kw`` (QuadraBlock with KernelWarehouse
    PW1/PW2), ``conv``, ``hor``, ``swin``, ``skip`` (or ``identity``).

    Extra keyword arguments go to the block (e.g. ``kernel_size``, ``expansion``, ``order``);
    ones a block kind does not take (``kernel_size`` for ``skip``) are refused with a message.
    """
    key = str(kind).lower().removesuffix("block")
    key = _ALIASES.get(key, key)
    if key == "identity":
        return nn.Identity()
    if key not in BLOCKS:
        raise ValueError(f"unknown block kind {kind!r}; known kinds: "
                         f"{', '.join([*BLOCKS, 'identity'])}")
    try:
        return BLOCKS[key](dim, **kwargs)
    except TypeError as err:
        raise ValueError(f"block kind {key!r} does not accept these arguments: {err}") from None
