"""Datasets by spec string, all local (no downloads), with deterministic splits from the seed.

``digits``            scikit-learn's bundled handwritten digits (1,797 8×8 images, 10 classes),
                      upsampled to the training resolution and repeated to 3 channels.
``cifar10:PATH``      the standard CIFAR-10 python-pickle batches (data_batch_1..5, test_batch).
``imagefolder:PATH``  torchvision ImageFolder with PATH/train and PATH/val.
``digit-pairs``       two bundled digits on a cluttered canvas, label: the upper digit; the
                      embedded benchmark on which architectures differ (:mod:`.pairs`).
                      Options after a colon, comma-separated: a label rule (``upper``,
                      ``max``, ``sum``), ``val=N`` validation canvases (default 600) and
                      ``split=S`` to fix the benchmark (which handwriting is held out, the
                      validation canvases) whatever the run's seed — e.g.
                      ``digit-pairs:val=3000,split=0``. Without ``split`` the run's seed
                      draws the split, as for every other dataset.
``synthetic``         random class-dependent patterns (for tests).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ..errors import QnasError
from .pairs import LABELS, VAL_SIZE, digit_pairs, digit_pairs_test

DATASET_FORMS = "digit-pairs, digits, synthetic, cifar10:PATH, imagefolder:PATH"


@dataclass
class DatasetSplits:
    """A training and a validation split plus what a model needs to know about them."""

    name: str
    train: Dataset
    val: Dataset
    num_classes: int
    in_chans: int
    resolution: int


def _normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def _resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear",
                         align_corners=False)


def _split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _digits(resolution: int, seed: int, val_fraction: float) -> DatasetSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()  # bundled with scikit-learn: no download
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = _resize(images, resolution).repeat(1, 3, 1, 1)
    images = _normalise(images, images.mean((0, 2, 3)), images.std((0, 2, 3)))
    labels = torch.tensor(bunch.target, dtype=torch.long)
    train_idx, val_idx = _split_indices(len(labels), val_fraction, seed)
    return DatasetSplits("digits", TensorDataset(images[train_idx], labels[train_idx]),
                         TensorDataset(images[val_idx], labels[val_idx]), 10, 3, resolution)


def _synthetic(resolution: int, seed: int, val_fraction: float, size: int = 256,
               num_classes: int = 4) -> DatasetSplits:
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(num_classes, 3, 8, 8, generator=generator)
    labels = torch.randint(0, num_classes, (size,), generator=generator)
    images = prototypes[labels] + 0.5 * torch.randn(size, 3, 8, 8, generator=generator)
    images = _resize(images, resolution)
    train_idx, val_idx = _split_indices(size, val_fraction, seed)
    return DatasetSplits("synthetic", TensorDataset(images[train_idx], labels[train_idx]),
                         TensorDataset(images[val_idx], labels[val_idx]), num_classes, 3,
                         resolution)


def _cifar10(path: Path, resolution: int) -> DatasetSplits:
    root = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
    train_files = [root / f"data_batch_{i}" for i in range(1, 6)]
    present = [f for f in train_files if f.exists()]
    if not present or not (root / "test_batch").exists():
        raise QnasError(f"no CIFAR-10 batches in {path}: expected data_batch_1..5 and test_batch "
                        f"(the python-pickle version), e.g. --data cifar10:/data/cifar-10-batches-py")

    def read(files):
        xs, ys = [], []
        for file in files:
            try:
                with open(file, "rb") as handle:
                    batch = pickle.load(handle, encoding="latin1")
                xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.extend(batch["labels"])
            except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as err:
                raise QnasError(f"{file} is not a CIFAR-10 python batch ({err})") from None
        return torch.tensor(np.concatenate(xs)).float() / 255.0, torch.tensor(ys)

    (train_x, train_y), (val_x, val_y) = read(present), read([root / "test_batch"])
    mean, std = train_x.mean((0, 2, 3)), train_x.std((0, 2, 3))
    train_x = _normalise(_resize(train_x, resolution), mean, std)
    val_x = _normalise(_resize(val_x, resolution), mean, std)
    return DatasetSplits("cifar10", TensorDataset(train_x, train_y), TensorDataset(val_x, val_y),
                         10, 3, resolution)


def _imagefolder(path: Path, resolution: int) -> DatasetSplits:
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from torchvision import datasets, transforms

    for split in ("train", "val"):
        if not (path / split).is_dir():
            raise QnasError(f"imagefolder dataset {path} needs {split}/ with one folder per class")
    normalise = transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(resolution),
                                   transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                   normalise])
    val_tf = transforms.Compose([transforms.Resize(int(resolution / 0.875)),
                                 transforms.CenterCrop(resolution), transforms.ToTensor(),
                                 normalise])
    train = datasets.ImageFolder(path / "train", transform=train_tf)
    val = datasets.ImageFolder(path / "val", transform=val_tf)
    if train.classes != val.classes:
        raise QnasError(f"imagefolder {path}: train/ and val/ have different classes")
    return DatasetSplits("imagefolder", train, val, len(train.classes), 3, resolution)


def check_spec(spec: str) -> tuple[str, str]:
    """``(name, argument)`` of a dataset spec (see the module doc) — checked without loading
    anything: an unknown name, a label rule digit-pairs does not know, a missing path."""
    if not isinstance(spec, str) or not spec.strip():
        raise QnasError(f"a dataset spec is needed ({DATASET_FORMS}), got {spec!r}")
    name, _, arg = spec.partition(":")
    name, arg = name.strip().lower(), arg.strip()
    if name in ("digits", "synthetic") and not arg:
        return name, arg
    if name == "digit-pairs":
        return name, _pairs_arg(pairs_options(arg))
    if name in ("cifar10", "imagefolder"):
        if not arg:
            raise QnasError(f"--data {name} needs a path: {name}:PATH")
        if not Path(arg).expanduser().is_dir():
            raise QnasError(f"dataset path {Path(arg).expanduser()} does not exist or is not a "
                            f"folder")
        return name, arg
    raise QnasError(f"unknown dataset {spec!r}; use one of: {DATASET_FORMS}")


def pairs_options(arg: str) -> dict:
    """The options of a ``digit-pairs:…`` spec: ``{"rule", "val", "split"}`` (``split`` None:
    the run's seed). Bare ``upper``/``max``/``sum`` is the rule; ``val=N`` and ``split=S``
    are integers."""
    options: dict = {"rule": "upper", "val": None, "split": None}
    forms = f"digit-pairs[:{'|'.join(LABELS)}][,val=N][,split=S]"
    for token in filter(None, (part.strip().lower() for part in arg.split(","))):
        key, equals, value = token.partition("=")
        if not equals:
            if key not in LABELS:
                raise QnasError(f"unknown digit-pairs label {key!r}; use {forms}")
            options["rule"] = key
            continue
        if key not in ("val", "split") or not value.isdigit():
            raise QnasError(f"digit-pairs option {token!r} not understood; use {forms}")
        number = int(value)
        if key == "val" and number < 10:
            raise QnasError(f"digit-pairs val={number}: at least 10 validation canvases")
        options[key] = number
    return options


def _pairs_arg(options: dict) -> str:
    """The canonical spelling of digit-pairs options (defaults left out)."""
    parts = [options["rule"]] if options["rule"] != "upper" else []
    parts += [f"{key}={options[key]}" for key in ("val", "split") if options[key] is not None]
    return ",".join(parts)


def load_dataset(spec: str = "digit-pairs", resolution: int = 32, seed: int = 0,
                 val_fraction: float = 0.2) -> DatasetSplits:
    """Load a dataset by spec (see module doc). Splits are deterministic in ``seed``."""
    if not isinstance(resolution, int) or resolution < 8:
        raise QnasError(f"resolution must be an integer ≥ 8, got {resolution!r}")
    name, arg = check_spec(spec)
    if name == "digits":
        return _digits(resolution, seed, val_fraction)
    if name == "synthetic":
        return _synthetic(resolution, seed, val_fraction)
    if name == "digit-pairs":
        options = pairs_options(arg)
        split = seed if options["split"] is None else options["split"]
        train, val = digit_pairs(resolution, split, options["rule"],
                                 val_size=options["val"] or VAL_SIZE)
        if options["split"] is not None and seed != split:
            train = train.reseeded(seed)      # fresh training canvases still follow the run's seed
        return DatasetSplits("digit-pairs" + (f":{arg}" if arg else ""), train, val, 10, 3,
                             resolution)
    path = Path(arg).expanduser()
    return _cifar10(path, resolution) if name == "cifar10" else _imagefolder(path, resolution)


def load_test_split(spec: str, resolution: int, seed: int, size: int) -> Dataset:
    """A test split of ``size`` samples beside the splits of :func:`load_dataset` — for a final
    score that no run watched while it trained. Only ``digit-pairs`` can draw one (new canvases
    of its held-out handwriting, :func:`.pairs.digit_pairs_test`); the other datasets have no
    third split to give."""
    name, arg = check_spec(spec)
    if name != "digit-pairs":
        raise QnasError(f"a test split can be drawn only from digit-pairs (new canvases of its "
                        f"held-out handwriting); {spec!r} has none — leave the test size out")
    if isinstance(size, bool) or not isinstance(size, int) or size < 10:
        raise QnasError(f"a test split needs at least 10 samples, got {size!r}")
    options = pairs_options(arg)
    split = seed if options["split"] is None else options["split"]
    return digit_pairs_test(resolution, split, options["rule"], size)


def epoch_view(dataset: Dataset, epoch: int) -> Dataset:
    """What ``dataset`` holds in ``epoch``: a procedural training split (one with
    ``for_epoch``, e.g. digit-pairs) draws fresh samples each epoch, also through a
    :class:`Subset`; every other dataset is the same in every epoch."""
    if isinstance(dataset, Subset) and hasattr(dataset.dataset, "for_epoch"):
        return Subset(dataset.dataset.for_epoch(epoch), dataset.indices)
    if hasattr(dataset, "for_epoch"):
        return dataset.for_epoch(epoch)
    return dataset


def split_dataset(dataset: Dataset, fraction: float, seed: int) -> tuple[Subset, Subset]:
    """Split ``dataset`` deterministically into (1 - fraction, fraction) parts."""
    keep, held_out = _split_indices(len(dataset), fraction, seed)
    return Subset(dataset, keep.tolist()), Subset(dataset, held_out.tolist())


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0,
                drop_last: bool = False, sampler=None, workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """A DataLoader whose order is a function of ``seed`` (and the epoch, via
    ``loader.generator`` reseeding or a DistributedSampler's ``set_epoch``).

    Single-process by default (the CPU path). ``workers`` > 0 reads in that many processes
    (their seeds come from the seeded generator, the order from the sampler in this process:
    the same batches); ``pin_memory`` pins each batch for an asynchronous copy to a GPU."""
    generator = torch.Generator().manual_seed(seed)
    workers = int(workers or 0)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, drop_last=drop_last, generator=generator,
                      num_workers=workers, pin_memory=bool(pin_memory),
                      persistent_workers=False)
