"""The settings of the block benchmark (both parts: Table II's stacks and QuadraConv2d vs the
naive three convolutions), its input, and the ratio columns of its tables.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Iterable, Sequence

import pandas as pd
import torch

from ..errors import QnasError
from ..runtime.threads import BENCHMARK, resolve_threads

BLOCK_KINDS = ("quadra", "quadra-me", "hor", "conv", "swin", "skip")
REFERENCE_KIND = "quadra"


@dataclass
class BlockBenchConfig:
    """What to measure (both parts). Defaults finish in a few minutes on 2 CPU cores.

    ``resolution`` 56 is the stage-1 map of a 224×224 input. ``hor_order`` 2 is HorNet's gnConv
    order at that stage (its cheapest; HorNet uses 2, 3, 4, 5 by stage). ``channels_last``
    feeds every stack an NHWC-strided input (LayerNorm2d then needs no layout copies; the same
    for every kind). ``threads``: torch intra-op threads while measuring (default: every core
    this process may use, the benchmark policy of :mod:`qnas.runtime.threads`).
    """

    kinds: Sequence[str] = BLOCK_KINDS
    channels: Sequence[int] = (64, 128)
    layers: int = 24
    batch: int = 4
    resolution: int = 56
    kernel_size: int = 7
    hor_order: int = 2
    repeats: int = 3
    warmup: int = 1
    threads: int = field(default_factory=lambda: resolve_threads(None, BENCHMARK))
    device: str = "cpu"
    channels_last: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self.kinds = tuple(parse_kinds(self.kinds))
        self.channels = tuple(parse_channels(self.channels))
        for name in ("layers", "batch", "resolution", "kernel_size", "hor_order", "repeats",
                     "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise QnasError(f"{name.replace('_', '-')} must be a positive integer, "
                                f"got {value!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise QnasError(f"warmup must be a non-negative integer, got {self.warmup!r}")
        if self.kernel_size % 2 == 0:
            raise QnasError(f"kernel-size must be odd so blocks keep their map size, got "
                            f"{self.kernel_size} (use e.g. 3, 5 or 7)")
        self.device = check_device(self.device)


def parse_kinds(kinds: str | Iterable[str]) -> list[str]:
    """Block kinds from ``"quadra,hor"`` or a list; QuadraBlock (the reference) is always in."""
    items = kinds.split(",") if isinstance(kinds, str) else list(kinds)
    items = [str(k).strip().lower() for k in items if str(k).strip()]
    unknown = [k for k in items if k not in BLOCK_KINDS]
    if unknown:
        raise QnasError(f"unknown block kind {unknown[0]!r}; choose from {', '.join(BLOCK_KINDS)}")
    if not items:
        raise QnasError(f"no block kinds given; choose from {', '.join(BLOCK_KINDS)}")
    ordered = [k for k in BLOCK_KINDS if k in items]       # stable order, no duplicates
    return ordered if REFERENCE_KIND in ordered else [REFERENCE_KIND, *ordered]


def parse_channels(channels: str | int | Iterable[int]) -> list[int]:
    """Widths from ``"64,128"``, an int or a list; each must be a positive integer."""
    if isinstance(channels, int):
        channels = [channels]
    items = channels.split(",") if isinstance(channels, str) else list(channels)
    widths = []
    for item in items:
        text = str(item).strip()
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value <= 0 or (not isinstance(item, str) and value != item):
            raise QnasError(f"channels must be positive integers like 64,128; got {text!r}")
        widths.append(value)
    if not widths:
        raise QnasError("no channels given; use e.g. --channels 64,128")
    return list(dict.fromkeys(widths))


def check_device(device: str) -> str:
    device = str(device).lower()
    if device not in ("cpu", "cuda"):
        raise QnasError(f"unknown device {device!r}; use cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise QnasError("CUDA is not available on this machine; use --device cpu")
    return device


def bench_input(config: BlockBenchConfig, channels: int) -> torch.Tensor:
    """The input of every measurement at width ``channels`` (seeded; NHWC-strided when
    ``config.channels_last``)."""
    generator = torch.Generator().manual_seed(config.seed + channels)
    x = torch.randn(config.batch, channels, config.resolution, config.resolution,
                    generator=generator)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(config.device)


def add_ratios(table: pd.DataFrame, columns: Sequence[str], ratios: dict[str, str],
               reference: str = REFERENCE_KIND, key: str = "kind") -> pd.DataFrame:
    """Add the ``ratios`` columns (figure column -> ratio column): each figure over the
    ``reference`` row's (``table[key] == reference``) at the same width (``channels``); the
    result has ``columns`` in that order."""
    table = table.copy()
    for figure, ratio in ratios.items():
        ref = table[table[key] == reference].set_index("channels")[figure]
        table[ratio] = table[figure] / table["channels"].map(ref)
    return table[list(columns)]


def with_overrides(config: BlockBenchConfig | None, overrides: dict) -> BlockBenchConfig:
    """``config`` (default: the defaults) with the settings in ``overrides`` replaced; an
    unknown setting is refused (one line)."""
    cls = BlockBenchConfig
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise QnasError(f"unknown benchmark setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
    if config is None:
        return cls(**overrides)
    return cls(**{**asdict(config), **overrides}) if overrides else config
