"""Datasets: ``digit-pairs`` (the embedded benchmark), ``digits``, ``cifar10:PATH``,
``imagefolder:PATH``, ``synthetic``."""
from .datasets import (
    DATASET_FORMS,
    DatasetSplits,
    check_spec,
    epoch_view,
    load_dataset,
    load_test_split,
    make_loader,
    split_dataset,
)

__all__ = ["DatasetSplits", "load_dataset", "load_test_split", "make_loader", "split_dataset",
           "epoch_view", "check_spec", "DATASET_FORMS"]
