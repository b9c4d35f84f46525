"""The one thread policy: how many torch intra-op threads a run uses, and a scope that sets
them and restores the previous count afterwards.

- Training (search, train-supernet, retrain): all cores of this process's share but one (one
  process), or cores / processes per node (under torchrun). On a small shared machine two
  OpenMP threads stall each other whenever one is descheduled (steps 10–50× slower); one thread
  per free core does not.
- Measuring latency (host-cpu tables, ``qnas latency --measure``): one thread, so numbers are
  reproducible on shared machines; ``QNAS_HOST_THREADS`` or an explicit count overrides it.
- Benchmarks (``qnas bench``): every core this process may use, unless told otherwise.

Results of a training run are bit-identical only for the same thread count.
"""
from __future__ import annotations

import contextlib
import os

from ..errors import QnasError

TRAINING, MEASURING, BENCHMARK = "training", "measuring", "benchmark"
PURPOSES = (TRAINING, MEASURING, BENCHMARK)
MEASURING_THREADS = 1
ENV_MEASURING_THREADS = "QNAS_HOST_THREADS"
# what ``--threads`` means everywhere, and its default by purpose (the CLI's help texts)
THREADS_HELP = "torch intra-op threads"
DEFAULT_TEXT = {TRAINING: "all cores but one (cores / processes under torchrun)",
                MEASURING: f"1, or ${ENV_MEASURING_THREADS}",
                BENCHMARK: "every core this process may use"}


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _check(threads, what: str = "threads") -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise QnasError(f"{what} must be a positive integer, got {threads!r}")
    return threads


def resolve_threads(threads: int | None = None, purpose: str = TRAINING) -> int:
    """The thread count for ``purpose`` (see the module doc): ``threads`` when given."""
    if threads is not None:
        return _check(threads)
    if purpose == MEASURING:
        value = os.environ.get(ENV_MEASURING_THREADS)
        if value is None:
            return MEASURING_THREADS
        try:
            return _check(int(value), ENV_MEASURING_THREADS)
        except ValueError:
            raise QnasError(f"{ENV_MEASURING_THREADS}={value!r} is not an integer; set it to a "
                            f"thread count such as 1 or 4") from None
    cores = available_cores()
    if purpose == BENCHMARK:
        return cores
    if purpose != TRAINING:
        raise ValueError(f"unknown thread purpose {purpose!r}; one of {PURPOSES}")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if local_world > 1:
        return max(1, cores // local_world)
    import torch

    return max(1, min(torch.get_num_threads(), cores - 1))


@contextlib.contextmanager
def torch_threads(threads: int | None = None, purpose: str = TRAINING):
    """Run the body with :func:`resolve_threads` intra-op threads, then restore the previous
    count. Yields the count in use."""
    import torch

    count = resolve_threads(threads, purpose)
    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield count
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
