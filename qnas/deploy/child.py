"""A best.json's child network: the supernet it comes from, its inherited weights, the
``child.pt`` file that carries it, and models named by a spec (a model name or a best.json).

A ``child.pt`` (written by :func:`qnas.deploy.export_child`) is a dict: ``format``
(:data:`CHILD_FORMAT`), ``format_version``, ``state_dict``, ``ops``, ``layers``, ``space``
(name, hash and the whole definition, so that no YAML is needed to rebuild it),
``num_classes``, ``input_shape``, ``resolution``, ``batchnorm`` and the ``best`` it came from.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..errors import QnasError
from ..models.by_name import model_from_name
from ..nas.best import BestArch, load_best
from ..nas.supernet import load_supernet
from ..space import SearchSpace, space_from_dict

CHILD_FORMAT = "qnas-child"
CHILD_FORMAT_VERSION = 1
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
    if not path.is_file():
        raise QnasError(f"the supernet checkpoint {path} named in {best.path} does not exist; "
                        f"export needs the search's run folder (best.json with its "
                        f"{Path(best.raw['supernet_checkpoint']).name}) — copy it back or "
                        f"search again")
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
    """The child of ``best`` (identity layers removed) with the supernet's weights of the
    chosen ops, for the data's number of classes; eval mode, CPU. BatchNorm statistics are the
    supernet's (see :func:`qnas.deploy.export.export_child` for the re-estimated ones)."""
    best = as_best(best, space)
    return best_supernet(best).child(best.ops).eval()


# --- the child.pt file ------------------------------------------------------------------------

def child_record(best: BestArch, child: nn.Module, num_classes: int, resolution: int,
                 batchnorm: str | None) -> dict:
    """What ``child.pt`` holds (see the module doc)."""
    return {
        "format": CHILD_FORMAT, "format_version": CHILD_FORMAT_VERSION,
        "qnas_version": __version__,
        "state_dict": {k: v.detach().clone() for k, v in child.state_dict().items()},
        "ops": list(best.ops),
        "layers": [{"index": slot.index, "name": slot.name, "op": op}
                   for slot, op in zip(best.space.layers, best.ops)],
        "space": {"name": best.space.name, "hash": best.space.hash,
                  "definition": best.space.raw},
        "num_classes": int(num_classes),
        "input_shape": [int(v) for v in best.input_shape],
        "resolution": int(resolution),
        "batchnorm": batchnorm,
        "best": {"path": str(best.path), "device": best.device,
                 "target_latency_ms": best.target_latency_ms,
                 "predicted_latency_ms": best.predicted_latency_ms,
                 "val_top1": best.val_top1, "seed": best.seed},
    }


def read_child(path: str | os.PathLike) -> dict:
    """The record of a ``child.pt`` written by :func:`qnas.deploy.export.export_child`
    (validated)."""
    path = Path(path)
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise QnasError(f"{path} does not exist; export a child with 'qnas export "
                        f"runs/<name>/best.json'") from None
    except Exception as err:  # noqa: BLE001 -- truncated, foreign or not a torch file
        raise QnasError(f"{path} is not a readable qnas child ({type(err).__name__}); "
                        f"export it again with 'qnas export'") from None
    if not isinstance(record, dict) or record.get("format") != CHILD_FORMAT:
        raise QnasError(f"{path} is not a qnas child (no \"format\": \"{CHILD_FORMAT}\"); "
                        f"export one with 'qnas export'")
    version = record.get("format_version")
    if not isinstance(version, int) or version > CHILD_FORMAT_VERSION:
        raise QnasError(f"{path} has child format version {version!r}, newer than this qnas "
                        f"({__version__}) reads ({CHILD_FORMAT_VERSION}); upgrade qnas")
    for key, kind in (("state_dict", dict), ("ops", list), ("space", dict),
                      ("num_classes", int)):
        if not isinstance(record.get(key), kind):
            raise QnasError(f"{path} is corrupt: field {key!r} is missing or has the wrong type")
    return record


def load_child(path: str | os.PathLike, **build_kwargs) -> nn.Module:
    """Rebuild the child network of a ``child.pt`` (eval mode, CPU), weights loaded.

    The space's definition travels inside the file, so no YAML is needed. ``build_kwargs``
    (e.g. ``drop_path_rate=0.1`` for retraining) go to :meth:`SearchSpace.build_child`.
    """
    record = read_child(path)
    space_info = record["space"]
    try:
        space = space_from_dict(space_info["definition"], source=f"{path} (embedded space)")
    except (KeyError, TypeError) as err:
        raise QnasError(f"{path} is corrupt: its space definition is unusable "
                        f"({type(err).__name__})") from None
    if space.hash != space_info.get("hash"):
        raise QnasError(f"{path} is corrupt: its embedded space hashes to {space.hash}, not "
                        f"the recorded {space_info.get('hash')}")
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
