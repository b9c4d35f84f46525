"""``best.json``: the contract between ``qnas search`` and ``export`` / ``retrain``.

:class:`BestRecord` is its only writer and reader: every best.json — a search's, a sweep's, the
kernel-size ablation's fixed architectures — is a ``BestRecord(...).write(path)``, and every
reader goes through :meth:`BestRecord.read` (or :func:`load_best`, which also resolves the
space). Schema (version 1)::

    schema              "qnas.best"
    schema_version      1 (a file of another version is refused with a clear message)
    qnas_version        the qnas that wrote it
    space               {name, hash, source}
    ops                 the chosen op per searchable layer (space order)
    layers              [{index, name, op, ms?, p?}] the same, with layer names
    device              the target device
    input_shape         the deployment shape latencies are predicted at (N, C, H, W)
    target_latency_ms   the budget
    predicted_latency_ms  the device's predictor on the whole child at input_shape
    lut_latency_ms      F + Σ LUT[l, op_l] (what the hard constraint was solved on)
    within_budget       both of the above ≤ the budget (:func:`qnas.nas.latency.within_budget`)
    predictor           {source, version, known_error}
    other_devices       {device: {latency_ms, source, version, known_error} or {error}}
    val_top1            top-1 (%) of the child with inherited supernet weights (None: not
                        measured, e.g. a fixed architecture)
    evaluation          {dataset, resolution, num_classes, split, weights}
    supernet_checkpoint path of the supernet checkpoint, relative to best.json's folder ("" when
                        there is none)
    warnings            one line each on what makes the result doubtful: the child is the
                        smallest of the space, the budget does not bind, the inherited top-1
                        is near chance
    seed, search, derivation, fixed_architecture, created
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import QnasError
from ..predictors.registry import get
from ..runtime.files import write_text_atomic
from ..space import SearchSpace, load_space
from .latency import predict_everywhere, within_budget

SCHEMA = "qnas.best"
SCHEMA_VERSION = 1
KNOWN_VERSIONS = (1,)
FILE_NAME = "best.json"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class BestRecord:
    """One best.json (see the module doc for the fields)."""

    space: dict
    ops: list[str]
    layers: list[dict]
    device: str
    input_shape: list[int]
    target_latency_ms: float
    predicted_latency_ms: float
    predictor: dict
    other_devices: dict
    val_top1: float | None
    evaluation: dict
    seed: int
    supernet_checkpoint: str = ""
    lut_latency_ms: float | None = None
    within_budget: bool | None = None          # computed by the rule when not given
    search: dict | None = None
    derivation: dict | None = None
    fixed_architecture: bool = False
    warnings: list[str] = field(default_factory=list)   # what makes the result doubtful
    created: str = field(default_factory=_now)
    qnas_version: str = __version__
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    _TYPES = {"space": dict, "ops": list, "layers": list, "device": str, "input_shape": list,
              "target_latency_ms": (int, float), "predicted_latency_ms": (int, float),
              "predictor": dict, "other_devices": dict, "evaluation": dict, "seed": int,
              "supernet_checkpoint": str, "qnas_version": str}

    def __post_init__(self):
        if self.within_budget is None:
            self.within_budget = within_budget(self.lut_latency_ms, self.predicted_latency_ms,
                                               self.target_latency_ms)

    @classmethod
    def of_fixed_architecture(cls, space: SearchSpace, ops: list[str], device: str,
                           other_devices=(), dataset: str = "digit-pairs",
                           resolution: int = 32, seed: int = 0,
                           why: str = "a fixed architecture") -> "BestRecord":
        """The record of an architecture that was not searched (an ablation's, a baseline's, a
        random child's), so that ``qnas retrain`` / ``qnas export`` take it like any other:
        its latency is the prediction on ``device`` (the budget is that latency), no supernet,
        no inherited top-1."""
        ops = space.check_ops(ops)
        deploy = space.build_child(ops).eval()
        predictor = get(device)
        target = predictor.predict(deploy, space.input_shape)
        others = predict_everywhere(deploy, space.input_shape, skip=predictor.device,
                                    devices=list(other_devices))
        return cls(
            space={"name": space.name, "hash": space.hash, "source": space.source},
            ops=list(ops), layers=[{"index": slot.index, "name": slot.name, "op": op}
                                   for slot, op in zip(space.layers, ops)],
            device=predictor.device, input_shape=list(space.input_shape),
            target_latency_ms=float(target.latency_ms),
            predicted_latency_ms=float(target.latency_ms),
            predictor={"source": target.source, "version": target.version,
                       "known_error": target.known_error},
            other_devices=others, val_top1=None,
            evaluation={"dataset": dataset, "resolution": resolution, "split": "validation",
                        "weights": f"none: {why}; see retrain/retrain.json for its trained "
                                   f"top-1"},
            seed=seed, fixed_architecture=True)

    # --- writing ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON object, schema fields first."""
        data = dataclasses.asdict(self)
        head = {key: data.pop(key) for key in ("schema", "schema_version", "qnas_version")}
        return {**head, **data}

    def write(self, path: str | Path) -> Path:
        """Write atomically (temporary file + rename)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    # --- reading ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw, where: str | Path = "best.json") -> "BestRecord":
        """Validate ``raw`` (a parsed best.json); one-line QnasError naming ``where``."""
        if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
            raise QnasError(f"{where} is not a qnas best.json (no \"schema\": \"{SCHEMA}\")")
        version = raw.get("schema_version")
        if version not in KNOWN_VERSIONS:
            if isinstance(version, int) and not isinstance(version, bool) \
                    and version > SCHEMA_VERSION:
                raise QnasError(f"{where} has schema version {version}, newer than this qnas "
                                f"({__version__}) reads ({SCHEMA_VERSION}); upgrade qnas")
            raise QnasError(f"{where} has an unknown schema version {version!r} (this qnas reads "
                            f"{', '.join(map(str, KNOWN_VERSIONS))}); re-run 'qnas search' to "
                            f"write it again")
        for key, kind in cls._TYPES.items():
            if key not in raw or not isinstance(raw[key], kind) or isinstance(raw[key], bool):
                raise QnasError(f"{where} is corrupt: field {key!r} is missing or has the wrong "
                                f"type")
        if not raw["ops"] or not all(isinstance(op, str) for op in raw["ops"]):
            raise QnasError(f"{where} is corrupt: 'ops' must be a non-empty list of op names")
        for key in ("target_latency_ms", "predicted_latency_ms"):
            if not math.isfinite(raw[key]):
                raise QnasError(f"{where} is corrupt: {key!r} is not a finite number")
        top1 = raw.get("val_top1")
        if top1 is not None and (isinstance(top1, bool) or not isinstance(top1, (int, float))
                                 or not math.isfinite(top1)):
            raise QnasError(f"{where} is corrupt: 'val_top1' is not a finite number")
        space = raw["space"]
        if not isinstance(space.get("name"), str) or not isinstance(space.get("hash"), str):
            raise QnasError(f"{where} is corrupt: 'space' needs a name and a hash")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in raw.items() if key in known})

    @classmethod
    def read(cls, path: str | Path) -> "BestRecord":
        """Read and validate a best.json (a missing, unreadable or corrupt file: one line)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise QnasError(f"{path} does not exist; pass the best.json written by 'qnas "
                            f"search'") from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
            raise QnasError(f"cannot read {path} as a best.json ({type(err).__name__})") \
                from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise QnasError(f"{path} is corrupt: not valid JSON ({err.msg} at line "
                            f"{err.lineno}); re-run 'qnas search' to write it again") from None
        return cls.from_dict(raw, path)


@dataclass
class BestArch:
    """A loaded best.json with its search space resolved (what export and retrain use)."""

    path: Path
    space: SearchSpace
    record: BestRecord

    @property
    def ops(self) -> list[str]:
        return list(self.record.ops)

    @property
    def device(self) -> str:
        return self.record.device

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.record.input_shape)

    @property
    def target_latency_ms(self) -> float:
        return float(self.record.target_latency_ms)

    @property
    def predicted_latency_ms(self) -> float:
        return float(self.record.predicted_latency_ms)

    @property
    def val_top1(self) -> float | None:
        return self.record.val_top1

    @property
    def seed(self) -> int:
        return int(self.record.seed)

    @property
    def raw(self) -> dict:
        """The record as plain data (the file's JSON object)."""
        return self.record.to_dict()

    @property
    def supernet_checkpoint(self) -> Path:
        """The supernet checkpoint, resolved against best.json's folder."""
        path = Path(self.record.supernet_checkpoint)
        return path if path.is_absolute() else self.path.parent / path

    def build_child(self, num_classes: int | None = None, **kwargs):
        """The child network (fresh weights); identity layers dropped."""
        return self.space.build_child(self.ops, num_classes=num_classes, **kwargs)


def load_best(path: str | Path, space: SearchSpace | str | Path | None = None) -> BestArch:
    """Read a best.json and resolve its space; refuse (QnasError, one line) a corrupt file, an
    unknown schema version, or one made for another space (``space`` given, or the recorded
    space's YAML changed)."""
    path = Path(path)
    record = BestRecord.read(path)
    if space is None:
        space = recorded_space(record.space, path)
    elif not isinstance(space, SearchSpace):
        space = load_space(space)
    if space.hash != record.space["hash"]:
        raise QnasError(f"{path} was made for space '{record.space['name']}' (hash "
                        f"{record.space['hash']}), not for space '{space.name}' (hash "
                        f"{space.hash}); use the space it was searched in, or search again")
    record.ops = space.check_ops(record.ops)
    return BestArch(path=path, space=space, record=record)


def recorded_space(recorded: dict, path: Path) -> SearchSpace:
    """The space a best.json names: the shipped one of that name, else its recorded file."""
    source = recorded.get("source")
    try:
        return load_space(recorded["name"])
    except QnasError:
        if source and Path(source).exists():
            return load_space(source)
        raise QnasError(f"{path} was made for space '{recorded['name']}', which is not found "
                        f"(not shipped, and {source or 'its file'} does not exist); pass the "
                        f"space's YAML") from None
