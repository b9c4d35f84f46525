"""Datasets: ``digit-pairs`` (the embedded benchmark), ``digits``, ``cifar10:PATH``,
``imagefolder:PATH``, ``synthetic``."""
from .datasets import (DATASET_FORMS, DatasetSplits, epoch_view, load_dataset, make_loader,
                       split_dataset)

__all__ = ["DatasetSplits", "load_dataset", "make_loader", "split_dataset", "epoch_view",
           "DATASET_FORMS"]
