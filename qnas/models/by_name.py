"""A model from its name: a qnas model (``quadranet_t``), a timm model (``timm/convnext_tiny``
or a plain timm name) or a torchvision constructor (``resnet18``,
``torchvision.models.mobilenet_v2``), with fresh weights."""
from __future__ import annotations

import functools
import warnings

import timm
import torch
from torch import nn

from ..errors import QnasError
from .quadranet import MODEL_NAMES

TORCHVISION_PREFIXES = ("torchvision.models.", "torchvision/", "tv/")


def _torchvision_names() -> list[str]:
    import torchvision  # heavy, and only for names that are not qnas/timm ones

    return sorted(torchvision.models.list_models(module=torchvision.models))


def model_from_name(name: str, num_classes: int = 1000, meta: bool = False) -> nn.Module:
    """The model called ``name`` (see the module doc) for ``num_classes`` classes.

    ``meta``: build on the meta device when the model allows it (shapes only; enough for the
    analytic latency backends, much faster for big models); measured backends need
    ``meta=False``.
    """
    spec = str(name).strip()
    bare = spec
    for prefix in TORCHVISION_PREFIXES:
        bare = bare.removeprefix(prefix)
    if spec.startswith("timm/"):
        build = functools.partial(timm.create_model, spec.removeprefix("timm/"), pretrained=False,
                                  num_classes=num_classes)
    elif spec in MODEL_NAMES:
        build = functools.partial(timm.create_model, spec, num_classes=num_classes)
    elif bare in _torchvision_names():
        import torchvision

        build = functools.partial(torchvision.models.get_model, bare, weights=None,
                                  num_classes=num_classes)
    elif spec in timm.list_models():
        build = functools.partial(timm.create_model, spec, pretrained=False,
                                  num_classes=num_classes)
    else:
        raise QnasError(f"unknown model '{spec}'; use a qnas model ({', '.join(MODEL_NAMES[:3])}, "
                        f"…), a torchvision constructor (resnet18, mobilenet_v2, …) or "
                        f"timm/<name>")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torchvision's googlenet/inception warn about init
        if meta:
            try:
                with torch.device("meta"):
                    return build()
            except Exception:  # noqa: BLE001 -- e.g. a constructor that reads a tensor value
                pass
        return build()
