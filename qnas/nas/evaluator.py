"""The evaluator: data splits for the search, deterministic loaders, validation top-1.

The weights and α learn on DIFFERENT data: the dataset's training split is divided into a
weight part and an arch part (``arch_fraction``); the validation split is only for reporting
(top-1 of the current arg-max child each epoch, and of the derived child at the end).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data import load_dataset, make_loader, split_dataset


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


def search_data(spec: str = "digits", resolution: int = 32, seed: int = 0,
                arch_fraction: float = 0.2) -> SearchData:
    """Load ``spec`` and split its training part into weight / arch parts (deterministic)."""
    splits = load_dataset(spec, resolution=resolution, seed=seed)
    weight_train, arch_train = split_dataset(splits.train, arch_fraction, seed)
    return SearchData(splits.name, weight_train, arch_train, splits.val, splits.num_classes,
                      splits.in_chans, splits.resolution)


def loader_seed(seed: int, epoch: int, stream: int) -> int:
    """Seed of the loader of one epoch: a pure function of (seed, epoch, stream)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(stream), 7]).generate_state(1)[0])


def epoch_loader(dataset: Dataset, batch_size: int, seed: int, epoch: int, stream: int,
                 shuffle: bool = True) -> DataLoader:
    """A loader whose order depends only on (seed, epoch, stream): a resumed run sees the
    same batches as an uninterrupted one. Training loaders drop the last partial batch."""
    drop_last = shuffle and len(dataset) > batch_size
    return make_loader(dataset, batch_size, shuffle=shuffle, seed=loader_seed(seed, epoch, stream),
                       drop_last=drop_last)


@torch.no_grad()
def evaluate_top1(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy in percent (eval mode)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    device = next(model.parameters()).device
    for images, labels in loader:
        logits = model(images.to(device))
        correct += (logits.argmax(1).cpu() == labels).sum().item()
        total += len(labels)
    model.train(was_training)
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
