"""``digit-pairs``: an embedded benchmark on which architectures differ.

On the bundled digits every child of the default space scores 96–98% after a short training,
so the accuracy term gives a search nothing to choose by. ``digit-pairs`` is built from the same
bundled images (no download, deterministic in the seed) but needs what the search space varies:

- **two digits** (each a bundled 8×8 digit scaled to half the canvas side) at random,
  non-overlapping places on a canvas of the training resolution; the label is a function of
  BOTH (:data:`LABELS`, default ``upper``: the class of the digit that stands higher) — so a
  network must find both digits wherever they are, recognise them and relate them: the pooled
  linear features of an all-identity child see two superposed digits and cannot tell which is
  which; depth and expansion (capacity) and kernel size (how early the two digits' evidence
  meets) matter;
- **clutter**: fragments of other digits (a quarter of a digit, at random places, dimmer)
  and pixel noise, so that "any ink anywhere" is not a shortcut;
- **fresh canvases every epoch**: the training split is procedural — epoch e draws new pairs,
  places and clutter from the same pool of digit images (:meth:`PairsTrain.for_epoch`), so a
  network cannot memorise a few thousand canvases (with a fixed set of 2,400 the deep children
  over-fit: 55% train, 14% validation top-1). Each epoch is as long as the training split;
- training and validation canvases are made from DISJOINT halves of the bundled digit images,
  so validation top-1 measures recognising unseen handwriting; the validation set is fixed.

Sizes keep a default search within minutes on 2 CPU cores: 2,400 training canvases an epoch and
600 validation ones. ``qnas bench data-spread`` measures how far apart the children of a space end
after the same short training.
"""
from __future__ import annotations

import functools
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

DIGIT_SCALE = 1 / 2          # a digit's side, as a share of the canvas
CLUTTER_PIECES = 3           # fragments of other digits per canvas
CLUTTER_INTENSITY = 0.6      # their brightness relative to a digit
NOISE_STD = 0.08
_TRY_BLOCK = 256            # placement tries drawn at once (1 in ~80 qualifies)
TRAIN_SIZE, VAL_SIZE = 2400, 600
TEST_SIZE = 20_000            # the test split (experiments' final scores): see digit_pairs_test
LABELS = {
    "upper": "the class of the upper digit (the other one is a distractor)",
    "max": "the larger of the two digits' classes",
    "sum": "(a + b) mod 10",
}


def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()                      # bundled with scikit-learn: no download
    return bunch.images.astype(np.float32) / 16.0, bunch.target.astype(np.int64)


def _scaled(images: np.ndarray, side: int) -> np.ndarray:
    tensor = torch.from_numpy(images).unsqueeze(1)
    return F.interpolate(tensor, size=(side, side), mode="bilinear",
                         align_corners=False).squeeze(1).clamp_(0, 1).numpy()


def _place_two(rng: np.random.Generator, resolution: int, side: int,
               tries: int = 1000) -> list[tuple[int, int]]:
    """Top-left corners of two side×side digits that neither overlap nor stand level (so that
    one of them is the upper one), uniform over the pairs that qualify.

    Rejection first (what every canvas so far was drawn with, so the benchmark stays the same);
    at half the canvas side about 1 draw in 80 qualifies, so 1,000 draws fail once in ~300,000
    canvases — a 96-epoch warm-up met it — and then the pair is drawn from all qualifying ones.

    The tries are drawn in blocks (a Generator's array draw gives the same numbers as that many
    scalar draws); after a hit the generator is rewound and moved on by exactly the draws up to
    the hit, so canvases and everything drawn after them are those of one try at a time —
    which spent most of a digit-pairs epoch's canvas time in 4 scalar draws per try.
    """
    limit = resolution - side
    start, done = rng.bit_generator.state, 0
    while done < tries:
        count = min(_TRY_BLOCK, tries - done)
        y0, x0, y1, x1 = rng.integers(0, limit + 1, size=4 * count).reshape(count, 4).T
        hits = np.flatnonzero(_apart(y0, x0, y1, x1, side))
        if len(hits):
            first = int(hits[0])
            rng.bit_generator.state = start
            rng.integers(0, limit + 1, size=4 * (done + first + 1))    # the tries up to the hit
            return [(int(y0[first]), int(x0[first])), (int(y1[first]), int(x1[first]))]
        done += count
    valid = _qualifying_pairs(resolution, side)
    if not len(valid):
        raise ValueError(f"no room for two {side}px digits on a {resolution}px canvas")
    y0, x0, y1, x1 = (int(v) for v in valid[rng.integers(len(valid))])
    return [(y0, x0), (y1, x1)]


def _apart(y0, x0, y1, x1, side: int):
    return ((abs(y0 - y1) >= side) | (abs(x0 - x1) >= side)) & (abs(y0 - y1) >= 2)


@functools.lru_cache(maxsize=8)
def _qualifying_pairs(resolution: int, side: int) -> np.ndarray:
    """Every (y0, x0, y1, x1) that :func:`_place_two` accepts, [n × 4]."""
    span = np.arange(max(resolution - side + 1, 0))
    grid = np.stack(np.meshgrid(span, span, span, span, indexing="ij"), -1).reshape(-1, 4)
    return grid[_apart(grid[:, 0], grid[:, 1], grid[:, 2], grid[:, 3], side)]


def _label(rule: str, a: int, b: int, corners) -> int:
    if rule == "upper":
        return a if corners[0][0] < corners[1][0] else b
    if rule == "max":
        return max(a, b)
    return (a + b) % 10


def make_canvases(digits: np.ndarray, labels: np.ndarray, count: int, resolution: int,
                  rng: np.random.Generator, rule: str = "upper",
                  layout: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``count`` canvases [count, resolution, resolution] from the digit images given, and
    their labels by ``rule`` (see :data:`LABELS`). ``layout``, when given, receives the two
    digits' classes and top-left corners of every canvas (``classes`` [count, 2], ``corners``
    [count, 2, 2])."""
    side = max(4, int(round(resolution * DIGIT_SCALE)))
    scaled = _scaled(digits, side)
    piece = max(2, side // 2)
    canvases = np.zeros((count, resolution, resolution), dtype=np.float32)
    targets = np.empty(count, dtype=np.int64)
    classes = np.empty((count, 2), dtype=np.int64)
    places = np.empty((count, 2, 2), dtype=np.int64)
    for n in range(count):
        a, b = rng.integers(0, len(digits), size=2)
        canvas = canvases[n]
        for _ in range(CLUTTER_PIECES):          # fragments first: the digits lie on top
            source = scaled[rng.integers(0, len(digits))]
            sy, sx = rng.integers(0, side - piece + 1, size=2)
            y, x = rng.integers(0, resolution - piece + 1, size=2)
            fragment = CLUTTER_INTENSITY * source[sy:sy + piece, sx:sx + piece]
            np.maximum(canvas[y:y + piece, x:x + piece], fragment,
                       out=canvas[y:y + piece, x:x + piece])
        corners = _place_two(rng, resolution, side)
        for index, (y, x) in zip((a, b), corners):
            np.maximum(canvas[y:y + side, x:x + side], scaled[index],
                       out=canvas[y:y + side, x:x + side])
        canvas += NOISE_STD * rng.standard_normal(canvas.shape).astype(np.float32)
        targets[n] = _label(rule, int(labels[a]), int(labels[b]), corners)
        classes[n], places[n] = (labels[a], labels[b]), corners
    if layout is not None:
        layout.update(classes=classes, corners=places)
    return canvases, targets


class PairsTrain(Dataset):
    """The training split: :meth:`for_epoch` gives epoch e's canvases (fresh every epoch,
    deterministic in (seed, e)); indexing the dataset itself gives epoch 0's."""

    def __init__(self, digits: np.ndarray, labels: np.ndarray, size: int, resolution: int,
                 seed: int, rule: str, normalise: tuple[float, float]):
        self.digits, self.labels, self.size = digits, labels, size
        self.resolution, self.seed, self.rule = resolution, seed, rule
        self.mean, self.std = normalise
        self._cache: OrderedDict[int, TensorDataset] = OrderedDict()

    def for_epoch(self, epoch: int) -> TensorDataset:
        epoch = int(epoch)
        if epoch not in self._cache:
            rng = np.random.default_rng([self.seed, 73, epoch])
            x, y = make_canvases(self.digits, self.labels, self.size, self.resolution, rng,
                                 self.rule)
            self._cache[epoch] = TensorDataset(_tensor(x, self.mean, self.std),
                                               torch.from_numpy(y))
            while len(self._cache) > 4:
                self._cache.popitem(last=False)
        self._cache.move_to_end(epoch)
        return self._cache[epoch]

    def reseeded(self, seed: int) -> "PairsTrain":
        """The same split (digit pool, normalisation) drawing its canvases from ``seed``."""
        other = PairsTrain(self.digits, self.labels, self.size, self.resolution, seed,
                           self.rule, (self.mean, self.std))
        other.digit_indices = getattr(self, "digit_indices", None)
        return other

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):
        return self.for_epoch(0)[index]


def _tensor(canvases: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """Normalised 3-channel images (the one channel repeated as a view)."""
    x = (torch.from_numpy(canvases).unsqueeze(1) - mean) / std
    return x.expand(-1, 3, -1, -1)


def _pools(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Which of the ``count`` bundled digit images the training split draws from, and which
    the held-out (validation and test) canvases do: disjoint halves, drawn from ``seed``."""
    order = np.random.default_rng([seed, 71]).permutation(count)
    half = count // 2
    return order[:half], order[half:]


def _normalisation(images: np.ndarray, labels: np.ndarray, train_pool: np.ndarray,
                   resolution: int, seed: int, rule: str) -> tuple[float, float]:
    """One normalisation for every split, from a sample of training canvases."""
    sample, _ = make_canvases(images[train_pool], labels[train_pool], 256, resolution,
                              np.random.default_rng([seed, 74]), rule)
    return float(sample.mean()), float(sample.std())


def digit_pairs(resolution: int, seed: int, rule: str = "upper", train_size: int = TRAIN_SIZE,
                val_size: int = VAL_SIZE) -> tuple[PairsTrain, TensorDataset]:
    """The training split (fresh canvases each epoch) and the fixed validation split, from
    disjoint halves of the bundled digit images."""
    if rule not in LABELS:
        raise ValueError(f"unknown digit-pairs label {rule!r}; use one of {', '.join(LABELS)}")
    images, labels = _digit_images()
    train_pool, val_pool = _pools(seed, len(labels))
    val_x, val_y = make_canvases(images[val_pool], labels[val_pool], val_size, resolution,
                                 np.random.default_rng([seed, 72]), rule)
    mean, std = _normalisation(images, labels, train_pool, resolution, seed, rule)
    train = PairsTrain(images[train_pool], labels[train_pool], train_size, resolution, seed,
                       rule, (mean, std))
    val = TensorDataset(_tensor(val_x, mean, std), torch.from_numpy(val_y))
    train.digit_indices, val.digit_indices = train_pool, val_pool   # which bundled images
    return train, val


def digit_pairs_test(resolution: int, seed: int, rule: str = "upper",
                     size: int = TEST_SIZE) -> TensorDataset:
    """A test split of ``size`` canvases: the validation split's held-out handwriting (the
    training split never sees it, and a search ranks its children on training handwriting
    only), new canvases from a stream of their own, the same normalisation.

    Why a test split beside the validation one: two seeds of one child disagree on about 5% of
    the canvases, so on 3,000 validation canvases their top-1 differs by ~0.4 points from which
    canvases happen to be drawn alone — as much as the children of one latency band differ. A
    final score on many more canvases shrinks that part of the noise (what remains is training
    noise), and keeps the canvases a run watched during training out of the claim.
    """
    if rule not in LABELS:
        raise ValueError(f"unknown digit-pairs label {rule!r}; use one of {', '.join(LABELS)}")
    images, labels = _digit_images()
    train_pool, held_out = _pools(seed, len(labels))
    mean, std = _normalisation(images, labels, train_pool, resolution, seed, rule)
    test_x, test_y = make_canvases(images[held_out], labels[held_out], size, resolution,
                                   np.random.default_rng([seed, 75]), rule)
    test = TensorDataset(_tensor(test_x, mean, std), torch.from_numpy(test_y))
    test.digit_indices = held_out
    return test
