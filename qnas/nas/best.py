"""``best.json``: the contract between ``qnas search`` and ``export`` / ``retrain``.

Schema (version 1)::

    schema              "qnas.best"
    schema_version      1
    qnas_version        the qnas that wrote it
    space               {name, hash, source}
    ops                 the chosen op per searchable layer (space order)
    layers              [{index, name, op}] the same, with layer names
    device              the target device
    input_shape         the deployment shape latencies are predicted at (N, C, H, W)
    target_latency_ms   the budget
    predicted_latency_ms  the device's predictor on the whole child at input_shape
    lut_latency_ms      F + Σ LUT[l, op_l] (what the hard constraint was checked on)
    predictor           {source, version, known_error}
    other_devices       {device: {latency_ms, source, version, known_error} or {error}}
    val_top1            top-1 (%) of the child with inherited supernet weights
    evaluation          {dataset, resolution, num_classes, split}
    supernet_checkpoint path of the supernet checkpoint, relative to best.json's folder
    seed, search, derivation, created

:func:`load_best` refuses a corrupt file, a newer schema and a best.json of another space.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import QnasError
from ..runtime.files import write_text_atomic
from ..space import SearchSpace, load_space

SCHEMA = "qnas.best"
SCHEMA_VERSION = 1
_REQUIRED = {"schema": str, "schema_version": int, "space": dict, "ops": list, "device": str,
             "input_shape": list, "target_latency_ms": (int, float),
             "predicted_latency_ms": (int, float), "predictor": dict, "other_devices": dict,
             "val_top1": (int, float), "supernet_checkpoint": str, "seed": int,
             "qnas_version": str}


@dataclass
class BestArch:
    """A loaded best.json."""

    path: Path
    space: SearchSpace
    ops: list[str]
    device: str
    input_shape: tuple[int, ...]
    target_latency_ms: float
    predicted_latency_ms: float
    val_top1: float
    seed: int
    raw: dict = field(repr=False)

    @property
    def supernet_checkpoint(self) -> Path:
        """The supernet checkpoint, resolved against best.json's folder."""
        path = Path(self.raw["supernet_checkpoint"])
        return path if path.is_absolute() else self.path.parent / path

    def build_child(self, num_classes: int | None = None, **kwargs):
        """The child network (fresh weights); identity layers dropped."""
        return self.space.build_child(self.ops, num_classes=num_classes, **kwargs)


def best_record(record: dict) -> dict:
    """``record`` (see module doc) with the schema, its version and the qnas version first."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "qnas_version": __version__,
            **record}


def write_best(path: str | Path, record: dict) -> Path:
    """Write :func:`best_record` of ``record`` atomically."""
    record = best_record(record)
    path = Path(path)
    write_text_atomic(path, json.dumps(record, indent=2, sort_keys=False) + "\n")
    return path


def load_best(path: str | Path, space: SearchSpace | str | Path | None = None) -> BestArch:
    """Read a best.json; refuse (QnasError, one line) a corrupt file, a newer schema version,
    or one made for another space (``space`` given, or the recorded space's YAML changed)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise QnasError(f"{path} does not exist; pass the best.json written by 'qnas search'") \
            from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise QnasError(f"cannot read {path} as a best.json ({type(err).__name__})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise QnasError(f"{path} is corrupt: not valid JSON ({err.msg} at line {err.lineno}); "
                        f"re-run 'qnas search' to write it again") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise QnasError(f"{path} is not a qnas best.json (no \"schema\": \"{SCHEMA}\")")
    version = raw.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise QnasError(f"{path} has schema version {version}, newer than this qnas "
                        f"({__version__}) reads ({SCHEMA_VERSION}); upgrade qnas")
    for key, kind in _REQUIRED.items():
        if key not in raw or not isinstance(raw[key], kind) or isinstance(raw[key], bool):
            raise QnasError(f"{path} is corrupt: field {key!r} is missing or has the wrong type")
    if not all(isinstance(op, str) for op in raw["ops"]) or not raw["ops"]:
        raise QnasError(f"{path} is corrupt: 'ops' must be a non-empty list of op names")
    for key in ("target_latency_ms", "predicted_latency_ms", "val_top1"):
        if not math.isfinite(raw[key]):
            raise QnasError(f"{path} is corrupt: {key!r} is not a finite number")
    recorded = raw["space"]
    if not isinstance(recorded.get("name"), str) or not isinstance(recorded.get("hash"), str):
        raise QnasError(f"{path} is corrupt: 'space' needs a name and a hash")

    if space is None:
        space = _recorded_space(recorded, path)
    elif not isinstance(space, SearchSpace):
        space = load_space(space)
    if space.hash != recorded["hash"]:
        raise QnasError(f"{path} was made for space '{recorded['name']}' (hash "
                        f"{recorded['hash']}), not for space '{space.name}' (hash {space.hash}); "
                        f"use the space it was searched in, or search again")
    ops = space.check_ops(raw["ops"])
    return BestArch(path=path, space=space, ops=ops, device=raw["device"],
                    input_shape=tuple(int(v) for v in raw["input_shape"]),
                    target_latency_ms=float(raw["target_latency_ms"]),
                    predicted_latency_ms=float(raw["predicted_latency_ms"]),
                    val_top1=float(raw["val_top1"]), seed=int(raw["seed"]), raw=raw)


def _recorded_space(recorded: dict, path: Path) -> SearchSpace:
    source = recorded.get("source")
    try:
        return load_space(recorded["name"])
    except QnasError:
        if source and Path(source).exists():
            return load_space(source)
        raise QnasError(f"{path} was made for space '{recorded['name']}', which is not found "
                        f"(not shipped, and {source or 'its file'} does not exist); pass the "
                        f"space's YAML") from None
