"""torch.distributed for the search and retraining: one process per device under ``torchrun``.

``torchrun --nproc_per_node=N -m qnas search ...`` starts N copies; :func:`init` joins them into
one process group (gloo on CPU, NCCL when every process has a GPU) from torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` …). Without torchrun everything here is a no-op for a
world of one, so the same code runs in a notebook.

Rules the search follows:
- every rank draws the same paths (the per-step generators of :mod:`.proxyless` are seeded by
  (seed, step), not by rank), so the same weights are used everywhere;
- weight gradients are averaged by DistributedDataParallel, α's by :func:`all_reduce_mean` on the
  gradient the strategy forms itself (NNI's lesson: no op inside a custom autograd function);
- only rank 0 writes files or shows progress (:func:`is_main`);
- things computed once (the latency table, a checkpoint read from disk) are broadcast from rank 0
  (:func:`broadcast_object`).
"""
from __future__ import annotations

import datetime
import os
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..errors import QnasError


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(timeout_minutes: float = 30.0, accelerator: str = "auto") -> bool:
    """Join torchrun's process group (once); True when running distributed.

    The backend is NCCL when CUDA is available to every process (and ``accelerator`` is not
    ``"cpu"``), gloo otherwise. Each process uses the GPU ``LOCAL_RANK`` when there is one.
    """
    if is_initialized():
        return True
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return False
    if not dist.is_available():
        raise QnasError("this torch build has no torch.distributed; run without torchrun")
    # DDP warns when a 1×1 conv's weight gradient comes back with channels-last strides: the
    # dims involved have size 1, the layouts hold the same numbers; nothing to act on
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    from .accelerator import resolve_accelerator

    backend = "nccl" if resolve_accelerator(accelerator) == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    except Exception as err:  # noqa: BLE001 -- rendezvous errors carry long messages
        raise QnasError(f"could not join the torchrun process group ({backend}): "
                        f"{' '.join(str(err).split())[:200]}; check --nnodes/--rdzv-endpoint")
    return True


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Only this process writes files and shows progress."""
    return rank() == 0


def device() -> torch.device:
    """The device this process trains on (its GPU under NCCL, else the CPU)."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (pickled)."""
    if not is_initialized():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=device())
    return box[0]


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over ranks, in place (a no-op for a world of one)."""
    if is_initialized():
        work = tensor.to(device())
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        work /= world_size()
        if work is not tensor:
            tensor.copy_(work)
    return tensor


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sums over ranks of a few numbers (counts for top-1, loss sums)."""
    if not is_initialized():
        return list(values)
    work = torch.tensor(values, dtype=torch.float64, device=device())
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.cpu().tolist()


def training_device(accelerator: str = "auto") -> torch.device:
    """Where a run trains: this rank's GPU under torchrun + NCCL; else by ``accelerator``
    (:mod:`.accelerator`): auto = the GPU when one is visible, else the CPU."""
    if is_initialized():
        return device()
    from .accelerator import resolve_accelerator

    return torch.device(resolve_accelerator(accelerator))


def wrap(module: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``module`` in DistributedDataParallel when running distributed (it averages the weight
    gradients and starts every rank from rank 0's weights), else ``module`` itself.

    ``find_unused_parameters``: a supernet runs one path per step, so the other candidates'
    parameters get no gradient (on every rank alike)."""
    if world_size() <= 1:
        return module
    where = next(module.parameters()).device
    return DistributedDataParallel(module, find_unused_parameters=find_unused_parameters,
                                   device_ids=[where] if where.type == "cuda" else None)
