"""The settings of the block benchmark (both parts: Table II's stacks and QuadraConv2d vs the
naive three convolutions), its input, and the ratio columns of its tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from ..errors import QnasError
from ..runtime.threads import BENCHMARK, resolve_threads
from ..settings import check_int, setting

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

    kinds: Sequence[str] = setting(BLOCK_KINDS, shown=",".join(BLOCK_KINDS),
                                   help="Block kinds, comma-separated (quadra is always "
                                        "measured: the ratios' base).")
    channels: Sequence[int] = setting((64, 128), shown="64,128", help="Widths C, comma-separated.")
    layers: int = setting(24, help="Blocks per stack.")
    batch: int = setting(4, help="Batch size.")
    resolution: int = setting(56, help="Map size H=W (56 = the stage-1 map of a 224×224 input).")
    kernel_size: int = setting(7, help="Depthwise kernel of quadra, conv and hor blocks (odd).")
    hor_order: int = setting(2, help="gnConv order of HorBlock (HorNet: 2, 3, 4, 5 by stage; 2 "
                                     "at 56×56).")
    repeats: int = setting(3, help="Timed runs per kind (median); the QuadraConv2d part runs 5× "
                                   "as many.")
    warmup: int = setting(1, help="Untimed rounds before timing (after the memory steps, which "
                                  "also warm up).")
    threads: int = setting(default_factory=lambda: resolve_threads(None, BENCHMARK),
                           shown="every core this process may use",
                           help="torch intra-op threads while measuring.")
    device: str = setting("cpu", choices=("cpu", "cuda"), help="Where to measure.")
    channels_last: bool = setting(True, flag="--no-channels-last",
                                  help="Feed every stack an NHWC-strided input.")
    seed: int = setting(0, help="Seed of the weights and inputs.")

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


@dataclass
class SupernetBenchConfig:
    """``qnas bench supernet``: the supernet's weight and arch steps against the same child's."""

    space: str = setting("quadranet", help="Search space: a name or a YAML path.")
    batch_size: int = setting(64, help="Batch size of every step.")
    resolution: int = setting(32, help="Input resolution.")
    num_classes: int = setting(10, help="Classifier width.", cli=False)
    rounds: int = setting(10, help="Timed rounds (each runs the three steps once; medians).")
    warmup: int = setting(2, help="Untimed rounds first.")
    seed: int = setting(0, help="Seed of the child, the weights and the inputs.")
    threads: int | None = setting(None, shown="every core this process may use",
                                  help="torch intra-op threads.")
    weight_sharing: bool = setting(True, flag="--no-weight-sharing", help="Shared QuadraBlock candidates (the search's "
                                              "default; off: ProxylessNAS's independent ones).")

    def __post_init__(self) -> None:
        for name in ("batch_size", "resolution", "num_classes", "rounds"):
            check_int(getattr(self, name), name, 1)
        check_int(self.warmup, "warmup", 0)
        if self.threads is not None:
            check_int(self.threads, "threads", 1)


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
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise QnasError("CUDA is not available on this machine; use --accelerator cpu")
    return device


@dataclass
class DataSpreadConfig:
    """``qnas bench data-spread``: do a dataset's children differ? The smallest and the largest
    child of a space, and two children of equal latency (one of large kernels and small
    expansions, one the other way round), trained with ``qnas retrain``'s recipe."""

    data: str = setting("digit-pairs", help="Dataset: digit-pairs, digits, cifar10:PATH, ….")
    space: str = setting("quadranet", help="Search space: a name or a YAML path.")
    device: str = setting("cortexA76", help="Device whose latency table defines 'equal "
                                            "latency' and 'largest'.")
    epochs: int = setting(10, help="Training epochs of every child (qnas retrain's default).")
    seeds: int = setting(1, help="Trainings per child (seeds 0, 1, …); the table shows the "
                                 "mean and the spread of the means.")
    band: float = setting(0.02, help="Relative latency tolerance of the equal-latency pair.")
    threads: int | None = setting(None, shown="all cores but one", help="torch intra-op threads.")

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", 1)
        check_int(self.seeds, "seeds", 1)
        if not 0 < self.band < 0.5:
            raise QnasError(f"band must be in (0, 0.5), got {self.band!r}")
        if self.threads is not None:
            check_int(self.threads, "threads", 1)
