"""The latency lookup table of a search space on a device: LUT[layer, candidate] + a fixed part.

``E[LAT] = fixed + Σ_l Σ_k p_lk · LUT[l, k]`` is what the search differentiates
(:mod:`qnas.nas.latency`), and ``fixed + Σ_l LUT[l, k_l]`` is the predicted latency of one
child. The fixed part (stem, downsamples, head) is the child whose every searchable layer is
identity. An op a space does not allow at a layer (e.g. identity where an MBConv stage strides)
has ``allowed[l, k]`` False and ``ms[l, k]`` NaN, so that using it by mistake cannot go unseen.

Tables are cached on disk (JSON, written atomically) under a key hashing the space, the device,
the predictor's source and version, the decomposition version and the input shape; identical
(op, input shape) pairs are costed once (all layers of a stage share their shape).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch import nn

from ..errors import QnasError
from ..runtime.files import write_text_atomic
from ..space import SearchSpace, load_space
from .base import Predictor
from .kernels import DECOMPOSITION_VERSION, parse_input_shape
from .registry import get

LUT_FORMAT = 1


def default_cache_dir() -> Path:
    """``$QNAS_CACHE_DIR/lut`` if that variable is set, else ``~/.cache/qnas/lut``."""
    root = os.environ.get("QNAS_CACHE_DIR")
    return Path(root) / "lut" if root else Path.home() / ".cache" / "qnas" / "lut"


@dataclass(eq=False)
class LatencyTable:
    device: str
    input_shape: tuple[int, ...]
    candidates: list[str]
    layer_names: list[str]
    ms: torch.Tensor                  # float64 [layers × candidates], ms (NaN: not allowed)
    fixed_ms: float                   # stem + downsamples + head
    source: str                       # the predictor's source: profile / nn-meter / measured
    version: str
    known_error: str
    key: str                          # cache key
    space: str = ""
    space_hash: str = ""
    costed: int = 0                   # distinct (op, shape) pairs costed when it was built
    allowed: torch.Tensor | None = None   # bool [layers × candidates]; None: all allowed
    from_cache: bool = field(default=False, compare=False)

    def __post_init__(self):
        self.ms = torch.as_tensor(self.ms, dtype=torch.float64)
        self.input_shape = tuple(int(v) for v in self.input_shape)
        expected = (len(self.layer_names), len(self.candidates))
        if tuple(self.ms.shape) != expected:
            raise QnasError(f"latency table has shape {tuple(self.ms.shape)}, expected "
                            f"{expected} (layers × candidates)")
        self.allowed = (torch.ones(expected, dtype=torch.bool) if self.allowed is None
                        else torch.as_tensor(self.allowed, dtype=torch.bool))

    # --- queries -------------------------------------------------------------------------------
    def index_of(self, op: str | int) -> int:
        if isinstance(op, int):
            if not 0 <= op < len(self.candidates):
                raise QnasError(f"candidate index {op} out of range 0..{len(self.candidates) - 1}")
            return op
        try:
            return self.candidates.index(op)
        except ValueError:
            raise QnasError(f"op {op!r} is not a candidate ({', '.join(self.candidates)})") from None

    def latency_of(self, ops: Sequence[str | int]) -> float:
        """Predicted latency (ms) of the child with op ``ops[l]`` at layer l."""
        ops = list(ops)
        if len(ops) != len(self.layer_names):
            raise QnasError(f"the table has {len(self.layer_names)} layers, got {len(ops)} ops")
        total = self.fixed_ms
        for layer, op in enumerate(ops):
            k = self.index_of(op)
            if not self.allowed[layer, k]:
                raise QnasError(f"op {self.candidates[k]!r} is not allowed at layer "
                                f"{self.layer_names[layer]}")
            total += self.ms[layer, k].item()
        return total

    def min_ms(self) -> float:
        """The fastest child: the cheapest allowed op at every layer."""
        masked = torch.where(self.allowed, self.ms, torch.full_like(self.ms, float("inf")))
        return self.fixed_ms + float(masked.min(dim=1).values.sum())

    def max_ms(self) -> float:
        """The slowest child: the most expensive allowed op at every layer."""
        masked = torch.where(self.allowed, self.ms, torch.full_like(self.ms, float("-inf")))
        return self.fixed_ms + float(masked.max(dim=1).values.sum())

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.ms.numpy(), index=self.layer_names, columns=self.candidates)

    def describe(self) -> str:
        return (f"{self.device} LUT {len(self.layer_names)}×{len(self.candidates)} at "
                f"{'x'.join(map(str, self.input_shape))}: fixed {self.fixed_ms:.3f} ms, children "
                f"{self.min_ms():.3f}–{self.max_ms():.3f} ms [{self.source} {self.version}; "
                f"known error: {self.known_error}]")

    # --- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("from_cache")
        data["ms"] = self.ms.tolist()
        data["allowed"] = self.allowed.tolist()
        data["input_shape"] = list(self.input_shape)
        return {"format": LUT_FORMAT, **data}

    def save(self, path: str | os.PathLike) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, data: dict, where: str = "<dict>") -> "LatencyTable":
        if not isinstance(data, dict) or data.get("format") != LUT_FORMAT:
            raise QnasError(f"{where} is not a qnas latency table of format {LUT_FORMAT}; "
                            f"rebuild it with build_lut()")
        data = dict(data)
        data.pop("format")
        try:
            return cls(**data)
        except TypeError as err:
            raise QnasError(f"{where} is not a valid latency table ({err}); rebuild it") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyTable":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise QnasError(f"latency table {path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise QnasError(f"latency table {path} is corrupt (not JSON); delete it and "
                            f"rebuild") from None
        return cls.from_dict(data, str(path))


# --- building ---------------------------------------------------------------------------------
def _resolve_predictor(device) -> Predictor:
    if isinstance(device, str):
        return get(device)
    if not hasattr(device, "predict"):
        raise QnasError(f"device must be a device name or a predictor, got {type(device).__name__}")
    return device


def _cache_key(space: SearchSpace, predictor: Predictor, shape: tuple) -> str:
    payload = {"format": LUT_FORMAT, "decomposition": DECOMPOSITION_VERSION,
               "space": space.name, "space_hash": space.hash,
               "device": predictor.device, "source": predictor.source,
               "version": predictor.version,
               "fingerprint": getattr(predictor, "fingerprint", ""), "input_shape": list(shape)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _is_identity(module: nn.Module) -> bool:
    # nothing runs: 0 ms on every backend (a measured backend would only time Python overhead)
    return isinstance(module, nn.Identity)


def build_lut(space: SearchSpace | str | os.PathLike, device: str | Predictor, input_shape=None,
              cache_dir: str | os.PathLike | None = None, use_cache: bool = True) -> LatencyTable:
    """The latency table of a search space (a :class:`~qnas.space.SearchSpace`, a space
    name or YAML path) on ``device`` (a device name or a predictor).

    ``input_shape`` defaults to the space's deployment shape. Loaded from the cache when present
    (``table.from_cache`` is then True); ``use_cache=False`` neither reads nor writes it.
    """
    predictor = _resolve_predictor(device)
    if not isinstance(space, SearchSpace):
        space = load_space(space)
    shape = parse_input_shape(input_shape or space.input_shape)
    if len(shape) != 4:
        raise QnasError(f"input shape {shape} must be N×C×H×W, e.g. 1x3x224x224")
    layer_shapes = space.layer_input_shapes(shape)
    layer_names = [slot.name for slot in space.layers]
    candidates = list(space.candidates)

    key = _cache_key(space, predictor, shape)
    cache_path = Path(cache_dir or default_cache_dir()) / f"{key}.json"
    if use_cache and cache_path.is_file():
        try:
            table = LatencyTable.load(cache_path)
            if table.key == key:
                table.from_cache = True
                return table
        except QnasError:
            pass   # a corrupt or foreign cache file: rebuild and overwrite it

    # cost every distinct (op, input shape, output width, stride) once
    costs: dict[tuple, float] = {}
    ms = torch.full((len(layer_names), len(candidates)), float("nan"), dtype=torch.float64)
    allowed = torch.zeros(ms.shape, dtype=torch.bool)
    for layer, slot in enumerate(space.layers):
        for k, op in enumerate(candidates):
            if op not in slot.ops:
                continue
            allowed[layer, k] = True
            # the module depends on the op, the input shape, the output width and the stride
            pair = (op, layer_shapes[layer], slot.dim, slot.stride)
            if pair not in costs:
                module = space.build_layer_op(slot, op)
                costs[pair] = (0.0 if _is_identity(module)
                               else float(predictor.predict(module, pair[1]).latency_ms))
            ms[layer, k] = costs[pair]

    # the fixed part: the child with the smallest ops, less those layers
    smallest_ops = space.smallest_ops()
    fixed_ms = float(predictor.predict(space.build_child(smallest_ops), shape).latency_ms)
    fixed_ms -= sum(ms[layer, candidates.index(op)].item()
                    for layer, op in enumerate(smallest_ops))

    table = LatencyTable(
        device=predictor.device, input_shape=shape, candidates=candidates,
        layer_names=layer_names, ms=ms, fixed_ms=float(fixed_ms), source=predictor.source,
        version=predictor.version, known_error=predictor.known_error, key=key,
        space=space.name, space_hash=space.hash, costed=len(costs), allowed=allowed)
    if use_cache:
        table.save(cache_path)
    return table
