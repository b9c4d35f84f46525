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
from typing import Callable, Sequence, Union

import pandas as pd
import torch
from torch import nn

from ..errors import QnasError
from ..runtime.files import write_text_atomic
from .base import Predictor
from .kernels import DECOMPOSITION_VERSION, parse_input_shape

LUT_FORMAT = 1


def default_cache_dir() -> Path:
    """``$QNAS_CACHE_DIR/lut`` if that variable is set, else ``~/.cache/qnas/lut``."""
    root = os.environ.get("QNAS_CACHE_DIR")
    return Path(root) / "lut" if root else Path.home() / ".cache" / "qnas" / "lut"


@dataclass
class LayerSpec:
    """One searchable layer given by hand (for spaces that are not a :class:`SearchSpace`).

    ``candidates`` maps op name -> module (or a zero-argument callable building it); every layer
    of one table must offer the same op names in the same order.
    """

    name: str
    input_shape: tuple[int, ...]
    candidates: dict[str, Union[nn.Module, Callable[[], nn.Module]]]


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
        from .registry import get

        return get(device)
    if not hasattr(device, "predict"):
        raise QnasError(f"device must be a device name or a predictor, got {type(device).__name__}")
    return device


def _cache_key(identity: dict, predictor: Predictor, shape: tuple) -> str:
    payload = {"format": LUT_FORMAT, "decomposition": DECOMPOSITION_VERSION, **identity,
               "device": predictor.device, "source": predictor.source,
               "version": predictor.version,
               "fingerprint": getattr(predictor, "fingerprint", ""), "input_shape": list(shape)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _is_identity(module: nn.Module) -> bool:
    # nothing runs: 0 ms on every backend (a measured backend would only time Python overhead)
    return isinstance(module, nn.Identity)


def build_lut(space_or_layers, device: str | Predictor, input_shape=None,
              cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
              fixed: Sequence[tuple[nn.Module, Sequence[int]]] = ()) -> LatencyTable:
    """The latency table of a search space (a :class:`~qnas.space.SearchSpace`, a space
    name or YAML path) or of hand-given layers (a list of :class:`LayerSpec`, with ``fixed`` =
    the (module, input shape) pairs outside the searchable layers) on ``device``.

    ``input_shape`` defaults to the space's deployment shape. Loaded from the cache when present
    (``table.from_cache`` is then True); ``use_cache=False`` neither reads nor writes it.
    """
    from ..space import SearchSpace, load_space

    predictor = _resolve_predictor(device)
    if isinstance(space_or_layers, (str, Path)):
        space_or_layers = load_space(space_or_layers)

    if isinstance(space_or_layers, SearchSpace):
        space = space_or_layers
        shape = parse_input_shape(input_shape or space.input_shape)
        if len(shape) != 4:
            raise QnasError(f"input shape {shape} must be N×C×H×W, e.g. 1x3x224x224")
        layer_shapes = space.layer_input_shapes(shape)
        layer_names = [slot.name for slot in space.layers]
        candidates = list(space.candidates)
        identity = {"space": space.name, "space_hash": space.hash}

        def candidate(layer: int, op: str):
            slot = space.layers[layer]
            if op not in slot.ops:
                return None, None
            # the module depends on the op, the input shape, the output width and the stride
            return ((op, layer_shapes[layer], slot.dim, slot.stride),
                    lambda: space.build_layer_op(slot, op))

        def fixed_parts():
            return [(space.build_child(space.smallest_ops()), shape)], space.smallest_ops()
    else:
        layers = list(space_or_layers)
        if not layers or not all(isinstance(layer, LayerSpec) for layer in layers):
            raise QnasError("build_lut() needs a SearchSpace, a space name, or a list of LayerSpec")
        candidates = list(layers[0].candidates)
        for layer in layers:
            if list(layer.candidates) != candidates:
                raise QnasError(f"layer {layer.name} offers {list(layer.candidates)}, but every "
                                f"layer must offer {candidates} in that order")
        shape = parse_input_shape(input_shape) if input_shape else tuple(layers[0].input_shape)
        layer_names = [layer.name for layer in layers]
        space = None
        built: dict[tuple[int, str], nn.Module] = {}

        def module_of(layer: int, op: str) -> nn.Module:
            if (layer, op) not in built:
                made = layers[layer].candidates[op]
                built[layer, op] = made if isinstance(made, nn.Module) else made()
            return built[layer, op]

        def candidate(layer: int, op: str):
            module = module_of(layer, op)
            return (op, tuple(layers[layer].input_shape), repr(module)), lambda: module

        def fixed_parts():
            return [(m, parse_input_shape(s)) for m, s in fixed], None

        identity = {"layers": [[layer.name, list(layer.input_shape), candidates] for layer in layers],
                    "modules": hashlib.sha256("".join(
                        repr(module_of(i, op)) for i in range(len(layers)) for op in candidates
                    ).encode()).hexdigest(),
                    "fixed": [[repr(m), list(parse_input_shape(s))] for m, s in fixed]}

    key = _cache_key(identity, predictor, shape)
    cache_path = Path(cache_dir or default_cache_dir()) / f"{key}.json"
    if use_cache and cache_path.is_file():
        try:
            table = LatencyTable.load(cache_path)
            if table.key == key:
                table.from_cache = True
                return table
        except QnasError:
            pass   # a corrupt or foreign cache file: rebuild and overwrite it

    # cost every distinct (op, input shape) once
    costs: dict[tuple, float] = {}
    ms = torch.full((len(layer_names), len(candidates)), float("nan"), dtype=torch.float64)
    allowed = torch.zeros(ms.shape, dtype=torch.bool)
    for layer in range(len(layer_names)):
        for k, op in enumerate(candidates):
            pair, build = candidate(layer, op)
            if pair is None:
                continue
            allowed[layer, k] = True
            if pair not in costs:
                module = build()
                costs[pair] = (0.0 if _is_identity(module)
                               else float(predictor.predict(module, pair[1]).latency_ms))
            ms[layer, k] = costs[pair]

    parts, smallest_ops = fixed_parts()
    fixed_ms = sum(float(predictor.predict(module, part_shape).latency_ms)
                   for module, part_shape in parts)
    if smallest_ops is not None:
        # the child with the smallest ops contains those layers too: take them out again
        fixed_ms -= sum(ms[layer, candidates.index(op)].item()
                        for layer, op in enumerate(smallest_ops))

    table = LatencyTable(
        device=predictor.device, input_shape=shape, candidates=candidates,
        layer_names=layer_names, ms=ms, fixed_ms=float(fixed_ms), source=predictor.source,
        version=predictor.version, known_error=predictor.known_error, key=key,
        space=space.name if space is not None else "",
        space_hash=space.hash if space is not None else "", costed=len(costs), allowed=allowed)
    if use_cache:
        table.save(cache_path)
    return table
