"""The evaluator: data splits for the search, deterministic loaders, validation top-1.

The weights and α learn on DIFFERENT data: the dataset's training split is divided into a
weight part and an arch part (``arch_fraction``); the validation split is only for reporting
(top-1 of the current arg-max child each epoch, and of the derived child at the end). The
``alpha+eval`` derivation ranks its candidates on :func:`selection_split`, never on validation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler

from ..data import epoch_view, load_dataset, make_loader, split_dataset
from ..runtime import distributed as dist
from ..runtime.precision import worker_count

WEIGHT_DATA, ARCH_DATA, VAL_DATA = 0, 1, 2      # loader streams
SELECTION_EPOCH = 10**7        # first epoch index of the selection canvases: no training step's


@dataclass
class SearchData:
    """The three splits of a search."""

    name: str
    weight_train: Dataset
    arch_train: Dataset
    val: Dataset
    num_classes: int
    in_chans: int
    resolution: int


def search_data(spec: str, resolution: int = 32, seed: int = 0,
                arch_fraction: float = 0.2) -> SearchData:
    """Load ``spec`` and split its training part into weight / arch parts (deterministic)."""
    splits = load_dataset(spec, resolution=resolution, seed=seed)
    weight_train, arch_train = split_dataset(splits.train, arch_fraction, seed)
    return SearchData(splits.name, weight_train, arch_train, splits.val, splits.num_classes,
                      splits.in_chans, splits.resolution)


def loader_seed(seed: int, epoch: int, stream: int) -> int:
    """Seed of the loader of one epoch: a pure function of (seed, epoch, stream)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(stream), 7]).generate_state(1)[0])


class ShardSampler(torch.utils.data.Sampler):
    """Indices ``rank, rank + world, …`` of ``range(n)`` in order, without padding: evaluation
    shards that together cover the split exactly once."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def epoch_loader(dataset: Dataset, batch_size: int, seed: int, epoch: int, stream: int,
                 shuffle: bool = True, rank: int | None = None,
                 world: int | None = None, loading: dict | None = None) -> DataLoader:
    """A loader whose order depends only on (seed, epoch, stream): a resumed run sees the
    same batches as an uninterrupted one. Training loaders drop the last partial batch.

    Under torchrun each rank gets its shard (``rank``/``world`` default to the process group's):
    training loaders use a DistributedSampler over one seeded permutation, so the ranks' batches
    of step i together are exactly the single-process batch i of ``batch_size × world`` images;
    evaluation loaders (``shuffle=False``) shard without padding.

    ``loading``: what a run on a GPU adds (:func:`qnas.runtime.precision.loader_settings`:
    pinned memory, worker processes); the batches are the same with or without it.
    """
    dataset = epoch_view(dataset, epoch)
    rank = dist.rank() if rank is None else rank
    world = dist.world_size() if world is None else world
    order_seed = loader_seed(seed, epoch, stream)
    extra = {}
    if loading:
        extra = {"pin_memory": bool(loading.get("pin_memory")),
                 "workers": worker_count(dataset, loading.get("workers"))}
    if not shuffle:
        return make_loader(dataset, batch_size, shuffle=False, seed=order_seed,
                           sampler=ShardSampler(len(dataset), rank, world) if world > 1 else None,
                           **extra)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                 seed=order_seed, drop_last=False)
    drop_last = len(sampler) > batch_size
    return make_loader(dataset, batch_size, shuffle=False, seed=order_seed, drop_last=drop_last,
                       sampler=sampler, **extra)


def selection_split(data: SearchData, views: int = 4) -> Dataset:
    """What the ``alpha+eval`` derivation ranks children on: the arch split — for a procedural
    dataset (digit-pairs), ``views`` fresh draws of it that no training step saw, so that the
    ranking rests on ``views`` × as many images; never the validation split, which reports."""
    parts: list[Dataset] = []
    for view in range(views):
        part = epoch_view(data.arch_train, SELECTION_EPOCH + view)
        if part is data.arch_train:        # not procedural: every view is the same images
            return part
        parts.append(part)
    return ConcatDataset(parts)


def inherited_top1(supernet, ops: list[str], data: SearchData, evaluation: Dataset,
                   batch_size: int, seed: int) -> float:
    """Top-1 of one child with the supernet's weights on ``evaluation`` (its BatchNorm
    statistics, if any, re-estimated for that child on the weight split first). One process."""
    return 100.0 * float(inherited_correct(supernet, ops, data, evaluation, batch_size,
                                           seed).mean())


def inherited_correct(supernet, ops: list[str], data: SearchData, evaluation: Dataset,
                      batch_size: int, seed: int) -> np.ndarray:
    """Which images of ``evaluation`` (in order) one child gets right with the supernet's
    weights — what a paired test between two children needs (see :func:`inherited_top1`)."""
    child = supernet.child(ops)
    if has_batchnorm(child):
        recalibrate_batchnorm(child, epoch_loader(data.weight_train, batch_size, seed, 0,
                                                  WEIGHT_DATA, rank=0, world=1))
    return evaluate_correct(child, epoch_loader(evaluation, 256, seed, 0, VAL_DATA,
                                                shuffle=False, rank=0, world=1))


@torch.no_grad()
def evaluate_correct(model: nn.Module, loader: DataLoader) -> np.ndarray:
    """Per image of ``loader`` (in its order): is the top-1 prediction right? One process."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    right = [(model(images.to(device)).argmax(1).cpu() == labels).numpy()
             for images, labels in loader]
    model.train(was_training)
    return np.concatenate(right) if right else np.zeros(0, dtype=bool)


@torch.no_grad()
def evaluate_top1(model: nn.Module, loader: DataLoader, distributed: bool = False) -> float:
    """Top-1 accuracy in percent (eval mode). ``distributed``: the loader is this rank's shard
    and every rank calls this; the counts are summed over ranks."""
    was_training = model.training
    model.eval()
    correct = total = 0
    device = next(model.parameters()).device
    for images, labels in loader:
        logits = model(images.to(device))
        correct += (logits.argmax(1).cpu() == labels).sum().item()
        total += len(labels)
    model.train(was_training)
    if distributed:
        correct, total = dist.all_reduce_sum([correct, total])
    return 100.0 * correct / max(total, 1)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: DataLoader, max_batches: int = 20) -> None:
    """Re-estimate BatchNorm running statistics for ONE child (a supernet's running stats mix
    all paths): reset them and average over up to ``max_batches`` training batches."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None               # cumulative average
    model.train()
    device = next(model.parameters()).device
    for index, (images, _) in enumerate(loader):
        if index >= max_batches:
            break
        model(images.to(device))
    model.train(was_training)
