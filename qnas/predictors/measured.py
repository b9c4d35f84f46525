"""Latency measured on this host with PyTorch (ProxylessNAS's way of making CPU/GPU tables).

``MeasuredPredictor("host-cpu")`` runs the module on this machine's CPU with a fixed thread
count; ``MeasuredPredictor("host-cuda")`` on its CUDA GPU with synchronisation. Both put the
module in eval mode under ``torch.no_grad()``, warm up, then report the median of repeated
timings. The number is a measurement (source ``"measured"``); the per-kernel split of it is
not: it is the measured total shared out over the kernels of qnas's decomposition in
proportion to a generic roofline weight, and the ``ms_basis`` column says so.
"""
from __future__ import annotations

import copy
import math
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from ..errors import QnasError
from ..runtime.threads import MEASURING, resolve_threads, torch_threads
from .base import Prediction
from .kernels import decompose

HOST_DEVICES = ("host-cpu", "host-cuda")

# generic weights used only to SHARE a measured total over kernels (never to predict it)
_SHARE_FLOPS_PER_S = 50e9
_SHARE_BYTES_PER_S = 10e9
_SHARE_OVERHEAD_S = 5e-6
SHARE_BASIS = "share of the measured total ∝ generic roofline weight (not timed per kernel)"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), for version strings and host checks."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def torch_device(device: str) -> torch.device:
    """``host-cpu`` → cpu, ``host-cuda`` → cuda (refused without a GPU)."""
    if device == "host-cpu":
        return torch.device("cpu")
    if device == "host-cuda":
        if not torch.cuda.is_available():
            raise QnasError("device 'host-cuda' needs a CUDA GPU but torch.cuda.is_available() "
                            "is False on this machine; use 'host-cpu' or a profile device "
                            "(see 'qnas devices')")
        return torch.device("cuda")
    raise QnasError(f"unknown host device {device!r}; use one of {', '.join(HOST_DEVICES)}")


@dataclass
class Timing:
    """Per-call milliseconds of ``repeats`` timed rounds (each averaging ``number`` calls).

    ``samples_ms`` is wall-clock time (the latency). ``cpu_samples_ms`` is the calling thread's
    CPU time over the same rounds: with one torch thread on CPU it equals the wall time on an
    idle machine but leaves out the time the scheduler gave to other processes, so it is the
    steadier number on a shared machine (it undercounts multi-threaded or GPU work).
    """

    samples_ms: list[float]
    number: int
    cpu_samples_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def cpu_median_ms(self) -> float:
        return statistics.median(self.cpu_samples_ms) if self.cpu_samples_ms else float("nan")

    @property
    def spread(self) -> float:
        """Inter-quartile range relative to the median (0.1 = ±5 % around it)."""
        if len(self.samples_ms) < 4:
            return (max(self.samples_ms) - min(self.samples_ms)) / max(self.median_ms, 1e-12)
        q = statistics.quantiles(self.samples_ms, n=4)
        return (q[2] - q[0]) / max(self.median_ms, 1e-12)


def time_callable(fn: Callable[[], object], device: torch.device, *, threads: int,
                  warmup: int = 3, repeats: int = 15, min_round_s: float = 2e-3,
                  max_number: int = 1000) -> Timing:
    """Time ``fn()`` on ``device``: warm-up, then ``repeats`` rounds of ``number`` calls.

    ``number`` is chosen from the warm-up so that a round lasts at least ``min_round_s``
    (microsecond kernels are not timed one call at a time). CUDA work is synchronised
    before the clock starts and before it stops.
    """
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch_threads(threads, MEASURING), torch.no_grad():
        start = time.perf_counter()
        for _ in range(max(1, warmup)):
            fn()
        sync()
        one_call = (time.perf_counter() - start) / max(1, warmup)
        number = int(min(max_number, max(1, math.ceil(min_round_s / max(one_call, 1e-9)))))
        samples, cpu_samples = [], []
        for _ in range(max(1, repeats)):
            sync()
            cpu_start, start = time.thread_time(), time.perf_counter()
            for _ in range(number):
                fn()
            sync()
            samples.append((time.perf_counter() - start) * 1e3 / number)
            cpu_samples.append((time.thread_time() - cpu_start) * 1e3 / number)
    return Timing(samples, number, cpu_samples)


def time_module(module: nn.Module, input_shape: Sequence[int], device: torch.device, *,
                threads: int, warmup: int = 3, repeats: int = 15,
                min_round_s: float = 2e-3) -> Timing:
    """Time ``module`` in eval mode at ``input_shape`` (its training flag is restored)."""
    was_training = module.training
    module.eval()
    try:
        params = list(module.parameters())
        if params and params[0].device.type != device.type:
            raise QnasError(f"the module's parameters are on {params[0].device} but the "
                            f"measurement runs on {device}; move it with .to('{device.type}')")
        x = torch.randn(*input_shape, device=device)
        return time_callable(lambda: module(x), device, threads=threads, warmup=warmup,
                             repeats=repeats, min_round_s=min_round_s)
    finally:
        module.train(was_training)


def module_signature(module: nn.Module) -> tuple:
    """What determines a module's latency: its structure, tensor shapes/dtypes and device."""
    tensors = tuple((name, tuple(t.shape), str(t.dtype), t.device.type)
                    for name, t in [*module.named_parameters(), *module.named_buffers()])
    return type(module).__qualname__, repr(module), tensors


class MeasuredPredictor:
    """Measures latency on this host with PyTorch; results cached per (module, shape).

    Args:
        device: ``"host-cpu"`` or ``"host-cuda"``.
        threads: torch intra-op threads during timing (default: the measuring policy of
            :mod:`qnas.runtime.threads`, 1 or ``$QNAS_HOST_THREADS``).
        warmup, repeats: calls before timing and timed rounds (the median is reported).
    """

    source = "measured"

    def __init__(self, device: str = "host-cpu", *, threads: int | None = None,
                 warmup: int = 3, repeats: int = 15):
        self.torch_device = torch_device(device)
        self.device = device
        self.threads = resolve_threads(threads, MEASURING)
        self.warmup, self.repeats = int(warmup), int(repeats)
        if self.torch_device.type == "cuda":
            host = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
        else:
            host = cpu_model()
        self.version = f"torch {torch.__version__}, {self.threads} thread(s), {host}"
        self.known_error = (f"measured on this host (median of {self.repeats} rounds after "
                            f"{self.warmup} warm-up calls); the run-to-run spread is reported "
                            f"with each measurement and grows when other jobs share the machine")
        self._cache: dict[tuple, Timing] = {}

    def measure(self, module: nn.Module, input_shape: Sequence[int]) -> Timing:
        """The raw timing (cached): median, spread and all rounds."""
        shape = tuple(int(v) for v in input_shape)
        key = (module_signature(module), shape)
        if key not in self._cache:
            if self.torch_device.type == "cuda":
                module = _on_device(module, self.torch_device)
            self._cache[key] = time_module(module, shape, self.torch_device,
                                           threads=self.threads, warmup=self.warmup,
                                           repeats=self.repeats)
        return self._cache[key]

    def predict(self, module: nn.Module, input_shape: Sequence[int]) -> Prediction:
        kernels = decompose(module, tuple(input_shape))   # also: a wrong shape is a clear error
        timing = self.measure(module, input_shape)
        total = timing.median_ms
        return Prediction(
            latency_ms=total, device=self.device, source=self.source, version=self.version,
            known_error=(f"{self.known_error}; this measurement: median of "
                         f"{len(timing.samples_ms)} rounds × {timing.number} call(s), "
                         f"IQR {100 * timing.spread:.0f}% of the median"),
            kernels=_shared_breakdown(kernels, total))


def _on_device(module: nn.Module, device: torch.device) -> nn.Module:
    params = list(module.parameters())
    if params and params[0].device.type != device.type:
        return copy.deepcopy(module).to(device)
    return module.to(device) if not params else module


def _shared_breakdown(kernels: Sequence, total_ms: float) -> pd.DataFrame:
    """The measured total shared over qnas's kernels in proportion to a roofline weight."""
    weights = [k.flops / _SHARE_FLOPS_PER_S + k.bytes / _SHARE_BYTES_PER_S + _SHARE_OVERHEAD_S
               for k in kernels]
    norm = sum(weights) or 1.0
    return pd.DataFrame({
        "name": [k.name for k in kernels],
        "op": [k.op for k in kernels],
        "flops": [float(k.flops) for k in kernels],
        "bytes": [float(k.bytes) for k in kernels],
        "ms": [total_ms * w / norm for w in weights],
        "ms_basis": [SHARE_BASIS] * len(kernels),
    }, columns=["name", "op", "flops", "bytes", "ms", "ms_basis"])
