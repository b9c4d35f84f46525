"""Search spaces: what can be chosen. Loaded from ``search_spaces/*.yaml`` (the single source).

A space is a fixed macro-architecture (stem, downsampling, head) with a list of searchable
layers; every layer picks one op from the space's candidates. ``build_child(ops)`` gives the
network for one choice; ``layer_input_shapes(input_shape)`` says what each layer sees, which is
what the latency table needs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import yaml
from torch import nn

from ..errors import QnasError
from ..models.quadranet import QuadraNet, parse_op
from ..resources import data_dir

SPACE_SCHEMA_KEYS = {"name", "description", "macro", "width", "depths", "candidates",
                     "input_shape", "num_classes"}


@dataclass(frozen=True)
class LayerSlot:
    """One searchable layer: its index, stage, position in the stage and width."""

    index: int
    stage: int
    position: int
    dim: int

    @property
    def name(self) -> str:
        return f"stage{self.stage}.{self.position}"


@dataclass
class SearchSpace:
    """A parsed search space. ``hash`` is stable across runs and machines (content of the YAML)."""

    name: str
    macro: str
    width: int
    depths: list[int]
    candidates: list[str]
    input_shape: tuple[int, ...]            # the deployment shape latencies are predicted at
    description: str = ""
    source: str = ""                        # the file it came from
    raw: dict = field(default_factory=dict, repr=False)

    # --- identity ---------------------------------------------------------------------------
    @property
    def hash(self) -> str:
        canonical = json.dumps(self.raw, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    # --- structure --------------------------------------------------------------------------
    @property
    def layers(self) -> list[LayerSlot]:
        slots, index = [], 0
        for stage, depth in enumerate(self.depths):
            for position in range(depth):
                slots.append(LayerSlot(index, stage, position, self.width * 2 ** stage))
                index += 1
        return slots

    @property
    def num_layers(self) -> int:
        return sum(self.depths)

    def stage_input_shape(self, stage: int, input_shape: Sequence[int] | None = None) -> tuple:
        """N×C×H×W that every layer of ``stage`` sees (QuadraNet: /4 stem, /2 per stage)."""
        n, _, h, w = input_shape or self.input_shape
        scale = 4 * 2 ** stage
        return (n, self.width * 2 ** stage, -(-h // scale), -(-w // scale))

    def layer_input_shapes(self, input_shape: Sequence[int] | None = None) -> list[tuple]:
        return [self.stage_input_shape(slot.stage, input_shape) for slot in self.layers]

    def build_op(self, op: str, dim: int) -> nn.Module:
        """The module of candidate ``op`` at width ``dim`` (identity → nn.Identity)."""
        from ..nn.blocks import build_block

        kind, kwargs = parse_op(op)
        return build_block(kind, dim, **kwargs)

    def check_ops(self, ops: Sequence[str]) -> list[str]:
        ops = list(ops)
        if len(ops) != self.num_layers:
            raise QnasError(f"space '{self.name}' has {self.num_layers} searchable layers, "
                            f"got {len(ops)} ops")
        for i, op in enumerate(ops):
            if op not in self.candidates:
                raise QnasError(f"layer {i} op {op!r} is not a candidate of space '{self.name}' "
                                f"({', '.join(self.candidates)})")
        return ops

    def stage_ops(self, ops: Sequence[str]) -> list[list[str]]:
        ops = self.check_ops(ops)
        out, start = [], 0
        for depth in self.depths:
            out.append(ops[start:start + depth])
            start += depth
        return out

    def build_child(self, ops: Sequence[str], num_classes: int = 1000, drop_path_rate: float = 0.0,
                    keep_identity: bool = False, **kwargs) -> nn.Module:
        """The network for one choice of op per layer (identity layers dropped by default)."""
        if self.macro != "quadranet":
            raise QnasError(f"space '{self.name}': unknown macro-architecture '{self.macro}'")
        stages = self.stage_ops(ops)
        if not keep_identity:
            stages = [[op for op in stage if op != "identity"] for stage in stages]
        return QuadraNet(num_classes=num_classes, in_chans=self.input_shape[1], width=self.width,
                         layers=stages, drop_path_rate=drop_path_rate, **kwargs)

    def smallest_ops(self) -> list[str]:
        return ["identity" if "identity" in self.candidates else self.candidates[0]] * self.num_layers


def list_spaces() -> list[str]:
    return sorted(p.stem for p in data_dir("search_spaces").glob("*.yaml"))


def load_space(name_or_path: str | Path = "quadranet") -> SearchSpace:
    """Load a space by name (``quadranet``, ``proxyless_mbconv``) or from a YAML path."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = data_dir("search_spaces") / f"{name_or_path}.yaml"
    if not path.exists():
        raise QnasError(f"unknown search space '{name_or_path}'; known spaces: "
                        f"{', '.join(list_spaces())} (or a path to a .yaml file)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise QnasError(f"search space file {path} is not valid YAML: "
                        f"{str(err).splitlines()[0]}") from None
    return space_from_dict(raw, source=str(path))


def space_from_dict(raw: dict, source: str = "<dict>") -> SearchSpace:
    if not isinstance(raw, dict):
        raise QnasError(f"search space {source} must be a YAML mapping")
    unknown = set(raw) - SPACE_SCHEMA_KEYS
    missing = {"name", "width", "depths", "candidates"} - set(raw)
    if unknown or missing:
        raise QnasError(f"search space {source}: "
                        + (f"unknown keys {sorted(unknown)} " if unknown else "")
                        + (f"missing keys {sorted(missing)}" if missing else ""))
    for op in raw["candidates"]:
        try:
            parse_op(op)
        except ValueError as err:
            raise QnasError(f"search space {source}: {err}") from None
    return SearchSpace(
        name=str(raw["name"]), macro=str(raw.get("macro", "quadranet")), width=int(raw["width"]),
        depths=[int(d) for d in raw["depths"]], candidates=[str(c) for c in raw["candidates"]],
        input_shape=tuple(int(v) for v in raw.get("input_shape", (1, 3, 224, 224))),
        description=str(raw.get("description", "")), source=source, raw=raw)
