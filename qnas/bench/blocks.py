"""Block benchmark: the QuadraNet paper's Table II experiment, plus QuadraConv2d vs three convs.

Part 1 (:func:`run_block_bench`): for each block kind a stack of ``layers`` blocks
(``nn.Sequential(*[build_block(kind, C)] * layers)``, default 24) at each width C, measured
side by side in one process:

* ``params`` — parameters of the stack;
* ``macs_per_image`` — multiply-accumulates of one forward pass for one image, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on the ``meta`` device (convolutions and matrix
  products only: MACs = FLOPs / 2; element-wise ops, norms and softmax are not counted);
* ``saved_bytes`` — bytes autograd keeps for backward in one training step (:func:`saved_bytes`);
* ``peak_bytes`` — peak memory of one training step above what was allocated before it
  (:func:`peak_step_bytes`: CUDA ``max_memory_allocated``; on CPU the growth of the process's
  resident set);
* ``train_img_s`` / ``infer_img_s`` — images per second of a training step (forward, backward
  with a fixed random output gradient, SGD step) and of an inference forward (eval mode,
  ``torch.inference_mode``): batch / median time of ``repeats`` timed runs after warm-up, with a
  fixed torch thread count. Kinds are timed round-robin (one run of each kind per round), so a
  change in machine load hits every kind alike and the ratios stay fair;
* ``*_vs_quadra`` — each figure divided by QuadraBlock's at the same width.

``quadra-me`` is QuadraBlock with ``memory_efficient=True`` (its QuadraConv recomputes the two
depthwise terms in backward instead of keeping them).

Part 2 (:func:`run_quadraconv_bench`): QuadraConv2d (default and memory-efficient mode) against
the naive form — three separate depthwise ``nn.Conv2d`` and ``a * b + c`` under plain autograd —
and the single grouped conv under plain autograd: forward+backward time and saved bytes, as
ratios to the naive form.
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import math
import os
import re
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import QnasError
from ..runtime.files import write_csv_atomic
from ..nn import QuadraConv2d, build_block

BLOCK_KINDS = ("quadra", "quadra-me", "hor", "conv", "swin", "skip")
REFERENCE_KIND = "quadra"

MACS_COUNTER = ("torch.utils.flop_counter.FlopCounterMode on meta, forward, conv+matmul only, "
                "MACs=FLOPs/2")
SAVED_BYTES_RULE = "unique storages saved by autograd, parameters and buffers excluded"

BLOCK_COLUMNS = [
    "kind", "channels", "layers", "batch", "resolution", "device", "threads",
    "params", "macs_per_image", "saved_bytes", "peak_bytes", "train_img_s", "infer_img_s",
    "params_vs_quadra", "macs_vs_quadra", "saved_vs_quadra", "peak_vs_quadra",
    "train_vs_quadra", "infer_vs_quadra",
    "train_ms", "infer_ms", "macs_counter", "saved_rule", "peak_method",
]
# figure column -> its ratio column
_RATIOS = {"params": "params_vs_quadra", "macs_per_image": "macs_vs_quadra",
           "saved_bytes": "saved_vs_quadra", "peak_bytes": "peak_vs_quadra",
           "train_img_s": "train_vs_quadra", "infer_img_s": "infer_vs_quadra"}


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:      # not Linux
        return os.cpu_count() or 1


@dataclass
class BlockBenchConfig:
    """What to measure. Defaults finish in a few minutes on 2 CPU cores.

    ``resolution`` 56 is the stage-1 map of a 224×224 input. ``hor_order`` 2 is HorNet's gnConv
    order at that stage (its cheapest; HorNet uses 2, 3, 4, 5 by stage). ``channels_last``
    feeds every stack an NHWC-strided input (LayerNorm2d then needs no layout copies; the same
    for every kind).
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
    threads: int = field(default_factory=_default_threads)
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


# --- measurements --------------------------------------------------------------------------------

def saved_bytes(step: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes autograd saves for backward while ``step()`` runs (call the forward in it).

    The rule: every tensor handed to autograd for backward (``saved_tensors_hooks`` sees each
    one) is counted by its storage, once, at the storage's full size. Views of one storage
    (``a``, ``b`` = slices of one conv output, a transposed input) count once, and a view counts
    its whole storage, because keeping the view keeps the whole storage alive. Storages of
    ``exclude`` (pass the parameters and buffers: they exist with or without training) are not
    counted. The step's return value is dropped inside, so nothing is kept alive.
    """
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    storages: dict[tuple[str, int], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in excluded and storage.nbytes():
            storages[(str(tensor.device), pointer)] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(storages.values())


class _LinuxPeakRss:
    """Peak resident-set growth of this process, Linux only.

    Before the step: return freed heap to the OS (``malloc_trim``), reset the kernel's
    high-water mark to the current RSS (``/proc/self/clear_refs`` = 5) and read that RSS; after:
    VmHWM − that baseline. Unlike ``ru_maxrss`` this works for many steps in one process.
    """

    method = "cpu: peak RSS growth during the step (VmHWM reset via /proc/self/clear_refs)"

    def __init__(self) -> None:
        path = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(path) if path else None

    def available(self) -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as stream:
                stream.write("5")
            return "VmHWM" in Path("/proc/self/status").read_text()
        except OSError:
            return False

    @staticmethod
    def _status_bytes(key: str) -> int:
        text = Path("/proc/self/status").read_text()
        return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) * 1024

    def begin(self) -> int:
        if self._libc is not None and hasattr(self._libc, "malloc_trim"):
            self._libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
        return self._status_bytes("VmRSS")

    def end(self, baseline: int) -> int:
        return self._status_bytes("VmHWM") - baseline


def peak_step_bytes(step: Callable[[], object], device: str) -> tuple[float, str]:
    """Peak memory of ``step()`` above what was in use before it, and how it was measured.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` minus
    ``memory_allocated`` before (tensor bytes, allocator cache excluded). CPU (Linux): growth of
    the process's resident set, which includes allocator slack and oneDNN scratch buffers —
    an upper bound on tensor bytes. Elsewhere: NaN.
    """
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated() - baseline), "cuda: max_memory_allocated"
    tracker = _LinuxPeakRss()
    if not tracker.available():
        return math.nan, "unavailable (needs Linux /proc/self/clear_refs)"
    baseline = tracker.begin()
    step()
    return float(tracker.end(baseline)), tracker.method


def count_macs(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward MACs of ``module`` at ``input_shape`` (see :data:`MACS_COUNTER`); no arithmetic
    runs: a copy of the module runs on the ``meta`` device."""
    meta = copy.deepcopy(module).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta(torch.empty(*input_shape, device="meta"))
    return counter.get_total_flops() // 2


@contextlib.contextmanager
def torch_threads(threads: int):
    """Run with a fixed intra-op thread count, then restore the previous one."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(run: Callable[[], object], device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    run()
    _sync(device)
    return time.perf_counter() - start


def time_round_robin(runs: dict[str, Callable[[], object]], repeats: int, warmup: int,
                     device: str, progress=None) -> dict[str, float]:
    """Median seconds of each run; each round runs every entry once, in turn."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(warmup + repeats):
        for name, run in runs.items():
            seconds = _timed(run, device)
            if round_index >= warmup:
                times[name].append(seconds)
            if progress is not None:
                progress.update(1)
    return {name: statistics.median(values) for name, values in times.items()}


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


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, unit="run")


def _input(config, channels: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(config.seed + channels)
    x = torch.randn(config.batch, channels, config.resolution, config.resolution,
                    generator=generator)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(config.device)


def run_block_bench(config: BlockBenchConfig | None = None, progress: bool = True,
                    **overrides) -> pd.DataFrame:
    """Measure every kind at every width (see the module doc); one row per (kind, width).

    ``run_block_bench(channels=(64,), layers=4)`` is the same as passing a config with those.
    """
    config = _config(BlockBenchConfig, config, overrides)
    rows = []
    per_width = len(config.kinds) * (2 + 2 * (config.warmup + config.repeats))
    with torch_threads(config.threads), _progress(per_width * len(config.channels), progress,
                                                  "bench blocks") as bar:
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
                      BLOCK_COLUMNS)


def _bench_width(config: BlockBenchConfig, channels: int, bar) -> list[dict]:
    x = _input(config, channels)
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
    train = time_round_robin(steps, config.repeats, config.warmup, config.device, bar)
    for model in (step.model for step in steps.values()):
        model.eval()
    infer = time_round_robin(infers, config.repeats, config.warmup, config.device, bar)
    rows = []
    for kind in config.kinds:
        rows.append({
            "kind": kind, "channels": channels, "layers": config.layers, "batch": config.batch,
            "resolution": config.resolution, "device": config.device, "threads": config.threads,
            **figures[kind],
            "train_img_s": config.batch / train[kind], "infer_img_s": config.batch / infer[kind],
            "train_ms": 1e3 * train[kind], "infer_ms": 1e3 * infer[kind],
            "macs_counter": MACS_COUNTER, "saved_rule": SAVED_BYTES_RULE,
            "peak_method": peak_method,
        })
    return rows


def add_ratios(table: pd.DataFrame, columns: Sequence[str],
               ratios: dict[str, str] | None = None, reference: str = REFERENCE_KIND,
               key: str = "kind") -> pd.DataFrame:
    """Add ``<figure>_vs_<reference>`` columns: each figure over the reference row's at the same
    width (``channels``)."""
    ratios = _RATIOS if ratios is None else ratios
    table = table.copy()
    for figure, ratio in ratios.items():
        ref = table[table[key] == reference].set_index("channels")[figure]
        table[ratio] = table[figure] / table["channels"].map(ref)
    return table[list(columns)]


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


# --- part 2: QuadraConv2d vs the naive three-convolution form --------------------------------------

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
    config = _config(BlockBenchConfig, config, overrides)
    repeats = repeats or 5 * config.repeats
    rows = []
    total = len(config.channels) * len(QUADRACONV_IMPLS) * (1 + config.warmup + repeats)
    with torch_threads(config.threads), _progress(total, progress, "bench quadraconv") as bar:
        for channels in config.channels:
            x = _input(config, channels).requires_grad_()
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


# --- output --------------------------------------------------------------------------------------

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


def format_quadraconv_table(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "impl": table["impl"], "C": table["channels"], "fwd+bwd_ms": table["fwd_bwd_ms"],
        "saved_MiB": table["saved_bytes"] / 2**20, "time×naive": table["time_vs_naive"],
        "saved×naive": table["saved_vs_naive"],
    })


def _config(cls, config, overrides):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise QnasError(f"unknown benchmark setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
    if config is None:
        return cls(**overrides)
    return cls(**{**asdict(config), **overrides}) if overrides else config
