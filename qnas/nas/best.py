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
                        there is none, e.g. after ``--keep-checkpoints 0``)
    child_weights       {file, sha256, bytes, weights, batchnorm}: the derived child with the
                        weights it inherited from the supernet (``child.pt`` next to best.json,
                        :func:`write_child`); what ``qnas export`` and ``qnas retrain --init
                        inherit`` read. None in files of qnas < 0.2 (they fall back to the
                        supernet checkpoint)
    warnings            one line each on what makes the result doubtful: the child is the
                        smallest of the space, the budget does not bind, the inherited top-1
                        is near chance
    seed, search, derivation, fixed_architecture, created

``child.pt`` (:data:`CHILD_FORMAT`, also what ``qnas export`` writes into ``export/``) is a dict:
``format``, ``format_version``, ``qnas_version``, ``state_dict``, ``ops``, ``layers``, ``space``
(name, hash and the whole definition, so that no YAML is needed to rebuild it),
``num_classes``, ``input_shape``, ``resolution``, ``batchnorm`` (how its BatchNorm statistics
were set, None without BatchNorm) and ``best`` (what best.json says of it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import QnasError
from ..predictors.registry import get
from ..runtime.files import write_bytes_atomic, write_text_atomic
from ..space import SearchSpace, load_space, space_from_dict
from .latency import predict_everywhere, within_budget

SCHEMA = "qnas.best"
SCHEMA_VERSION = 1
KNOWN_VERSIONS = (1,)
FILE_NAME = "best.json"
CHILD_FILE = "child.pt"          # the derived child's inherited weights, next to best.json
CHILD_FORMAT = "qnas-child"
CHILD_FORMAT_VERSION = 1


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
    child_weights: dict | None = None          # child.pt: {file, sha256, bytes, ...}
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
        child = raw.get("child_weights")
        if child is not None and (not isinstance(child, dict)
                                  or not isinstance(child.get("file"), str)
                                  or not isinstance(child.get("sha256"), str)):
            raise QnasError(f"{where} is corrupt: 'child_weights' needs a file and a sha256")
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

    @property
    def child_file(self) -> Path | None:
        """``child.pt`` (the child's inherited weights), resolved against best.json's folder;
        None when best.json records none (qnas < 0.2, fixed architectures)."""
        child = self.record.child_weights
        if not child:
            return None
        path = Path(child["file"])
        return path if path.is_absolute() else self.path.parent / path

    def inherited_state(self, echo=None) -> tuple[dict, int, str]:
        """The child's weights inherited from the supernet: (state dict, classes, where they
        came from). From ``child.pt`` when best.json names one and it is there (checked against
        best.json's checksum and architecture); else from the supernet checkpoint (best.json of
        qnas < 0.2, or a child.pt that was not copied along); one line when neither exists."""
        child = self.child_file
        if child is not None and child.is_file():
            record = read_child(child, sha256=self.record.child_weights.get("sha256"))
            if record["ops"] != self.ops or record["space"].get("hash") != self.space.hash:
                raise QnasError(f"{child} holds another architecture than {self.path}; "
                                f"export the child.pt written with this best.json, or search "
                                f"again")
            return record["state_dict"], int(record["num_classes"]), str(child)
        supernet_path = self.supernet_checkpoint
        if not self.record.supernet_checkpoint or not supernet_path.is_file():
            named = f"{child} nor " if child is not None else ""
            raise QnasError(f"neither {named}the supernet checkpoint "
                            f"{supernet_path if self.record.supernet_checkpoint else '(none)'} "
                            f"named in {self.path} exists: the child's inherited weights are "
                            f"gone; copy them back next to best.json, or search again")
        if child is not None and echo is not None:
            echo(f"note: {child} is missing; taking the child's weights from the supernet "
                 f"checkpoint {supernet_path}")
        from .supernet import load_supernet

        supernet = load_supernet(supernet_path, space=self.space)   # read once: it can be large
        return supernet.child_state_dict(self.ops), supernet.num_classes, str(supernet_path)

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


# --- child.pt ---------------------------------------------------------------------------------

def child_payload(space: SearchSpace, ops: list[str], state_dict: dict, num_classes: int,
                  input_shape, resolution: int, batchnorm: str | None = None,
                  best: dict | None = None) -> dict:
    """What a ``child.pt`` holds (see the module doc)."""
    return {
        "format": CHILD_FORMAT, "format_version": CHILD_FORMAT_VERSION,
        "qnas_version": __version__,
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "ops": list(ops),
        "layers": [{"index": slot.index, "name": slot.name, "op": op}
                   for slot, op in zip(space.layers, ops)],
        "space": {"name": space.name, "hash": space.hash, "definition": space.raw},
        "num_classes": int(num_classes),
        "input_shape": [int(v) for v in input_shape],
        "resolution": int(resolution),
        "batchnorm": batchnorm,
        "best": dict(best or {}),
    }


def child_bytes(payload: dict) -> bytes:
    """``payload`` serialised as torch.save does (to write atomically, and to hash)."""
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def write_child(path: str | Path, payload: dict) -> dict:
    """Write ``child.pt`` atomically; returns what best.json records of it (``file`` relative
    to the folder, ``sha256``, ``bytes``)."""
    path = Path(path)
    data = child_bytes(payload)
    write_bytes_atomic(path, data)
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "weights": "inherited from the supernet", "batchnorm": payload.get("batchnorm")}


def read_child(path: str | Path, sha256: str | None = None) -> dict:
    """The record of a ``child.pt`` (validated; its checksum compared with ``sha256`` when
    given)."""
    import torch

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise QnasError(f"{path} does not exist; export a child with 'qnas export "
                        f"runs/<name>/best.json'") from None
    except (IsADirectoryError, PermissionError) as err:
        raise QnasError(f"cannot read {path} ({type(err).__name__})") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise QnasError(f"{path} does not match the checksum its best.json records (changed "
                        f"or damaged since the search); search again, or remove it to fall "
                        f"back to the supernet checkpoint")
    try:
        record = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
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


def child_space(record: dict, path: str | Path) -> SearchSpace:
    """The search space embedded in a child.pt record (checked against its recorded hash)."""
    space_info = record["space"]
    try:
        space = space_from_dict(space_info["definition"], source=f"{path} (embedded space)")
    except (KeyError, TypeError) as err:
        raise QnasError(f"{path} is corrupt: its space definition is unusable "
                        f"({type(err).__name__})") from None
    if space.hash != space_info.get("hash"):
        raise QnasError(f"{path} is corrupt: its embedded space hashes to {space.hash}, not "
                        f"the recorded {space_info.get('hash')}")
    return space
