"""Block benchmark: the QuadraNet paper's Table II experiment, plus QuadraConv2d vs three convs.

Part 1 (:func:`run_block_bench`): for each block kind a stack of ``layers`` blocks
(``nn.Sequential(*[build_block(kind, C)] * layers)``, default 24) at each width C, measured
side by side in one process:

* ``params`` — parameters of the stack;
* ``macs_per_image`` — multiply-accumulates of one forward pass for one image
  (:func:`qnas.predictors.kernels.count_macs`, on the ``meta`` device: convolutions and matrix
  products only, MACs = FLOPs / 2; element-wise ops, norms and softmax are not counted);
* ``saved_bytes`` — bytes autograd keeps for backward in one training step
  (:func:`qnas.bench.measure.saved_bytes`);
* ``peak_bytes`` — peak memory of one training step above what was allocated before it
  (:func:`qnas.bench.measure.peak_step_bytes`: CUDA ``max_memory_allocated``; on CPU the
  growth of the process's resident set);
* ``train_img_s`` / ``infer_img_s`` — images per second of a training step (forward, backward
  with a fixed random output gradient, SGD step) and of an inference forward (eval mode,
  ``torch.inference_mode``): batch / median time of ``repeats`` timed runs after warm-up, with a
  fixed torch thread count. Kinds are timed round-robin (one run of each kind per round), so a
  change in machine load hits every kind alike and the ratios stay fair;
* ``*_vs_quadra`` — each figure divided by QuadraBlock's at the same width.

``quadra-me`` is QuadraBlock with ``memory_efficient=True`` (its QuadraConv recomputes the two
depthwise terms in backward instead of keeping them).

Part 2 (:func:`run_quadraconv_bench`, :mod:`qnas.bench.quadraconv`): QuadraConv2d against
the naive three-convolution form. The settings of both parts: :mod:`qnas.bench.config`; how
they measure: :mod:`qnas.bench.measure`. This module is the benchmark's API for the CLI and the
experiments (``__all__``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch import nn

from ..errors import QnasError
from ..nn.blocks import build_block
from ..predictors.kernels import MACS_RULE, count_macs
from ..runtime.files import write_csv_atomic
from ..runtime.threads import BENCHMARK, torch_threads
from ..settings import merged
from .config import BLOCK_KINDS, REFERENCE_KIND, BlockBenchConfig
from .measure import (
    SAVED_BYTES_RULE,
    add_ratios,
    bench_input,
    peak_step_bytes,
    progress_bar,
    saved_bytes,
    time_round_robin_quartiles,
)
from .quadraconv import (
    QUADRACONV_COLUMNS,
    QUADRACONV_IMPLS,
    format_quadraconv_table,
    run_quadraconv_bench,
)

__all__ = [
    "BLOCK_KINDS", "REFERENCE_KIND", "BlockBenchConfig", "BLOCK_COLUMNS", "MACS_COUNTER",
    "SAVED_BYTES_RULE", "build_stack", "count_macs", "saved_bytes", "peak_step_bytes",
    "run_block_bench", "goal_summary", "format_block_table", "companion_path",
    "write_csv_atomic", "run_quadraconv_bench", "format_quadraconv_table", "QUADRACONV_COLUMNS",
    "QUADRACONV_IMPLS",
]

MACS_COUNTER = MACS_RULE     # the rule of the table's macs_per_image (column macs_counter)

BLOCK_COLUMNS = [
    "kind", "channels", "layers", "batch", "resolution", "device", "threads",
    "params", "macs_per_image", "saved_bytes", "peak_bytes", "train_img_s", "infer_img_s",
    "params_vs_quadra", "macs_vs_quadra", "saved_vs_quadra", "peak_vs_quadra",
    "train_vs_quadra", "infer_vs_quadra",
    "train_ms", "infer_ms", "macs_counter", "saved_rule", "peak_method",
    # the interquartile range of the timed rounds, as throughput (error bars)
    "train_img_s_low", "train_img_s_high", "infer_img_s_low", "infer_img_s_high",
]
# figure column -> its ratio column
RATIOS = {"params": "params_vs_quadra", "macs_per_image": "macs_vs_quadra",
          "saved_bytes": "saved_vs_quadra", "peak_bytes": "peak_vs_quadra",
          "train_img_s": "train_vs_quadra", "infer_img_s": "infer_vs_quadra"}


def build_stack(kind: str, channels: int, layers: int = 24, kernel_size: int = 7,
                hor_order: int = 2) -> nn.Sequential:
    """``layers`` blocks of ``kind`` (one of :data:`BLOCK_KINDS`) at width ``channels``."""
    if kind not in BLOCK_KINDS:
        raise QnasError(f"unknown block kind {kind!r}; choose from {', '.join(BLOCK_KINDS)}")
    base = kind.removesuffix("-me")
    kwargs: dict = {}
    if base in ("quadra", "conv", "hor"):
        kwargs["kernel_size"] = kernel_size
    if kind == "quadra-me":
        kwargs["memory_efficient"] = True
    if base == "hor":
        kwargs["order"] = hor_order
    return nn.Sequential(*(build_block(base, channels, **kwargs) for _ in range(layers)))


# --- part 1: the stacks, side by side ---------------------------------------------------------

class _TrainStep:
    """One training step of a stack: forward, backward with a fixed output gradient, SGD."""

    def __init__(self, model: nn.Module, x: torch.Tensor, grad: torch.Tensor):
        self.model, self.x, self.grad = model, x, grad
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def forward(self) -> torch.Tensor:
        self.model.train()
        return self.model(self.x)

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.forward().backward(self.grad)
        self.optimizer.step()


def _infer_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            model(x)
    return run


def run_block_bench(config: BlockBenchConfig | None = None, progress: bool = True,
                    **overrides) -> pd.DataFrame:
    """Measure every kind at every width (see the module doc); one row per (kind, width).

    ``run_block_bench(channels=(64,), layers=4)`` is the same as passing a config with those.
    """
    config = merged(BlockBenchConfig, config, overrides)
    rows = []
    per_width = len(config.kinds) * (2 + 2 * (config.warmup + config.repeats))
    with torch_threads(config.threads, BENCHMARK), \
            progress_bar(per_width * len(config.channels), progress, "bench blocks") as bar:
        for channels in config.channels:
            try:
                rows += _bench_width(config, channels, bar)
            except torch.OutOfMemoryError:
                raise QnasError(
                    f"{config.device} ran out of memory at C={channels}, batch {config.batch}, "
                    f"{config.layers} layers, {config.resolution}×{config.resolution}; use a "
                    f"smaller --batch, --layers or --resolution") from None
            finally:
                if config.device == "cuda":
                    torch.cuda.empty_cache()    # the next width starts from a clean pool
    return add_ratios(pd.DataFrame(rows, columns=BLOCK_COLUMNS[:13] + BLOCK_COLUMNS[19:]),
                      BLOCK_COLUMNS, RATIOS)


def _bench_width(config: BlockBenchConfig, channels: int, bar) -> list[dict]:
    x = bench_input(config, channels)
    steps, infers, figures = {}, {}, {}
    for kind in config.kinds:
        torch.manual_seed(config.seed)
        model = build_stack(kind, channels, config.layers, config.kernel_size,
                            config.hor_order).to(config.device)
        grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(config.seed + 1))
        grad = grad.to(device=config.device, memory_format=torch.channels_last
                       if config.channels_last else torch.contiguous_format)
        steps[kind] = _TrainStep(model, x, grad)
        infers[kind] = _infer_step(model, x)
        own = [*model.parameters(), *model.buffers()]
        figures[kind] = {
            "params": sum(p.numel() for p in model.parameters()),
            "macs_per_image": count_macs(model, (1, *x.shape[1:])),
            # the forward under the hooks doubles as the first warm-up of this kind
            "saved_bytes": saved_bytes(steps[kind].forward, exclude=own),
        }
        bar.update(1)
    for kind in config.kinds:   # also a warm-up: the first backward builds kernels and buffers
        figures[kind]["peak_bytes"], peak_method = peak_step_bytes(steps[kind], config.device)
        bar.update(1)
    train = time_round_robin_quartiles(steps, config.repeats, config.warmup, config.device, bar)
    for model in (step.model for step in steps.values()):
        model.eval()
    infer = time_round_robin_quartiles(infers, config.repeats, config.warmup, config.device,
                                       bar)
    rows = []
    for kind in config.kinds:
        rows.append({
            "kind": kind, "channels": channels, "layers": config.layers, "batch": config.batch,
            "resolution": config.resolution, "device": config.device, "threads": config.threads,
            **figures[kind],
            "train_img_s": config.batch / train[kind][1],
            "infer_img_s": config.batch / infer[kind][1],
            # the interquartile range of the rounds, as throughput (a slow round: fewer img/s)
            "train_img_s_low": config.batch / train[kind][2],
            "train_img_s_high": config.batch / train[kind][0],
            "infer_img_s_low": config.batch / infer[kind][2],
            "infer_img_s_high": config.batch / infer[kind][0],
            "train_ms": 1e3 * train[kind][1], "infer_ms": 1e3 * infer[kind][1],
            "macs_counter": MACS_COUNTER, "saved_rule": SAVED_BYTES_RULE,
            "peak_method": peak_method,
        })
    return rows


def goal_summary(table: pd.DataFrame) -> list[str]:
    """The issue's goal, checked against a block table: QuadraBlock keeps ≤ 0.7× HorBlock's
    backward bytes and trains ≥ 1.3× faster than HorBlock."""
    lines = []
    for channels, group in table.groupby("channels", sort=False):
        by_kind = group.set_index("kind")
        if "hor" not in by_kind.index:
            continue
        hor = by_kind.loc["hor"]
        for kind in ("quadra", "quadra-me"):
            if kind not in by_kind.index:
                continue
            row = by_kind.loc[kind]
            memory = row["saved_bytes"] / hor["saved_bytes"]
            speed = row["train_img_s"] / hor["train_img_s"]
            lines.append(f"C={channels} {kind}: saved bytes {memory:.3f}× HorBlock's "
                         f"(goal ≤ 0.70: {'met' if memory <= 0.7 else 'missed'}), training "
                         f"{speed:.3f}× HorBlock's speed (goal ≥ 1.30: "
                         f"{'met' if speed >= 1.3 else 'missed'})")
    return lines


# --- output -----------------------------------------------------------------------------------

def companion_path(out: str | os.PathLike) -> Path:
    """Where part 2 goes next to the blocks CSV: ``blocks.csv`` → ``blocks_quadraconv.csv``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_quadraconv{out.suffix or '.csv'}")


def format_block_table(table: pd.DataFrame) -> pd.DataFrame:
    """A readable view of :func:`run_block_bench`'s table (units in the column names)."""
    view = pd.DataFrame({
        "kind": table["kind"], "C": table["channels"],
        "params_M": table["params"] / 1e6, "GMACs/img": table["macs_per_image"] / 1e9,
        "saved_MiB": table["saved_bytes"] / 2**20, "peak_MiB": table["peak_bytes"] / 2**20,
        "train_img/s": table["train_img_s"], "infer_img/s": table["infer_img_s"],
    })
    for figure, ratio in (("params", "params_vs_quadra"), ("macs", "macs_vs_quadra"),
                          ("saved", "saved_vs_quadra"), ("peak", "peak_vs_quadra"),
                          ("train", "train_vs_quadra"), ("infer", "infer_vs_quadra")):
        view[f"{figure}×"] = table[ratio]
    return view
