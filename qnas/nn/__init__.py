"""Building blocks: the quadratic neuron (QuadraConv2d, QuadraLinear), the blocks and
KernelWarehouse convolutions (KWConv2d)."""
from .blocks import (
    BLOCKS,
    ChannelMlp,
    ConvBlock,
    GnConv,
    HorBlock,
    KWChannelMlp,
    MetaBlock,
    QuadraBlock,
    QuadraBlockKW,
    SkipBlock,
    SwinBlock,
    WindowAttention,
    build_block,
    is_kw_kind,
)
from .kernelwarehouse import (
    KernelAssembly,
    KWAttention,
    KWConv2d,
    KWManager,
    KWPlan,
    kw_layers,
    kw_temperature,
    plan_warehouse,
    set_kw_temperature,
)
from .mbconv import MBConv
from .quadra import QuadraConv2d, QuadraLinear

__all__ = [
    "QuadraConv2d", "QuadraLinear", "QuadraBlock", "ConvBlock", "HorBlock", "SwinBlock",
    "SkipBlock", "GnConv", "WindowAttention", "ChannelMlp", "MetaBlock", "BLOCKS", "build_block",
    "MBConv",
    "KWConv2d", "KWManager", "KWPlan", "KWAttention", "KernelAssembly", "QuadraBlockKW",
    "KWChannelMlp", "kw_temperature", "set_kw_temperature", "kw_layers", "plan_warehouse",
    "is_kw_kind",
]
