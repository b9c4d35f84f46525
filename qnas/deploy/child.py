"""A best.json's child network: its inherited weights (``child.pt`` next to best.json, or the
supernet checkpoint of an older search), the ``child.pt`` file that carries it, and models
named by a spec (a model name or a best.json).

A ``child.pt`` — written by ``qnas search`` next to best.json and by
:func:`qnas.deploy.export_child` into ``export/`` — is a dict: ``format``
(:data:`CHILD_FORMAT`), ``format_version``, ``state_dict``, ``ops``, ``layers``, ``space``
(name, hash and the whole definition, so that no YAML is needed to rebuild it),
``num_classes``, ``input_shape``, ``resolution``, ``batchnorm`` and the ``best`` it came from
(the format is defined once, in :mod:`qnas.nas.best`).
"""
from __future__ import annotations

import os

from torch import nn

from ..errors import QnasError
from ..models.by_name import model_from_name
from ..nas.best import (
    CHILD_FORMAT,
    CHILD_FORMAT_VERSION,
    BestArch,
    child_payload,
    child_space,
    load_best,
    read_child,
)
from ..nas.supernet import load_supernet
from ..space import SearchSpace

__all__ = [
    "CARD_NAME",
    "CHILD_FORMAT",
    "CHILD_FORMAT_VERSION",
    "FILE_NAMES",
    "FORMATS",
    "as_best",
    "best_resolution",
    "best_supernet",
    "child_record",
    "inherited_child",
    "load_child",
    "model_from_spec",
    "read_child",
]
# the files of an export folder
FORMATS = ("pt", "onnx", "torchscript")
FILE_NAMES = {"pt": "child.pt", "onnx": "child.onnx", "torchscript": "child.torchscript.pt"}
CARD_NAME = "MODEL_CARD.md"


# --- the child of a best.json -----------------------------------------------------------------

def as_best(best: str | os.PathLike | BestArch,
            space: SearchSpace | str | os.PathLike | None = None) -> BestArch:
    """``best`` loaded (:func:`qnas.nas.best.load_best`) unless it already is a BestArch."""
    return best if isinstance(best, BestArch) else load_best(best, space=space)


def best_resolution(best: BestArch) -> int:
    """The resolution the search trained and evaluated at (best.json's evaluation), or the
    deployment shape's when it records none."""
    evaluation = best.raw.get("evaluation")
    value = evaluation.get("resolution") if isinstance(evaluation, dict) else None
    if value is None:
        return int(best.input_shape[-1])
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise QnasError(f"{best.path} is corrupt: evaluation.resolution must be a positive "
                        f"integer, got {value!r}")
    return value


def best_supernet(best: BestArch):
    """The supernet checkpoint next to best.json, loaded (refused, one line, when it is missing
    or does not fit best.json)."""
    path = best.supernet_checkpoint
    if not best.record.supernet_checkpoint or not path.is_file():
        child = f"{best.child_file} nor " if best.child_file is not None else ""
        raise QnasError(f"neither {child}the supernet checkpoint "
                        f"{path if best.record.supernet_checkpoint else '(none)'} named in "
                        f"{best.path} exists: the child's inherited weights are gone; copy "
                        f"them back next to best.json, or search again")
    supernet = load_supernet(path, space=best.space)
    evaluation = best.raw.get("evaluation")
    recorded = evaluation.get("num_classes") if isinstance(evaluation, dict) else None
    if recorded is not None and recorded != supernet.num_classes:
        raise QnasError(f"{best.path} records {recorded} classes but its supernet checkpoint "
                        f"{path} has {supernet.num_classes}; the run folder is inconsistent — "
                        f"search again")
    return supernet


def inherited_child(best: str | os.PathLike | BestArch,
                    space: SearchSpace | str | os.PathLike | None = None) -> nn.Module:
    """The child of ``best`` (identity layers removed) with the weights it inherited from the
    supernet, for the data's number of classes; eval mode, CPU — from ``child.pt`` next to
    best.json, else from the supernet checkpoint (then with the supernet's BatchNorm
    statistics; :func:`qnas.deploy.export.export_child` re-estimates them)."""
    best = as_best(best, space)
    state, num_classes, _ = best.inherited_state()
    child = best.build_child(num_classes=num_classes)
    child.load_state_dict(state, strict=True)
    return child.eval()


# --- the child.pt file ------------------------------------------------------------------------

def child_record(best: BestArch, child: nn.Module, num_classes: int, resolution: int,
                 batchnorm: str | None) -> dict:
    """What ``child.pt`` holds (see the module doc)."""
    return child_payload(
        best.space, best.ops, child.state_dict(), num_classes, best.input_shape, resolution,
        batchnorm, best={"path": str(best.path), "device": best.device,
                         "target_latency_ms": best.target_latency_ms,
                         "predicted_latency_ms": best.predicted_latency_ms,
                         "val_top1": best.val_top1, "seed": best.seed})


def load_child(path: str | os.PathLike, **build_kwargs) -> nn.Module:
    """Rebuild the child network of a ``child.pt`` (eval mode, CPU), weights loaded.

    The space's definition travels inside the file, so no YAML is needed. ``build_kwargs``
    (e.g. ``drop_path_rate=0.1`` for retraining) go to :meth:`SearchSpace.build_child`.
    """
    record = read_child(path)
    space = child_space(record, path)
    child = space.build_child(record["ops"], num_classes=record["num_classes"], **build_kwargs)
    try:
        child.load_state_dict(record["state_dict"], strict=True)
    except RuntimeError as err:
        raise QnasError(f"{path} is corrupt: its weights do not fit its architecture "
                        f"({str(err).splitlines()[0]})") from None
    return child.eval()


# --- models by spec ---------------------------------------------------------------------------

def model_from_spec(spec: str | os.PathLike, num_classes: int = 1000,
                    meta: bool = False) -> nn.Module:
    """A model from a spec: a ``best.json`` from ``qnas search`` (its child, fresh weights, for
    ``num_classes`` classes) or a model name (:func:`qnas.models.by_name.model_from_name`:
    ``quadranet_t``, ``timm/convnext_tiny``, ``resnet18``, …).

    ``meta``: build on the meta device when the model allows it (shapes only; enough for the
    analytic latency backends); measured backends need ``meta=False``.
    """
    spec = str(spec).strip()
    if spec.endswith(".json"):
        return load_best(spec).build_child(num_classes=num_classes)
    return model_from_name(spec, num_classes=num_classes, meta=meta)
