"""Building blocks: the quadratic neuron (QuadraConv2d, QuadraLinear) and the blocks."""
from .blocks import (BLOCKS, ChannelMlp, ConvBlock, GnConv, HorBlock, MetaBlock, QuadraBlock,
                     SkipBlock, SwinBlock, WindowAttention, build_block)
from .mbconv import MBConv, MBConvNet
from .quadra import QuadraConv2d, QuadraLinear

__all__ = [
    "QuadraConv2d", "QuadraLinear", "QuadraBlock", "ConvBlock", "HorBlock", "SwinBlock",
    "SkipBlock", "GnConv", "WindowAttention", "ChannelMlp", "MetaBlock", "BLOCKS", "build_block",
    "MBConv", "MBConvNet",
]
