"""Part 2 of the block benchmark: QuadraConv2d (default and memory-efficient mode) against
the naive form — three separate depthwise ``nn.Conv2d`` and ``a * b + c`` under plain autograd —
and the single grouped conv under plain autograd: forward+backward time and saved bytes, as
ratios to the naive form.
"""
from __future__ import annotations

import copy

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..nn.quadra import QuadraConv2d
from ..runtime.threads import BENCHMARK, torch_threads
from ..settings import merged
from .config import BlockBenchConfig
from .measure import (
    add_ratios,
    bench_input,
    progress_bar,
    saved_bytes,
    time_round_robin,
)


class NaiveQuadraConv2d(nn.Module):
    """The textbook form: three separate depthwise ``nn.Conv2d``, ``a * b + c``, plain autograd."""

    def __init__(self, quadra: QuadraConv2d):
        super().__init__()
        channels, k = quadra.channels, quadra.kernel_size
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels,
                      bias=quadra.bias is not None) for _ in range(3))
        with torch.no_grad():       # the same filters as ``quadra``
            for conv, weight, index in zip(self.convs, quadra.filters(), range(3)):
                conv.weight.copy_(weight)
                if quadra.bias is not None:
                    conv.bias.copy_(quadra.bias.view(channels, 3)[:, index])

    def forward(self, x):
        a, b, c = (conv(x) for conv in self.convs)
        return a * b + c


class GroupedQuadraConv2d(nn.Module):
    """One grouped conv with 3C outputs (groups = C), split, ``a * b + c``, plain autograd."""

    def __init__(self, quadra: QuadraConv2d):
        super().__init__()
        self.channels, self.padding = quadra.channels, quadra.padding
        self.weight = nn.Parameter(quadra.weight.detach().clone())
        self.bias = None if quadra.bias is None else nn.Parameter(quadra.bias.detach().clone())

    def forward(self, x):
        z = F.conv2d(x, self.weight, self.bias, padding=self.padding, groups=self.channels)
        a, b, c = z.unflatten(1, (self.channels, 3)).unbind(2)
        return a * b + c


QUADRACONV_IMPLS = ("naive-3conv", "grouped-autograd", "quadraconv", "quadraconv-me")
QUADRACONV_COLUMNS = [
    "impl", "channels", "batch", "resolution", "kernel_size", "device", "threads",
    "fwd_bwd_ms", "saved_bytes", "time_vs_naive", "saved_vs_naive",
]


def quadraconv_impls(channels: int, kernel_size: int = 7, seed: int = 0) -> dict[str, nn.Module]:
    """The four implementations of one QuadraConv, all with the same filters."""
    torch.manual_seed(seed)
    quadra = QuadraConv2d(channels, kernel_size)
    efficient = copy.deepcopy(quadra)
    efficient.memory_efficient = True
    return {"naive-3conv": NaiveQuadraConv2d(quadra), "grouped-autograd": GroupedQuadraConv2d(quadra),
            "quadraconv": quadra, "quadraconv-me": efficient}


def run_quadraconv_bench(config: BlockBenchConfig | None = None, progress: bool = True,
                         repeats: int | None = None, **overrides) -> pd.DataFrame:
    """Forward+backward of one QuadraConv at each width, four implementations side by side.

    Uses the block config's batch, resolution, kernel size, device, threads and layout;
    ``repeats`` defaults to 5× the config's (one layer is quick and noisier).
    """
    config = merged(BlockBenchConfig, config, overrides)
    repeats = repeats or 5 * config.repeats
    rows = []
    total = len(config.channels) * len(QUADRACONV_IMPLS) * (1 + config.warmup + repeats)
    with torch_threads(config.threads, BENCHMARK), \
            progress_bar(total, progress, "bench quadraconv") as bar:
        for channels in config.channels:
            x = bench_input(config, channels).requires_grad_()
            grad = torch.randn_like(x)
            runs, saved = {}, {}
            for name, module in quadraconv_impls(channels, config.kernel_size,
                                                  config.seed).items():
                module.to(config.device)

                def run(module=module) -> None:
                    module.zero_grad(set_to_none=True)
                    x.grad = None
                    module(x).backward(grad)

                saved[name] = saved_bytes(lambda module=module: module(x),
                                          exclude=[*module.parameters()])
                runs[name] = run
                bar.update(1)
            times = time_round_robin(runs, repeats, config.warmup, config.device, bar)
            for name in QUADRACONV_IMPLS:
                rows.append({"impl": name, "channels": channels, "batch": config.batch,
                             "resolution": config.resolution,
                             "kernel_size": config.kernel_size, "device": config.device,
                             "threads": config.threads, "fwd_bwd_ms": 1e3 * times[name],
                             "saved_bytes": saved[name]})
    table = pd.DataFrame(rows)
    return add_ratios(table, QUADRACONV_COLUMNS,
                      {"fwd_bwd_ms": "time_vs_naive", "saved_bytes": "saved_vs_naive"},
                      reference="naive-3conv", key="impl")


def format_quadraconv_table(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "impl": table["impl"], "C": table["channels"], "fwd+bwd_ms": table["fwd_bwd_ms"],
        "saved_MiB": table["saved_bytes"] / 2**20, "time×naive": table["time_vs_naive"],
        "saved×naive": table["saved_vs_naive"],
    })
