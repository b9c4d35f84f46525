"""How the benchmarks measure: bytes autograd saves for backward, the peak memory of a step,
and round-robin timing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import re
import statistics
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

SAVED_BYTES_RULE = "unique storages saved by autograd, parameters and buffers excluded"


# --- memory -----------------------------------------------------------------------------------

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


# --- time -------------------------------------------------------------------------------------

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
    return {name: quartiles[1] for name, quartiles in
            time_round_robin_quartiles(runs, repeats, warmup, device, progress).items()}


def time_round_robin_quartiles(runs: dict[str, Callable[[], object]], repeats: int, warmup: int,
                               device: str, progress=None) -> dict[str, tuple[float, ...]]:
    """(25th percentile, median, 75th percentile) seconds of each run, rounds as
    :func:`time_round_robin`'s: the spread for error bars."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(warmup + repeats):
        for name, run in runs.items():
            seconds = _timed(run, device)
            if round_index >= warmup:
                times[name].append(seconds)
            if progress is not None:
                progress.update(1)
    return {name: (float(np.percentile(values, 25)), statistics.median(values),
                   float(np.percentile(values, 75))) for name, values in times.items()}


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar over ``total`` runs (silent unless ``enabled``)."""
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, unit="run")


# --- inputs and tables -------------------------------------------------------------------------

def bench_input(config, channels: int) -> torch.Tensor:
    """The input of every measurement at width ``channels`` (seeded; NHWC-strided when
    ``config.channels_last``)."""
    generator = torch.Generator().manual_seed(config.seed + channels)
    x = torch.randn(config.batch, channels, config.resolution, config.resolution,
                    generator=generator)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(config.device)


def add_ratios(table: pd.DataFrame, columns: Sequence[str], ratios: dict[str, str],
               reference: str = "quadra", key: str = "kind") -> pd.DataFrame:
    """Add the ``ratios`` columns (figure column -> ratio column): each figure over the
    ``reference`` row's (``table[key] == reference``) at the same width (``channels``); the
    result has ``columns`` in that order."""
    table = table.copy()
    for figure, ratio in ratios.items():
        ref = table[table[key] == reference].set_index("channels")[figure]
        table[ratio] = table[figure] / table["channels"].map(ref)
    return table[list(columns)]
