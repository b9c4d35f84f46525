"""``qnas bench gpu``: everything qnas needs measured on a CUDA GPU, in one command.

Parts (each writes its CSVs into the output folder; ``report.md`` is rebuilt after every part
from the CSVs present, so parts may run in separate processes — ``scripts/gpu_check.sh`` runs
each under its own time limit):

``quadraconv``  QuadraConv2d on the device: its grouped-conv path (NCHW) and its three-depthwise
                path (channels-last), hand-written backward, against three depthwise convs and
                against plain autograd — max |difference| of the output and every gradient
                (TF32 off for the comparison), forward+backward time, peak memory and saved
                bytes, and the memory-efficient mode's peak. ``quadraconv.csv``.
``blocks``      Table II: 24-layer stacks of QuadraBlock (and its memory-efficient mode),
                HorBlock and the ConvNeXt block at the paper's widths (64, 128), batch 64,
                56×56 (:func:`qnas.bench.blocks.run_block_bench` on the device): saved bytes,
                ``torch.cuda.max_memory_allocated``, training and inference throughput; and a
                profiler table (the costliest ops of QuadraBlock and HorBlock). ``blocks.csv``,
                ``blocks_profile.csv``, ``blocks.png``.
``supernet``    supernet weight and arch step against the same child's step
                (:func:`qnas.bench.supernet.bench_supernet` on the device), fp32 and bf16, at
                two batch sizes. ``supernet.csv``.
``e2e``         a default-size search on the device, resumed in chunks that fit the part's
                time (extrapolated when they do not), the same search's epochs on 2 threads of
                the host's CPU, and a short retrain of the searched child: wall times.
                ``e2e.csv`` (the runs themselves stay under ``e2e/``).
``latency``     the latency of the 24 QuadraBlock candidates of the ``quadranet`` space at its
                layer shapes and of whole models, at batch 1 and 32: eager fp32 (the file the
                GPU profile fit reads, ``latency_eager_fp32.csv``, in the columns of
                ``predictors/reference/h100_eager_measurements.csv``), CUDA-graph replay,
                torch.compile and eager bf16 (one file each, same columns), and all of them in
                ``latency.csv``; plus ``latency_vs_profiles.csv``: the shipped GPU profiles'
                predictions of the eager timings.
``options``     one training step of a QuadraNet under fp32/bf16 × NCHW/channels-last ×
                eager/torch.compile: what ``--precision``, ``--channels-last`` and
                ``--compile`` buy. ``options.csv``.

``report.md`` states the GPU, driver, CUDA, cuDNN and torch versions, each part's status and
seconds, every table, and the issue's goals side by side with the measured ratios, met or
missed. ``environment.json`` and ``parts.json`` hold the same facts for programs.

Without CUDA the command refuses in one line. ``accelerator="cpu"`` with ``tiny=True`` runs
every part on the CPU at toy sizes in seconds (how the tests drive the whole pipeline); such a
report says in its first lines that it is NOT a GPU measurement.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import platform
import statistics
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import __version__
from ..errors import QnasError
from ..runtime.files import (
    write_bytes_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)
from ..runtime.precision import Precision, prepare_device, to_device
from ..runtime.threads import BENCHMARK, MEASURING, torch_threads

PARTS = ("quadraconv", "blocks", "supernet", "e2e", "latency", "options")
REPORT, ENVIRONMENT, PARTS_FILE = "report.md", "environment.json", "parts.json"
STARTED = "started, did not finish (stopped from outside: a time limit?)"
FILES = {"quadraconv": ("quadraconv.csv",), "blocks": ("blocks.csv", "blocks_profile.csv"),
         "supernet": ("supernet.csv",), "e2e": ("e2e.csv",),
         "latency": ("latency.csv", "latency_vs_profiles.csv"), "options": ("options.csv",)}
# the goals (ratios measured side by side in one run on the GPU)
HOR_MEMORY_GOAL, HOR_SPEED_GOAL = 0.6, 1.5          # QuadraBlock / HorBlock
PAPER_MEMORY, PAPER_SPEED = 0.7, 1.5                # what the paper claims
WEIGHT_STEP_GOAL, ARCH_STEP_GOAL = 1.1, 2.0          # supernet / child step
SEARCH_SPEEDUP_GOAL = 10.0                           # GPU vs 2 CPU cores
CPU_REFERENCE_THREADS = 2
COMPILE_RESERVE_S = 45          # what torch.compile of one model may take: started only then
LATENCY_MODELS = ("quadranet_xxs", "quadranet_xs", "quadranet_t", "quadranet_s", "resnet18",
                  "mobilenet_v2", "resnet50")
TINY_SPACE = {"name": "gpubench-tiny", "width": 8, "depths": [1, 1, 1, 1],
              "candidates": ["k3e2", "k5e2", "identity"], "input_shape": [1, 3, 32, 32]}
Echo = Callable[[str], None]


@dataclass
class Sizes:
    """How big each part measures: the GPU sizes, or toy ones (``tiny``) for the CPU tests."""

    tiny: bool = False
    threads: int | None = None          # torch threads of the benchmarks (None: the policy's)
    cpu_reference_threads: int = CPU_REFERENCE_THREADS
    # quadraconv
    conv_channels: tuple = (64, 128)
    conv_batch: int = 64
    conv_resolution: int = 56
    conv_kernel: int = 7
    conv_repeats: int = 20
    # blocks (Table II: batch 64, 24 layers, 64/128 channels, 56×56)
    block_kinds: tuple = ("quadra", "quadra-me", "hor", "conv")
    block_channels: tuple = (64, 128)
    block_layers: int = 24
    block_batch: int = 64
    block_resolution: int = 56
    block_repeats: int = 5
    block_warmup: int = 1
    profile_steps: int = 3
    # supernet
    supernet_space: str = "quadranet"
    supernet_batches: tuple = (64, 256)
    supernet_resolution: int = 32
    supernet_rounds: int = 10
    supernet_warmup: int = 2
    precisions: tuple = ("fp32", "bf16")
    # e2e: the default search (SearchConfig's defaults) and a short retrain
    search: dict = field(default_factory=lambda: {"device": "cortexA76", "latency": "300ms"})
    retrain_epochs: int = 3
    # latency
    latency_space: str = "quadranet"
    latency_batches: tuple = (1, 32)
    latency_resolution: int = 224
    latency_models: tuple = LATENCY_MODELS
    latency_warmup: int = 3
    latency_repeats: int = 15
    # options
    options_model: str = "quadranet_t"
    options_batch: int = 64
    options_resolution: int = 224
    options_repeats: int = 10

    @classmethod
    def for_run(cls, tiny: bool, work: Path) -> Sizes:
        if not tiny:
            return cls()
        space = work / "tiny_space.yaml"
        if not space.exists():
            import yaml

            write_text_atomic(space, yaml.safe_dump(TINY_SPACE))
        return cls(tiny=True, threads=1, cpu_reference_threads=1, conv_channels=(8,), conv_batch=2, conv_resolution=8,
                   conv_kernel=3, conv_repeats=2, block_channels=(8,), block_layers=2,
                   block_batch=2, block_resolution=8, block_repeats=2, block_warmup=0,
                   profile_steps=1, supernet_space=str(space), supernet_batches=(4,),
                   supernet_resolution=32, supernet_rounds=2, supernet_warmup=0,
                   search={"device": "cortexA76", "latency": "1.2ms", "space": str(space),
                           "data": "synthetic", "epochs": 1, "warmup_epochs": 1,
                           "batch_size": 32, "derive_candidates": 2, "threads": 1},
                   retrain_epochs=1, latency_space=str(space), latency_batches=(1, 2),
                   latency_resolution=32, latency_models=("quadranet_xxs",),
                   latency_warmup=1, latency_repeats=3, options_model="quadranet_xxs",
                   options_batch=2, options_resolution=32, options_repeats=2)


@dataclass
class Context:
    """One part's run: where, how big, until when."""

    out: Path
    device: torch.device
    sizes: Sizes
    deadline: float
    echo: Echo
    notes: list[str] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def say(self, message: str) -> None:
        self.echo(f"  {message}")


# --- the command ---------------------------------------------------------------------------------

def resolve_device(accelerator: str = "cuda") -> torch.device:
    """``cuda`` (refused in one line without a GPU) or, for testing the pipeline, ``cpu``."""
    value = str(accelerator).strip().lower()
    if value in ("cuda", "auto"):
        if not torch.cuda.is_available():
            raise QnasError("qnas bench gpu needs a CUDA GPU and none is visible here "
                            "(torch.cuda.is_available() is False); run it on a machine with an "
                            "NVIDIA GPU, e.g. scripts/gpu_check.sh")
        return torch.device("cuda")
    if value == "cpu":
        return torch.device("cpu")
    raise QnasError(f"unknown accelerator {accelerator!r}; qnas bench gpu runs on cuda (cpu only "
                    f"to test the pipeline)")


def parse_parts(parts) -> list[str]:
    """Part names from ``"blocks,e2e"``, ``"all"`` or ``"report"`` (none: only the report)."""
    items = parts.split(",") if isinstance(parts, str) else list(parts)
    items = [str(p).strip().lower() for p in items if str(p).strip()]
    if items in (["all"], []):
        return list(PARTS)
    if items == ["report"]:
        return []
    unknown = [p for p in items if p not in PARTS]
    if unknown:
        raise QnasError(f"unknown part {unknown[0]!r}; use all, report or some of "
                        f"{','.join(PARTS)}")
    return [p for p in PARTS if p in items]


def run_gpu_bench(out: str | Path, parts="all", accelerator: str = "cuda", tiny: bool = False,
                  budget_s: float | None = None, echo: Echo | None = None) -> Path:
    """Run ``parts`` into ``out`` and rewrite ``out/report.md``; returns its path.

    ``budget_s``: seconds each part may take (it measures less, and says so, when it would run
    over); None: no limit. A part that fails is recorded with its one-line reason in
    ``parts.json`` and the report, and the next part runs."""
    echo = echo or (lambda message: None)
    device = resolve_device(accelerator)
    selected = parse_parts(parts)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = Sizes.for_run(tiny, out)
    write_json_atomic(out / ENVIRONMENT, environment(device, tiny))
    status = read_parts(out)
    for part in selected:
        started = time.perf_counter()
        deadline = started + (budget_s if budget_s else 1e9)
        context = Context(out, device, sizes, deadline, echo)
        # stays so when the process is killed (scripts/gpu_check.sh's time limit)
        status[part] = {"status": STARTED, "seconds": None, "notes": [], "finished": ""}
        write_json_atomic(out / PARTS_FILE, status)
        echo(f"{part}: measuring" + (f" (budget {budget_s:.0f} s)" if budget_s else ""))
        benchmark = torch.backends.cudnn.benchmark     # a run turns it on: not for the next
        try:
            PART_FUNCTIONS[part](context)
            state = "ok"
        except QnasError as err:
            state = f"failed: {err}"
        except Exception as err:  # noqa: BLE001 -- one part's failure must not stop the others
            state = f"failed: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
        finally:
            torch.backends.cudnn.benchmark = benchmark
            if device.type == "cuda":
                torch.cuda.empty_cache()
        seconds = time.perf_counter() - started
        status[part] = {"status": state, "seconds": round(seconds, 1), "notes": context.notes,
                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json_atomic(out / PARTS_FILE, status)
        echo(f"{part}: {state} ({seconds:.0f} s)")
        write_report(out)
    return write_report(out)


def read_parts(out: Path) -> dict:
    path = Path(out) / PARTS_FILE
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (ValueError, OSError):
        return {}


# --- the environment ---------------------------------------------------------------------------

def nvidia_driver() -> str:
    """The NVIDIA driver version (``nvidia-smi``), or ``not recorded``."""
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                                 "--format=csv,noheader"], capture_output=True, text=True,
                                timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return "not recorded"
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return lines[0] if result.returncode == 0 and lines else "not recorded"


def environment(device: torch.device, tiny: bool = False) -> dict:
    """What the numbers were measured on (GPU, driver, CUDA, cuDNN, torch, host CPU, …)."""
    from ..predictors.measured import cpu_model

    cuda = device.type == "cuda"
    info = {
        "gpu": torch.cuda.get_device_name() if cuda else f"none (cpu: {cpu_model()})",
        "driver": nvidia_driver() if cuda else "n/a",
        "cuda": str(torch.version.cuda) if cuda else "n/a",
        "cudnn": str(torch.backends.cudnn.version()) if cuda else "n/a",
        "torch": torch.__version__, "qnas": __version__, "python": platform.python_version(),
        "host_cpu": cpu_model(), "device": str(device), "tiny": bool(tiny),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if cuda:
        properties = torch.cuda.get_device_properties(0)
        conv, matmul = tf32_flags()
        info.update(gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                    compute_capability=f"{properties.major}.{properties.minor}",
                    cudnn_tf32=conv, matmul_tf32=matmul)
    return info


def tf32_flags() -> tuple[bool | None, bool | None]:
    """Whether fp32 convolutions (cuDNN) and matmuls may use TF32 (None: not readable)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # torch ≥ 2.9 deprecates the allow_tf32 flags
        try:
            return (bool(torch.backends.cudnn.allow_tf32),
                    bool(torch.backends.cuda.matmul.allow_tf32))
        except Exception:  # noqa: BLE001 -- a torch that dropped the flags
            return None, None


@contextlib.contextmanager
def no_tf32():
    """fp32 convolutions in full fp32 inside (for comparing results, not for timing)."""
    before = tf32_flags()[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        if before is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.backends.cudnn.allow_tf32 = before


def _fp32_text(device: torch.device) -> str:
    if device.type != "cuda":
        return "float32"
    conv, matmul = tf32_flags()
    return f"float32 (cuDNN convs in TF32: {conv}; matmuls TF32: {matmul})"


# --- part: QuadraConv2d -------------------------------------------------------------------------

QUADRACONV_COLUMNS = [
    "impl", "layout", "path", "dtype", "channels", "batch", "resolution", "kernel_size",
    "device", "fwd_bwd_ms", "time_vs_naive", "peak_bytes", "peak_vs_naive", "saved_bytes",
    "saved_vs_naive", "max_abs_diff_out", "max_abs_diff_grad_x", "max_abs_diff_grad_w",
    "max_abs_diff_grad_b", "max_rel_diff", "reference"]


def _term_grads(name: str, module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias gradients of the A, B, C filters as [C, 3, k, k] and [C, 3]."""
    if name == "naive-3conv":
        weight = torch.stack([conv.weight.grad[:, 0] for conv in module.convs], dim=1)
        bias = torch.stack([conv.bias.grad for conv in module.convs], dim=1) \
            if module.convs[0].bias is not None else None
        return weight, bias
    channels = module.weight.shape[0] // 3
    weight = module.weight.grad.view(channels, 3, *module.weight.shape[2:])
    bias = module.bias.grad.view(channels, 3) if module.bias is not None else None
    return weight, bias


def _quadraconv_path(name: str, x: torch.Tensor) -> str:
    from ..nn.quadra import split_kernels

    if name == "naive-3conv":
        return "3 nn.Conv2d + autograd"
    if name == "grouped-autograd":
        return "1 grouped conv + autograd"
    form = "3 depthwise convs" if split_kernels(x) else "1 grouped conv"
    return f"{form} + hand-written backward" + (" (recompute)" if name.endswith("-me") else "")


def part_quadraconv(ctx: Context) -> None:
    from .measure import peak_step_bytes, saved_bytes, time_round_robin
    from .quadraconv import quadraconv_impls

    s, device = ctx.sizes, ctx.device
    rows = []
    with torch_threads(s.threads, BENCHMARK):
        for channels in s.conv_channels:
            for layout in ("nchw", "channels_last"):
                if ctx.left() < 0:
                    ctx.notes.append(f"C={channels} {layout}: skipped (time budget)")
                    continue
                generator = torch.Generator().manual_seed(channels)
                x = torch.randn(s.conv_batch, channels, s.conv_resolution, s.conv_resolution,
                                generator=generator)
                grad = torch.randn(x.shape, generator=generator)
                if layout == "channels_last":
                    x = x.contiguous(memory_format=torch.channels_last)
                    grad = grad.contiguous(memory_format=torch.channels_last)
                x, grad = x.to(device).requires_grad_(), grad.to(device)
                impls = {name: module.to(device) for name, module in
                         quadraconv_impls(channels, s.conv_kernel, seed=0).items()}
                rows += _quadraconv_rows(ctx, impls, x, grad, layout, channels,
                                         time_round_robin, peak_step_bytes, saved_bytes)
    table = pd.DataFrame(rows, columns=QUADRACONV_COLUMNS)
    write_csv_atomic(table, ctx.out / "quadraconv.csv")


def _quadraconv_rows(ctx, impls, x, grad, layout, channels, time_round_robin, peak_step_bytes,
                     saved_bytes) -> list[dict]:
    s, device = ctx.sizes, ctx.device
    # 1. correctness: every output and gradient against the naive form (TF32 off)
    results = {}
    with no_tf32():
        for name, module in impls.items():
            module.zero_grad(set_to_none=True)
            x.grad = None
            y = module(x)
            y.backward(grad)
            weight, bias = _term_grads(name, module)
            results[name] = (y.detach().float(), x.grad.detach().float(), weight.float(),
                             None if bias is None else bias.float())
        # bf16 autocast through the hand-written backward (the search's and retrain's path)
        module = impls["quadraconv"]
        module.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast(device.type, dtype=torch.bfloat16):
            y = module(x)
        y.float().backward(grad)
        weight, bias = _term_grads("quadraconv", module)
        bf16 = (y.detach().float(), x.grad.detach().float(), weight.float(),
                None if bias is None else bias.float())
    naive = results["naive-3conv"]

    def diffs(result, reference=naive):
        values = [float((a - b).abs().max()) if a is not None else math.nan
                  for a, b in zip(result, reference)]
        scale = max(float(reference[0].abs().max()), 1e-12)
        return values, values[0] / scale

    # 2. time (round robin), peak memory and saved bytes of forward+backward
    runs = {}
    for name, module in impls.items():
        def run(module=module) -> None:
            module.zero_grad(set_to_none=True)
            x.grad = None
            module(x).backward(grad)
        runs[name] = run
    times = time_round_robin(runs, s.conv_repeats, 2, device.type)
    peaks = {name: peak_step_bytes(run, device.type)[0] for name, run in runs.items()}
    saved = {name: saved_bytes(lambda module=module: module(x), exclude=[*module.parameters()])
             for name, module in impls.items()}
    rows = []
    base = {"layout": layout, "channels": channels, "batch": s.conv_batch,
            "resolution": s.conv_resolution, "kernel_size": s.conv_kernel,
            "device": str(device)}
    for name in impls:
        values, rel = diffs(results[name])
        rows.append({**base, "impl": name, "path": _quadraconv_path(name, x),
                     "dtype": _fp32_text(device), "fwd_bwd_ms": 1e3 * times[name],
                     "time_vs_naive": times[name] / times["naive-3conv"],
                     "peak_bytes": peaks[name], "peak_vs_naive": peaks[name] /
                     peaks["naive-3conv"] if peaks["naive-3conv"] else math.nan,
                     "saved_bytes": saved[name],
                     "saved_vs_naive": saved[name] / saved["naive-3conv"],
                     "max_abs_diff_out": values[0], "max_abs_diff_grad_x": values[1],
                     "max_abs_diff_grad_w": values[2], "max_abs_diff_grad_b": values[3],
                     "max_rel_diff": rel, "reference": "naive-3conv (fp32, TF32 off)"})
    # the hand-written backward against plain autograd of the same grouped conv
    values, rel = diffs(results["quadraconv"], results["grouped-autograd"])
    rows.append({**base, "impl": "quadraconv vs grouped-autograd",
                 "path": _quadraconv_path("quadraconv", x), "dtype": _fp32_text(device),
                 "max_abs_diff_out": values[0], "max_abs_diff_grad_x": values[1],
                 "max_abs_diff_grad_w": values[2], "max_abs_diff_grad_b": values[3],
                 "max_rel_diff": rel, "reference": "grouped-autograd (fp32, TF32 off)"})
    values, rel = diffs(bf16)
    rows.append({**base, "impl": "quadraconv (bf16 autocast)",
                 "path": _quadraconv_path("quadraconv", x), "dtype": "bfloat16 (autocast)",
                 "max_abs_diff_out": values[0], "max_abs_diff_grad_x": values[1],
                 "max_abs_diff_grad_w": values[2], "max_abs_diff_grad_b": values[3],
                 "max_rel_diff": rel, "reference": "naive-3conv (fp32, TF32 off)"})
    return rows


# --- part: Table II blocks --------------------------------------------------------------------

PROFILE_COLUMNS = ["kind", "channels", "op", "calls_per_step", "self_device_ms_per_step",
                   "self_cpu_ms_per_step", "share_of_device_time"]


def part_blocks(ctx: Context) -> None:
    from .blocks import build_stack, run_block_bench
    from .config import BlockBenchConfig

    s = ctx.sizes
    config = BlockBenchConfig(kinds=s.block_kinds, channels=s.block_channels,
                              layers=s.block_layers, batch=s.block_batch,
                              resolution=s.block_resolution, repeats=s.block_repeats,
                              warmup=s.block_warmup, device=ctx.device.type,
                              **({"threads": s.threads} if s.threads else {}))
    table = run_block_bench(config, progress=False)
    write_csv_atomic(table, ctx.out / "blocks.csv")
    _plot_blocks(table, ctx.out / "blocks.png")
    # where the time goes: the costliest ops of QuadraBlock and HorBlock at the first width
    if ctx.left() < 0:
        ctx.notes.append("profiler table skipped (time budget)")
        return
    rows = []
    channels = config.channels[0]
    with torch_threads(s.threads, BENCHMARK):
        for kind in ("quadra", "hor"):
            torch.manual_seed(0)
            model = build_stack(kind, channels, config.layers, config.kernel_size,
                                config.hor_order).to(ctx.device)
            x = torch.randn(config.batch, channels, config.resolution, config.resolution)
            x = x.contiguous(memory_format=torch.channels_last).to(ctx.device)
            rows += _profile_rows(ctx, kind, channels, model, x)
            del model
    write_csv_atomic(pd.DataFrame(rows, columns=PROFILE_COLUMNS),
                     ctx.out / "blocks_profile.csv")


def _profile_rows(ctx: Context, kind: str, channels: int, model, x) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    grad = torch.randn_like(x)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(x).backward(grad)
        optimizer.step()

    step()                              # warm-up (kernels, buffers, cuDNN's choice)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.cuda else [])
    steps = ctx.sizes.profile_steps
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if ctx.cuda:
            torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]

    def device_us(event) -> float:
        return float(getattr(event, "self_device_time_total",
                             getattr(event, "self_cuda_time_total", 0.0)) or 0.0)

    total = sum(device_us(e) for e in events) or 1.0
    key = device_us if ctx.cuda else (lambda e: float(e.self_cpu_time_total))
    rows = []
    for event in sorted(events, key=key, reverse=True)[:15]:
        rows.append({"kind": kind, "channels": channels, "op": event.key,
                     "calls_per_step": event.count / steps,
                     "self_device_ms_per_step": device_us(event) / 1e3 / steps,
                     "self_cpu_ms_per_step": float(event.self_cpu_time_total) / 1e3 / steps,
                     "share_of_device_time": device_us(event) / total if ctx.cuda else math.nan})
    return rows


def _plot_blocks(table: pd.DataFrame, path: Path) -> Path | None:
    """Training throughput and peak memory per kind and width, as bars (best effort)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001 -- a plot is a bonus
        return None
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for axis, column, label in ((axes[0], "train_img_s", "training images/s"),
                                (axes[1], "peak_bytes", "peak training memory (MiB)")):
        view = table.pivot(index="kind", columns="channels", values=column)
        if column == "peak_bytes":
            view = view / 2**20
        view.plot.bar(ax=axis, rot=0)
        axis.set_ylabel(label)
        axis.set_xlabel("")
        axis.legend(title="C", fontsize=8)
    figure.suptitle(f"24-layer block stacks, batch {int(table['batch'].iloc[0])}, "
                    f"{table['device'].iloc[0]}", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return write_bytes_atomic(path, buffer.getvalue())


# --- part: supernet steps -----------------------------------------------------------------------

def part_supernet(ctx: Context) -> None:
    from .config import SupernetBenchConfig
    from .supernet import bench_supernet

    s = ctx.sizes
    frames = []
    for precision in s.precisions:
        for batch in s.supernet_batches:
            if ctx.left() < 0:
                ctx.notes.append(f"{precision} batch {batch}: skipped (time budget)")
                continue
            config = SupernetBenchConfig(space=s.supernet_space, batch_size=batch,
                                         resolution=s.supernet_resolution,
                                         rounds=s.supernet_rounds, warmup=s.supernet_warmup,
                                         threads=s.threads)
            table = bench_supernet(config, device=ctx.device.type, precision=precision,
                                   peak=True)
            table.insert(0, "precision", table.attrs["precision"])
            table.insert(1, "batch", batch)
            table.insert(2, "device", str(ctx.device))
            table["space"] = table.attrs["space"]
            frames.append(table)
            if ctx.cuda:
                torch.cuda.empty_cache()
    write_csv_atomic(pd.concat(frames, ignore_index=True), ctx.out / "supernet.csv")


# --- part: end to end -------------------------------------------------------------------------

E2E_COLUMNS = ["run", "device", "precision", "threads", "epochs_run", "epochs_total",
               "finished", "wall_s", "epoch_s_warmup", "epoch_s_search", "epoch_s_train",
               "projected_total_s", "projection", "val_top1", "out"]


def _median(values) -> float:
    values = [float(v) for v in values if not math.isnan(float(v))]
    return statistics.median(values) if values else math.nan


def part_e2e(ctx: Context) -> None:
    import shutil

    from ..nas.config import SearchConfig

    s, root = ctx.sizes, ctx.out / "e2e"
    if root.exists():                   # a measurement: a rerun starts afresh
        shutil.rmtree(root)
    accelerator = ctx.device.type
    config = SearchConfig(accelerator=accelerator, lut_cache_dir=str(root / "lut"),
                          **s.search)
    rows = []

    def save(row: dict) -> None:        # after each run: a part killed later keeps them
        rows.append(row)
        write_csv_atomic(pd.DataFrame(rows, columns=E2E_COLUMNS), ctx.out / "e2e.csv")

    # 1. the search on the device, in calls that fit the time left (less what 2. and 3. need)
    reserve = 0.3 * ctx.left() if ctx.left() < 1e8 else 0.0
    device_out = root / f"search-{accelerator}"
    calls, result = _chunked_search(ctx, config, device_out, reserve)
    save(_search_row(f"search on {accelerator}", accelerator, config, calls, result,
                     device_out, Precision(config.precision, ctx.device).name))
    # 2. a short retrain of the searched child on the device
    if result.finished and ctx.left() > 0:
        save(_retrain_row(ctx, result.best_path, config, root))
    else:
        ctx.notes.append("retrain skipped: " + ("the search did not finish" if not
                                                 result.finished else "time budget"))
    # 3. the same search's steps on 2 threads of this host's CPU, timed: its default-size
    #    time projected from them (bounded: a few steps, not whole epochs)
    fixed = _outside_epochs(calls, device_out)
    save(_cpu_reference(ctx, config, root / "search-cpu-reference", fixed))


def _outside_epochs(calls, out: Path) -> float:
    """Seconds of the device run's last call outside its epochs: start-up and, when it
    finished, the derivation."""
    if not calls or not (out / "search_log.csv").exists():
        return 0.0
    seconds, epochs, _ = calls[-1]
    log = pd.read_csv(out / "search_log.csv")
    return max(0.0, seconds - float(log["seconds"].tail(epochs).sum())) if epochs else 0.0


def _cpu_reference(ctx: Context, config, out: Path, fixed: float) -> dict:
    """Time the search's own steps on the CPU (``cpu_reference_threads`` threads): warm-up
    steps (weights only), search steps (weights + α) and one validation; project the
    default-size search from them."""
    from ..nas.search import SearchRun
    from ..predictors import get

    threads = ctx.sizes.cpu_reference_threads
    row = {"run": f"search on cpu ({threads} threads, reference)", "device": "cpu",
           "precision": "fp32", "threads": threads, "epochs_run": 0,
           "epochs_total": config.warmup_epochs + config.epochs, "finished": False,
           "wall_s": math.nan, "epoch_s_warmup": math.nan, "epoch_s_search": math.nan,
           "epoch_s_train": math.nan, "projected_total_s": math.nan,
           "projection": "not measured (time budget)", "val_top1": math.nan,
           "out": "(steps timed in memory)"}
    if ctx.cuda and ctx.left() < 20:
        ctx.notes.append("CPU reference skipped (time budget)")
        return row
    cpu_config = replace(config, accelerator="cpu", threads=threads, precision="fp32",
                         warmup_epochs=1, epochs=1)
    started = time.perf_counter()
    timed = 2 if ctx.sizes.tiny else 3
    with torch_threads(threads):
        run = SearchRun(cpu_config, out, predictor=get(cpu_config.device))
        per_step = {}
        for phase, epoch in (("warmup", 0), ("search", 1)):
            seconds = []
            for index, batch in enumerate(run.batches(epoch)):
                if index > timed:
                    break
                begin = time.perf_counter()
                run.step(batch, epoch, index)
                seconds.append(time.perf_counter() - begin)
            # the first step warms up (where there are others)
            per_step[phase] = statistics.median(seconds[1:] or seconds)
        begin = time.perf_counter()
        run.validate_argmax()
        validation = time.perf_counter() - begin
    steps = run.steps_per_epoch
    warm = steps * per_step["warmup"] + validation
    search_s = steps * per_step["search"] + validation
    row.update(wall_s=time.perf_counter() - started, epoch_s_warmup=warm,
               epoch_s_search=search_s,
               projected_total_s=config.warmup_epochs * warm + config.epochs * search_s + fixed,
               projection=(f"{steps} steps × the median of {timed} timed steps per phase "
                           f"({1e3 * per_step['warmup']:.0f} ms warm-up, "
                           f"{1e3 * per_step['search']:.0f} ms search) + one validation, for "
                           f"{config.warmup_epochs} + {config.epochs} epochs, + the device "
                           f"run's start-up and derivation ({fixed:.1f} s): a lower bound"))
    return row


def _chunked_search(ctx: Context, config, out: Path, reserve: float,
                    max_epochs: int | None = None, threads: int | None = None):
    """Run the search in ``out`` in calls of as many epochs as fit the time left (less
    ``reserve``), each resuming the last; stop when it finished, after ``max_epochs``, or when
    the next epoch would not fit. Returns ([(seconds, epochs run, finished), …] per call, the
    last call's result)."""
    from ..nas.search import search

    total = config.warmup_epochs + config.epochs
    limit = total if max_epochs is None else min(total, max_epochs)
    calls, result = [], None
    while True:
        done = sum(epochs for _, epochs, _ in calls)
        if (result is not None and result.finished) or done >= limit:
            break
        if result is None:
            stop = 1
        else:
            log = result.log
            search_epochs = log.loc[log["phase"] == "search", "seconds"]
            epoch_s = (float(search_epochs.max()) if len(search_epochs)
                       else 2.0 * float(log["seconds"].max()))
            left = ctx.left() - reserve
            if left < 1.5 * epoch_s:
                ctx.notes.append(f"{out.name}: stopped after {done} of {total} epochs (time "
                                 f"budget); its total is extrapolated")
                break
            stop = max(1, int(left / (1.5 * epoch_s)))
        stop = min(stop, limit - done)
        started = time.perf_counter()
        result = search(config, out=out, resume=bool(calls), stop_after_epochs=stop,
                        threads=threads)
        calls.append((time.perf_counter() - started, len(result.log) - done, result.finished))
    return calls, result


def _search_row(name, device, config, calls, result, out, precision) -> dict:
    log = result.log
    total = config.warmup_epochs + config.epochs
    wall = sum(seconds for seconds, _, _ in calls)
    warm, search_s = _phase_seconds(log, "warmup"), _phase_seconds(log, "search")
    if result.finished:
        projected, how = wall, f"measured: {len(calls)} call(s), each resuming the last"
    else:
        if math.isnan(search_s):
            search_s = 2 * warm
        remaining = [search_s if i >= config.warmup_epochs else warm
                     for i in range(len(log), total)]
        projected = wall + sum(remaining)
        how = ("extrapolated from the measured epochs (without the derivation at the end: a "
               "lower bound)")
    return {"run": name, "device": device, "precision": precision,
            "threads": config.threads or "", "epochs_run": len(log), "epochs_total": total,
            "finished": bool(result.finished), "wall_s": wall, "epoch_s_warmup": warm,
            "epoch_s_search": search_s, "epoch_s_train": math.nan,
            "projected_total_s": projected, "projection": how,
            "val_top1": (result.best or {}).get("val_top1", math.nan) if result.finished
            else math.nan, "out": str(out)}


def _phase_seconds(log: pd.DataFrame | None, phase: str) -> float:
    if log is None or not len(log):
        return math.nan
    return _median(log.loc[log["phase"] == phase, "seconds"])


def _retrain_row(ctx: Context, best_path: Path, config, root: Path) -> dict:
    from ..train import RetrainConfig, retrain

    accelerator = ctx.device.type
    retrain_config = RetrainConfig(epochs=ctx.sizes.retrain_epochs, data=config.data,
                                   batch_size=config.batch_size, accelerator=accelerator,
                                   resolution=config.resolution, threads=ctx.sizes.threads)
    out = root / f"retrain-{accelerator}"
    started = time.perf_counter()
    result = retrain(best_path, retrain_config, out=out)
    wall = time.perf_counter() - started
    log = result.log
    return {"run": f"retrain on {accelerator}", "device": accelerator,
            "precision": Precision(retrain_config.precision, ctx.device).name, "threads": "",
            "epochs_run": len(log), "epochs_total": retrain_config.epochs,
            "finished": bool(result.finished), "wall_s": wall, "epoch_s_warmup": math.nan,
            "epoch_s_search": math.nan, "epoch_s_train": _median(log["seconds"]),
            "projected_total_s": wall, "projection": "measured", "val_top1": result.top1,
            "out": str(out)}


# --- part: latency ------------------------------------------------------------------------------

def _timed_text(mode: str, repeats: int) -> str:
    what = {"eager": "eager", "cudagraph": "CUDA graph replay",
            "compile": "torch.compile (default mode)"}[mode]
    return f"{what}; synchronised wall clock; median of {repeats} rounds"


def _latency_callable(module, x, mode: str, ctx: Context, dtype: str):
    """What one timed call runs: the module (eager / compiled) or a captured graph's replay."""
    autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16) if dtype == "bf16" \
        else None
    if mode == "eager":
        if autocast is None:
            return lambda: module(x)

        def run():
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16):
                module(x)
        return run
    if mode == "compile":
        compiled = torch.compile(module)
        with torch.no_grad():
            compiled(x)                # compiles here, not in the timed rounds
        return lambda: compiled(x)
    # cudagraph: warm up on a side stream, capture one forward, replay it
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(3):
            module(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        module(x)
    return graph.replay


def part_latency(ctx: Context) -> None:
    from ..models.by_name import model_from_name
    from ..predictors.calibrate import MEASUREMENT_COLUMNS, measured_module
    from ..predictors.measured import time_callable
    from ..space import load_space
    from .profile_check import block_cases

    s, device = ctx.sizes, ctx.device
    env = environment(device, s.tiny)
    space = load_space(s.latency_space)
    channels = space.input_shape[1]
    modes = ["eager"] + (["cudagraph", "compile"] if ctx.cuda else [])
    if not ctx.cuda:
        ctx.notes.append("CUDA graphs and torch.compile are timed on CUDA only")
    # the cases, most needed first: eager fp32 (the fit's input), then the others
    cases = []
    for mode, dtype in [("eager", "fp32"), *[(m, "fp32") for m in modes[1:]], ("eager", "bf16")]:
        for batch in s.latency_batches:
            shape = (batch, channels, s.latency_resolution, s.latency_resolution)
            if mode != "compile":
                for op, _, layer_shape, _ in block_cases(space, shape):
                    cases.append((mode, dtype, batch, "block", op, tuple(layer_shape)))
            # compiling takes a minute a model: the family's middle one first
            models = sorted(s.latency_models, key=lambda name: name != "quadranet_t") \
                if mode == "compile" else s.latency_models
            for name in models:
                cases.append((mode, dtype, batch, "model", name, shape))
    rows, skipped = [], 0
    built: dict = {}
    source = (f"qnas bench gpu (qnas {__version__}) on {env['gpu']}, {env['date'][:10]}"
              + ("; TINY CPU pipeline test, not a GPU measurement" if s.tiny else ""))
    with torch_threads(None, MEASURING) as threads, torch.no_grad():
        for mode, dtype, batch, kind, timed, shape in cases:
            if ctx.left() < (COMPILE_RESERVE_S if mode == "compile" else 0):
                skipped += 1
                continue
            shape_text = "x".join(map(str, shape))
            key = (kind, timed, shape[1:] if kind == "block" else None)
            try:
                if key not in built:
                    module = (measured_module("block", timed, shape_text) if kind == "block"
                              else model_from_name(timed, num_classes=1000))
                    built[key] = module.eval().to(device)
                module = built[key]
                x = torch.randn(*shape, device=device)
                run = _latency_callable(module, x, mode, ctx, dtype)
                timing = time_callable(run, device, threads=threads, warmup=s.latency_warmup,
                                       repeats=s.latency_repeats)
            except Exception as err:  # noqa: BLE001 -- a mode a module does not support
                ctx.notes.append(f"{mode} {dtype} {timed} {shape_text}: {type(err).__name__}: "
                                 f"{' '.join(str(err).split())[:120]}")
                continue
            rows.append({
                "gpu": env["gpu"], "driver": env["driver"], "cuda": env["cuda"],
                "cudnn": env["cudnn"], "torch": env["torch"],
                "dtype": _fp32_text(device) if dtype == "fp32" else "bfloat16 (autocast)",
                "timing": _timed_text(mode, s.latency_repeats), "batch": batch, "kind": kind,
                "timed": timed, "input_shape": shape_text, "latency_ms": timing.median_ms,
                "ratio_to": "", "ratio_median": "", "ratio_min": "", "ratio_max": "",
                "source": source, "mode": mode, "precision": dtype, "iqr": timing.spread,
                "calls_per_round": timing.number})
            if ctx.cuda and mode in ("compile", "cudagraph"):
                torch.cuda.empty_cache()
    if skipped:
        ctx.notes.append(f"{skipped} latency case(s) skipped (time budget)")
    table = pd.DataFrame(rows)
    write_csv_atomic(table, ctx.out / "latency.csv")
    for (mode, dtype), group in table.groupby(["mode", "precision"], sort=False):
        write_csv_atomic(group[list(MEASUREMENT_COLUMNS)],
                         ctx.out / f"latency_{mode}_{dtype}.csv")
    _latency_vs_profiles(ctx)


def _latency_vs_profiles(ctx: Context) -> None:
    """The shipped GPU profiles' predictions of the eager fp32 timings (what a refit would
    start from)."""
    from .profile_check import check_against

    path = ctx.out / "latency_eager_fp32.csv"
    if not path.exists():
        return
    try:
        checked = check_against("h100,a100", str(path))
    except QnasError as err:
        ctx.notes.append(f"profile check skipped: {err}")
        return
    write_csv_atomic(checked.table, ctx.out / "latency_vs_profiles.csv")


# --- part: training options ---------------------------------------------------------------------

OPTIONS_COLUMNS = ["model", "batch", "resolution", "device", "precision", "channels_last",
                   "compiled", "step_ms", "img_s", "speedup_vs_fp32_eager", "peak_bytes",
                   "peak_vs_fp32_eager", "loss"]


def part_options(ctx: Context) -> None:
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2

    from ..models.by_name import model_from_name
    from .measure import peak_step_bytes, time_round_robin

    s, device = ctx.sizes, ctx.device
    prepare_device(device)              # cuDNN autotuning, as qnas retrain runs
    combos = [(p, cl, False) for p in s.precisions for cl in (False, True)]
    if ctx.cuda:
        combos += [("bf16", False, True), ("bf16", True, True)]
    else:
        ctx.notes.append("torch.compile combinations are timed on CUDA only")
    images = torch.randn(s.options_batch, 3, s.options_resolution, s.options_resolution,
                         generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 1000, (s.options_batch,),
                           generator=torch.Generator().manual_seed(1)).to(device)
    rows = []
    with torch_threads(s.threads, BENCHMARK):
        for precision, channels_last, compiled in combos:
            if ctx.left() < (2 * COMPILE_RESERVE_S if compiled else 0):
                ctx.notes.append(f"{precision} channels_last={channels_last} "
                                 f"compile={compiled}: skipped (time budget)")
                continue
            torch.manual_seed(0)
            model = model_from_name(s.options_model, num_classes=1000).to(device).train()
            if channels_last:
                model.to(memory_format=torch.channels_last)
            forward = torch.compile(model) if compiled else model
            optimizer = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
            criterion = LabelSmoothingCrossEntropy(smoothing=0.1)
            mixed = Precision(precision, device)
            x = to_device(images, device, channels_last)
            losses = []

            def step(model=model, forward=forward, optimizer=optimizer, mixed=mixed, x=x,
                     criterion=criterion, losses=losses):
                with mixed.autocast():
                    logits = forward(x)
                loss = criterion(logits.float(), labels)
                optimizer.zero_grad(set_to_none=True)
                mixed.backward(loss)
                mixed.step(optimizer, lambda: torch.nn.utils.clip_grad_norm_(
                    model.parameters(), 5.0))
                losses.append(loss.detach())

            step()                       # compiles / warms up
            seconds = time_round_robin({"step": step}, s.options_repeats, 1, device.type)
            peak = peak_step_bytes(step, device.type)[0]
            rows.append({"model": s.options_model, "batch": s.options_batch,
                         "resolution": s.options_resolution, "device": str(device),
                         "precision": mixed.name, "channels_last": channels_last,
                         "compiled": compiled, "step_ms": 1e3 * seconds["step"],
                         "img_s": s.options_batch / seconds["step"], "peak_bytes": peak,
                         "loss": float(losses[0])})
            del model, forward, optimizer
            if ctx.cuda:
                torch.cuda.empty_cache()
    table = pd.DataFrame(rows, columns=OPTIONS_COLUMNS)
    base = table[(table["precision"] == "fp32") & ~table["channels_last"].astype(bool)
                 & ~table["compiled"].astype(bool)]
    if len(base):
        table["speedup_vs_fp32_eager"] = float(base["step_ms"].iloc[0]) / table["step_ms"]
        table["peak_vs_fp32_eager"] = table["peak_bytes"] / float(base["peak_bytes"].iloc[0])
    write_csv_atomic(table, ctx.out / "options.csv")


PART_FUNCTIONS = {"quadraconv": part_quadraconv, "blocks": part_blocks,
                  "supernet": part_supernet, "e2e": part_e2e, "latency": part_latency,
                  "options": part_options}


# --- the report ---------------------------------------------------------------------------------

def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A pandas table as a Markdown table (numbers to ``digits`` significant digits)."""
    def cell(value) -> str:
        if isinstance(value, (bool, np.bool_)):
            return "yes" if value else "no"
        if isinstance(value, float):
            if math.isnan(value):
                return "–"
            return f"{value:.{digits}g}"
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    lines = [header, rule]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _read(out: Path, name: str) -> pd.DataFrame | None:
    path = out / name
    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None


def goals(out: str | Path) -> pd.DataFrame:
    """The issue's goals against what the CSVs in ``out`` hold: one row each, met or missed
    (or not measured)."""
    out = Path(out)
    rows = []
    env = json.loads((out / ENVIRONMENT).read_text()) if (out / ENVIRONMENT).exists() else {}
    on_gpu = str(env.get("device", "cuda")).startswith("cuda")

    def add(goal: str, measured: float, target: str, met: bool | None, where: str) -> None:
        verdict = "not measured" if met is None else ("met" if met else "missed")
        if met is not None and not on_gpu:
            verdict += " (cpu pipeline test: no verdict)"
        rows.append({"goal": goal, "measured": measured, "target": target,
                     "verdict": verdict, "where": where})

    blocks = _read(out, "blocks.csv")
    for channels in (64, 128) if blocks is None else sorted(blocks["channels"].unique()):
        quadra = hor = None
        if blocks is not None:
            view = blocks[blocks["channels"] == channels].set_index("kind")
            if {"quadra", "hor"} <= set(view.index):
                quadra, hor = view.loc["quadra"], view.loc["hor"]
        peak = quadra["peak_bytes"] / hor["peak_bytes"] if quadra is not None else math.nan
        speed = quadra["train_img_s"] / hor["train_img_s"] if quadra is not None else math.nan
        saved = quadra["saved_bytes"] / hor["saved_bytes"] if quadra is not None else math.nan
        add(f"QuadraBlock / HorBlock peak training memory, C={channels}", peak,
            f"≤ {HOR_MEMORY_GOAL} (paper {PAPER_MEMORY})",
            None if math.isnan(peak) else peak <= HOR_MEMORY_GOAL, "blocks.csv")
        add(f"QuadraBlock / HorBlock training throughput, C={channels}", speed,
            f"≥ {HOR_SPEED_GOAL} (paper {PAPER_SPEED})",
            None if math.isnan(speed) else speed >= HOR_SPEED_GOAL, "blocks.csv")
        add(f"QuadraBlock / HorBlock bytes saved for backward, C={channels}", saved,
            f"≤ {PAPER_MEMORY} (the paper's 30% less)",
            None if math.isnan(saved) else saved <= PAPER_MEMORY, "blocks.csv")
    supernet = _read(out, "supernet.csv")
    if supernet is None:
        add("supernet weight step / child step", math.nan, f"≤ {WEIGHT_STEP_GOAL}", None,
            "supernet.csv")
        add("supernet arch step / child step", math.nan, f"≤ {ARCH_STEP_GOAL}", None,
            "supernet.csv")
    else:
        for (precision, batch), group in supernet.groupby(["precision", "batch"], sort=False):
            view = group.set_index("step")
            for step, goal in (("supernet weight step", WEIGHT_STEP_GOAL),
                               ("supernet arch step", ARCH_STEP_GOAL)):
                ratio = float(view.loc[step, "time_ratio"])
                add(f"{step} / child step ({precision}, batch {batch})", ratio, f"≤ {goal}",
                    ratio <= goal, "supernet.csv")
    e2e = _read(out, "e2e.csv")
    speedup = math.nan
    if e2e is not None and len(e2e) >= 2:
        device_row = e2e[e2e["run"].str.startswith("search on") & ~e2e["run"].str.contains(
            "reference")]
        cpu_row = e2e[e2e["run"].str.contains("reference")]
        if len(device_row) and len(cpu_row):
            speedup = float(cpu_row["projected_total_s"].iloc[0]) / float(
                device_row["projected_total_s"].iloc[0])
    add(f"default-size search: {CPU_REFERENCE_THREADS} CPU cores / the GPU", speedup,
        f"≥ {SEARCH_SPEEDUP_GOAL}", None if math.isnan(speedup)
        else speedup >= SEARCH_SPEEDUP_GOAL, "e2e.csv")
    return pd.DataFrame(rows, columns=["goal", "measured", "target", "verdict", "where"])


def write_report(out: str | Path) -> Path:
    """``report.md`` from the files in ``out`` (any part may be missing)."""
    out = Path(out)
    env = json.loads((out / ENVIRONMENT).read_text()) if (out / ENVIRONMENT).exists() else {}
    parts = read_parts(out)
    lines = ["# qnas on a GPU: Table II, supernet steps, search and retrain, latencies", ""]
    if env.get("tiny") or env.get("device", "cuda").startswith("cpu"):
        lines += [("> **A pipeline test on the CPU at toy sizes (`--accelerator cpu --tiny`), "
                   "NOT a GPU measurement.** Its numbers say nothing about any goal."), ""]
    lines += [f"- **GPU:** {env.get('gpu', '?')}"
              + (f", {env['gpu_memory_gib']} GiB, compute capability "
                 f"{env['compute_capability']}" if "gpu_memory_gib" in env else ""),
              (f"- **Driver / CUDA / cuDNN / torch:** {env.get('driver', '?')} / "
               f"{env.get('cuda', '?')} / {env.get('cudnn', '?')} / {env.get('torch', '?')}"),
              (f"- **qnas:** {env.get('qnas', '?')}; Python {env.get('python', '?')}; host CPU "
               f"{env.get('host_cpu', '?')}; measured {env.get('date', '?')}"),
              "- **Command:** `qnas bench gpu --out " + str(out) + "` (each part: `--parts "
              "NAME`; `scripts/gpu_check.sh` runs them all under time limits)"]
    if "cudnn_tf32" in env:
        lines.append(f"- **fp32 convolutions in TF32:** {env['cudnn_tf32']}; matmuls in TF32: "
                     f"{env['matmul_tf32']} (PyTorch defaults)")
    lines += ["", "## Parts", ""]
    part_rows = [{"part": name, "status": parts[name]["status"] if name in parts else "not run",
                  "seconds": parts.get(name, {}).get("seconds") or math.nan,
                  "notes": "; ".join(parts.get(name, {}).get("notes", [])) or ""}
                 for name in PARTS]
    lines += [markdown_table(pd.DataFrame(part_rows)), ""]
    lines += ["## Goals (issue 14), measured side by side in this run", "",
              markdown_table(goals(out)), ""]
    lines += _blocks_section(out) + _quadraconv_section(out) + _supernet_section(out)
    lines += _e2e_section(out) + _latency_section(out) + _options_section(out)
    return write_text_atomic(out / REPORT, "\n".join(lines) + "\n")


def _blocks_section(out: Path) -> list[str]:
    table = _read(out, "blocks.csv")
    if table is None:
        return []
    from .blocks import format_block_table

    first = table.iloc[0]
    lines = ["## Table II: 24-layer block stacks", "",
             (f"Batch {first['batch']}, {first['resolution']}×{first['resolution']}, "
              f"{first['layers']} layers, {first['device']}; ratios × QuadraBlock's at the same "
              f"width; saved: {first['saved_rule']}; peak: {first['peak_method']} above the "
              f"step's start."), "", markdown_table(format_block_table(table)), ""]
    if (out / "blocks.png").exists():
        lines += ["![blocks](blocks.png)", ""]
    profile = _read(out, "blocks_profile.csv")
    if profile is not None and len(profile):
        lines += ["### Where a training step's time goes (profiler, costliest ops)", "",
                  ("Read with the goals above: where QuadraBlock misses, these are the ops to "
                   "fuse (the quadratic product with its convolution output, the LayerNorms) or "
                   "to compile."), ""]
        for kind, group in profile.groupby("kind", sort=False):
            lines += [f"**{kind}** (C={group['channels'].iloc[0]}):", "",
                      markdown_table(group.drop(columns=["kind", "channels"]).head(10)), ""]
    return lines


def _quadraconv_section(out: Path) -> list[str]:
    table = _read(out, "quadraconv.csv")
    if table is None:
        return []
    shown = table[["impl", "layout", "path", "channels", "fwd_bwd_ms", "time_vs_naive",
                   "peak_bytes", "peak_vs_naive", "saved_vs_naive", "max_rel_diff",
                   "max_abs_diff_grad_x", "max_abs_diff_grad_w"]].copy()
    shown["peak_bytes"] = shown["peak_bytes"] / 2**20
    shown = shown.rename(columns={"peak_bytes": "peak_MiB"})
    first = table.iloc[0]
    lines = ["## QuadraConv2d on the device", "",
             (f"One layer, batch {first['batch']}, {first['resolution']}×{first['resolution']}, "
              f"k={first['kernel_size']}: forward+backward against three `nn.Conv2d` under "
              f"autograd (naive-3conv) and the one grouped conv under autograd; differences of "
              f"the output and every gradient with TF32 off (max_rel_diff: of the output, "
              f"relative to its largest value). quadraconv-me is the memory-efficient mode."),
             "", markdown_table(shown), ""]
    return lines


def _supernet_section(out: Path) -> list[str]:
    table = _read(out, "supernet.csv")
    if table is None:
        return []
    columns = [c for c in ("precision", "batch", "step", "median_ms", "time_ratio",
                           "saved_ratio", "peak_MiB", "peak_ratio") if c in table.columns]
    return ["## Supernet steps vs the child's", "",
            (f"Space {table['space'].iloc[0]}; one sampled child; the same batch for all three "
             f"steps; median of the rounds."), "", markdown_table(table[columns]), ""]


def _e2e_section(out: Path) -> list[str]:
    table = _read(out, "e2e.csv")
    if table is None:
        return []
    columns = ["run", "precision", "epochs_run", "epochs_total", "finished", "wall_s",
               "epoch_s_warmup", "epoch_s_search", "epoch_s_train", "projected_total_s",
               "projection", "val_top1"]
    return ["## Search and retrain end to end", "",
            ("The default search (`qnas search --device cortexA76 --latency 300ms`: digit-pairs, "
             "6 warm-up + 10 search epochs, batch 64) on the device, and the same epochs on "
             f"{CPU_REFERENCE_THREADS} threads of this host's CPU; then `qnas retrain` of the "
             "searched child. Wall times include every start-up (a chunked run resumes from its "
             "checkpoints)."), "", markdown_table(table[columns]), ""]


def _latency_section(out: Path) -> list[str]:
    table = _read(out, "latency.csv")
    if table is None or not len(table):
        return []
    rows = []
    for (mode, precision, batch, kind), group in table.groupby(
            ["mode", "precision", "batch", "kind"], sort=False):
        rows.append({"mode": mode, "precision": precision, "batch": batch, "kind": kind,
                     "n": len(group), "median_ms": group["latency_ms"].median(),
                     "min_ms": group["latency_ms"].min(), "max_ms": group["latency_ms"].max()})
    models = table[table["kind"] == "model"].pivot_table(
        index=["timed", "batch"], columns=["mode", "precision"], values="latency_ms")
    models.columns = [f"{mode} {precision} ms" for mode, precision in models.columns]
    lines = ["## Latency: QuadraBlock candidates and whole models", "",
             ("`latency_eager_fp32.csv` has the columns of "
              "`predictors/reference/h100_eager_measurements.csv` (what the GPU profile fit "
              "reads); `latency_cudagraph_fp32.csv`, `latency_compile_fp32.csv` and "
              "`latency_eager_bf16.csv` the same for the other modes; `latency.csv` all rows."),
             "", markdown_table(pd.DataFrame(rows)), "",
             markdown_table(models.reset_index()), ""]
    against = _read(out, "latency_vs_profiles.csv")
    if against is not None and len(against):
        summary = against[against["check"] == "timing"].groupby(
            ["profile", "batch", "kind"], sort=False)["rel_error"].agg(
            n="count", median_abs_rel_error=lambda e: e.abs().median()).reset_index()
        lines += [("The shipped profiles' predictions of these eager timings (`qnas bench "
                   "profile h100,a100 --against latency_eager_fp32.csv`; a refit: `qnas "
                   "predictor calibrate NAME --measurements latency_eager_fp32.csv --like "
                   "h100`):"), "", markdown_table(summary), ""]
    return lines


def _options_section(out: Path) -> list[str]:
    table = _read(out, "options.csv")
    if table is None or not len(table):
        return []
    shown = table.drop(columns=["loss"]).copy()
    shown["peak_bytes"] = shown["peak_bytes"] / 2**20
    shown = shown.rename(columns={"peak_bytes": "peak_MiB"})
    return ["## What --precision, --channels-last and --compile buy", "",
            ("One training step (AdamW, label smoothing, clipping) of a QuadraNet, as `qnas "
             "retrain` runs it."), "", markdown_table(shown), ""]
