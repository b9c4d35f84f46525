"""Training augmentation for the in-memory (tensor) datasets: random translation (pad + random
crop, the CIFAR recipe) and, where it makes sense, horizontal flips.

The random numbers come from a ``torch.Generator`` the caller seeds (e.g. from the seed and the
epoch), never from the global RNG, so a resumed run augments exactly as an uninterrupted one.
ImageFolder datasets carry their own torchvision transforms and do not use this.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# datasets whose images may be mirrored (digits may not: a mirrored 2 or 7 is not a digit)
FLIP_DATASETS = ("cifar10", "synthetic")


def default_padding(resolution: int) -> int:
    """Translation range: 1/8 of the side (4 pixels at 32, the CIFAR recipe)."""
    return max(1, resolution // 8)


def random_shift_flip(images: torch.Tensor, generator: torch.Generator, padding: int,
                      flip: bool = False) -> torch.Tensor:
    """Shift every image of the N×C×H×W batch by up to ``padding`` pixels (edges replicated)
    and, with ``flip``, mirror about half of them. Returns a new tensor."""
    n, _, height, width = images.shape
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding), mode="replicate")
        offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator).tolist()
        images = torch.stack([padded[i, :, dy:dy + height, dx:dx + width]
                              for i, (dy, dx) in enumerate(offsets)])
    if flip:
        mirror = torch.rand(n, generator=generator) < 0.5
        images = torch.where(mirror.view(-1, 1, 1, 1), images.flip(-1), images)
    return images
