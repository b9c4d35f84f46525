"""Datasets: ``digits`` (embedded default), ``cifar10:PATH``, ``imagefolder:PATH``, ``synthetic``."""
from .datasets import (
    DATASET_FORMS,
    DatasetSplits,
    load_dataset,
    make_loader,
    split_dataset,
)

__all__ = ["DatasetSplits", "load_dataset", "make_loader", "split_dataset", "DATASET_FORMS"]
