"""Search spaces: what can be chosen. Loaded from ``search_spaces/*.yaml`` (the single source).

A space is a fixed macro-architecture (stem, downsampling, head) with a list of searchable
layers; every layer picks one op from the space's candidates. ``build_child(ops)`` gives the
network for one choice; ``layer_input_shapes(input_shape)`` says what each layer sees, which is
what the latency table needs.

Two macro-architectures:

``quadranet``  QuadraNet's (4×4/4 stem, LN + 2×2/2 downsampling, pool + LN + Linear head);
               stage s has width ``width · 2^s``; every candidate is allowed at every layer.
``mbconv``     ProxylessNAS's MobileNetV2-like backbone (3×3/2 stem, fixed k3e1 first block,
               stages of ``widths``/``strides``, 1×1 feature mix, pool, Linear); ``identity``
               (ProxylessNAS's "zero" op) is NOT a candidate at a stage's first layer when it
               strides or changes width — the mask of allowed ops says so per layer.

KernelWarehouse candidates (``k3e2kw`` … ``k7e4kw``, quadranet macro): QuadraBlocks whose
PW1/PW2 are KernelWarehouse convolutions; the kw layers of a stage share one warehouse, sized
(``kw_ratio``, default ½) for the stage's maximal architecture in the supernet and in every
child (:meth:`SearchSpace.kw_plan`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import yaml
from torch import nn

from ..errors import QnasError
from ..models.mbconvnet import MBConvNet
from ..models.ops import IDENTITY, is_identity, kernel_and_expansion, parse_op
from ..models.quadranet import QuadraNet
from ..nn.blocks import QuadraBlockKW, build_block, is_kw_kind
from ..nn.kernelwarehouse import KWManager, plan_warehouse
from ..nn.mbconv import MBConv
from ..resources import data_dir

SPACE_SCHEMA_KEYS = {"name", "description", "macro", "width", "depths", "candidates",
                     "input_shape", "num_classes",
                     # mbconv macro only
                     "widths", "strides", "stem_width", "first_block_width", "head_width",
                     # quadranet macro with KernelWarehouse ('…kw') candidates only
                     "kw_ratio"}
MACROS = ("quadranet", "mbconv")
_REQUIRED_KEYS = {"quadranet": {"name", "width", "depths", "candidates"},
                  "mbconv": {"name", "widths", "strides", "depths", "candidates"}}


@dataclass(frozen=True)
class LayerSlot:
    """One searchable layer: its index, stage, position in the stage and (output) width;
    ``in_dim`` and ``stride`` of its input, ``ops`` the candidates allowed there."""

    index: int
    stage: int
    position: int
    dim: int
    in_dim: int = 0
    stride: int = 1
    ops: tuple[str, ...] = ()

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
    num_classes: int = 1000                 # of the deployment network (latency tables)
    # mbconv macro only
    widths: list[int] | None = None
    strides: list[int] | None = None
    stem_width: int = 32
    first_block_width: int = 16
    head_width: int = 1280
    # KernelWarehouse candidates ('k3e2kw', …): warehouse cells per cell of a stage's
    # maximal architecture (the paper's cell_num_ratio; ½ = KW(1/2×))
    kw_ratio: float = 0.5

    # --- identity ---------------------------------------------------------------------------
    @property
    def hash(self) -> str:
        canonical = json.dumps(self.raw, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    # --- structure --------------------------------------------------------------------------
    @property
    def layers(self) -> list[LayerSlot]:
        slots, index = [], 0
        if self.macro == "mbconv":
            in_dim = self.first_block_width
            for stage, (depth, width, stride) in enumerate(zip(self.depths, self.widths,
                                                               self.strides)):
                for position in range(depth):
                    layer_stride = stride if position == 0 else 1
                    ops = tuple(op for op in self.candidates
                                if not (is_identity(op)
                                        and (layer_stride != 1 or in_dim != width)))
                    slots.append(LayerSlot(index, stage, position, width, in_dim, layer_stride,
                                           ops))
                    in_dim, index = width, index + 1
            return slots
        for stage, depth in enumerate(self.depths):
            dim = self.width * 2 ** stage
            for position in range(depth):
                slots.append(LayerSlot(index, stage, position, dim, dim, 1,
                                       tuple(self.candidates)))
                index += 1
        return slots

    @property
    def num_layers(self) -> int:
        return sum(self.depths)

    def allowed_mask(self):
        """torch.bool [layers × candidates]: True where candidate k is allowed at layer l."""
        return torch.tensor([[op in slot.ops for op in self.candidates] for slot in self.layers],
                            dtype=torch.bool)

    def _resolution_divisors(self) -> list[int]:
        """Per layer: the factor by which its input is smaller than the network input."""
        if self.macro == "mbconv":
            divisors, scale = [], 2          # the stem strides by 2, the first block by 1
            for slot in self.layers:
                divisors.append(scale)
                scale *= slot.stride
            return divisors
        return [4 * 2 ** slot.stage for slot in self.layers]

    @property
    def total_stride(self) -> int:
        """How much smaller the last feature map is than the input (the smallest resolution
        the network runs at)."""
        if self.macro == "mbconv":
            stride = 2
            for value in self.strides:
                stride *= value
            return stride
        return 4 * 2 ** (len(self.depths) - 1)

    def check_resolution(self, resolution: int) -> None:
        if resolution < self.total_stride:
            raise QnasError(f"resolution {resolution} is too small for space '{self.name}': it "
                            f"downsamples by {self.total_stride}; use --resolution "
                            f"{self.total_stride} or more")

    def stage_input_shape(self, stage: int, input_shape: Sequence[int] | None = None) -> tuple:
        """N×C×H×W that the first layer of ``stage`` sees (QuadraNet: every layer of it)."""
        first = next(slot for slot in self.layers if slot.stage == stage)
        return self.layer_input_shapes(input_shape)[first.index]

    def layer_input_shapes(self, input_shape: Sequence[int] | None = None) -> list[tuple]:
        n, _, h, w = input_shape or self.input_shape
        return [(n, slot.in_dim, -(-h // scale), -(-w // scale))
                for slot, scale in zip(self.layers, self._resolution_divisors())]

    # --- KernelWarehouse candidates ----------------------------------------------------------
    @property
    def kw_candidates(self) -> list[str]:
        """The candidates that are KernelWarehouse QuadraBlocks (``k3e2kw``, …)."""
        return [op for op in self.candidates if is_kw_kind(parse_op(op)[0])]

    def kw_plan(self) -> dict:
        """Per stage (index), the :class:`qnas.nn.KWPlan` of its shared warehouse.

        Sized for the stage's MAXIMAL architecture — every layer position holding the kw
        candidate with the most cells — with the cell shape every kw candidate splits into.
        The supernet and every child (whatever its ops) size their warehouses by this plan, so
        the supernet's warehouse weights load into the child strictly. Empty: no kw candidates.
        """
        kw_ops = self.kw_candidates
        if not kw_ops:
            return {}
        expansions = [parse_op(op)[1]["expansion"] for op in kw_ops]
        return {stage: plan_warehouse([QuadraBlockKW.kw_conv_shapes(self.width * 2 ** stage, e)
                                       for e in expansions], slots=depth)
                for stage, depth in enumerate(self.depths)}

    def kw_manager(self):
        """A fresh :class:`qnas.nn.KWManager` planned by :meth:`kw_plan` (None: no kw
        candidates). Its warehouses are named ``stage<s>``, as :class:`QuadraNet` names them."""
        plans = self.kw_plan()
        if not plans:
            return None
        manager = KWManager(ratio=self.kw_ratio)
        for stage, plan in plans.items():
            manager.plan(f"stage{stage}", plan)
        return manager

    def kw_groups(self, ops: Sequence[str]) -> set[str]:
        """The warehouse groups (``stage<s>``) the child of ``ops`` uses."""
        kw_ops = set(self.kw_candidates)
        return {f"stage{slot.stage}" for slot, op in zip(self.layers, ops) if op in kw_ops}

    def build_op(self, op: str, dim: int, **block_kwargs) -> nn.Module:
        """The module of candidate ``op`` at width ``dim`` (identity → nn.Identity).

        For the ``mbconv`` macro this is a stride-1 MBConv ``dim → dim``; use
        :meth:`build_layer_op` for a layer's true input width and stride.
        """
        kind, kwargs = parse_op(op)
        if kind == IDENTITY:
            return build_block(kind, dim)
        if self.macro == "mbconv":
            kind = "mbconv"
        if not is_kw_kind(kind):
            block_kwargs = {k: v for k, v in block_kwargs.items() if not k.startswith("kw")}
        return build_block(kind, dim, **kwargs, **block_kwargs)

    def build_layer_op(self, layer: int | LayerSlot, op: str, kw=None,
                       **block_kwargs) -> nn.Module:
        """The module of candidate ``op`` at searchable layer ``layer`` (its widths, stride);
        ``block_kwargs`` (e.g. ``layer_scale_init``) go to QuadraNet blocks.

        A kw candidate shares the warehouse of its stage in ``kw`` (a supernet's
        :meth:`kw_manager`; allocate it after building every candidate); without ``kw`` it gets
        a private warehouse of the size the stage's shared one has (:meth:`kw_plan`), so that
        it costs what it costs inside the network."""
        slot = self.layers[layer] if isinstance(layer, int) else layer
        if op not in slot.ops:
            raise QnasError(f"op {op!r} is not allowed at layer {slot.index} ({slot.name}) of "
                            f"space '{self.name}'; allowed: {', '.join(slot.ops)}")
        if self.macro == "mbconv":
            kind, kwargs = parse_op(op)
            if kind == IDENTITY:
                return nn.Identity()
            return MBConv(slot.in_dim, slot.dim, kwargs["kernel_size"], kwargs["expansion"],
                          slot.stride)
        if op in self.kw_candidates:
            group = f"stage{slot.stage}"
            if kw is None:
                return self.build_op(op, slot.dim, kw_group=group, kw_ratio=self.kw_ratio,
                                     kw_plan=self.kw_plan()[slot.stage], **block_kwargs)
            with kw.slot(group, slot.position):   # all candidates of a layer: the same β
                return self.build_op(op, slot.dim, kw=kw, kw_group=group, **block_kwargs)
        return self.build_op(op, slot.dim, **block_kwargs)

    def check_ops(self, ops: Sequence[str]) -> list[str]:
        ops = list(ops)
        if len(ops) != self.num_layers:
            raise QnasError(f"space '{self.name}' has {self.num_layers} searchable layers, "
                            f"got {len(ops)} ops")
        for slot, op in zip(self.layers, ops):
            if op not in self.candidates:
                raise QnasError(f"layer {slot.index} op {op!r} is not a candidate of space "
                                f"'{self.name}' ({', '.join(self.candidates)})")
            if op not in slot.ops:
                raise QnasError(f"layer {slot.index} ({slot.name}) cannot be {op!r} in space "
                                f"'{self.name}'; allowed there: {', '.join(slot.ops)}")
        return ops

    def stage_ops(self, ops: Sequence[str]) -> list[list[str]]:
        ops = self.check_ops(ops)
        out, start = [], 0
        for depth in self.depths:
            out.append(ops[start:start + depth])
            start += depth
        return out

    def build_child(self, ops: Sequence[str], num_classes: int | None = None,
                    drop_path_rate: float = 0.0, keep_identity: bool = False,
                    **kwargs) -> nn.Module:
        """The network for one choice of op per layer (identity layers dropped by default).

        ``num_classes`` defaults to the space's (the deployment network's).
        """
        num_classes = self.num_classes if num_classes is None else num_classes
        stages = self.stage_ops(ops)
        if not keep_identity:
            stages = [[op for op in stage if not is_identity(op)] for stage in stages]
        if self.macro == "mbconv":
            if drop_path_rate:
                raise QnasError("the mbconv macro has no drop-path; use drop_path_rate=0")
            return MBConvNet(stages, self.widths, self.strides, num_classes=num_classes,
                             in_chans=self.input_shape[1], stem_width=self.stem_width,
                             first_block_width=self.first_block_width,
                             head_width=self.head_width, **kwargs)
        if self.macro != "quadranet":
            raise QnasError(f"space '{self.name}': unknown macro-architecture '{self.macro}'")
        if self.kw_candidates:
            # KernelWarehouse: warehouses sized for the stage's maximal architecture, as the
            # supernet's (see kw_plan)
            kwargs.setdefault("kw_ratio", self.kw_ratio)
            kwargs.setdefault("kw_plan", self.kw_plan())
        return QuadraNet(num_classes=num_classes, in_chans=self.input_shape[1], width=self.width,
                         layers=stages, drop_path_rate=drop_path_rate, **kwargs)

    def layer_path(self, layer: int) -> str:
        """Module path of searchable layer ``layer`` in a network built with keep_identity."""
        slot = self.layers[layer]
        return f"stages.{slot.stage}.{slot.position}"

    def child_layer_paths(self, ops: Sequence[str], keep_identity: bool = False) -> list:
        """Module path of each layer in ``build_child(ops, keep_identity=...)`` (None where an
        identity layer was dropped)."""
        paths, seen = [], {}
        for slot, op in zip(self.layers, self.check_ops(ops)):
            if is_identity(op) and not keep_identity:
                paths.append(None)
                continue
            position = slot.position if keep_identity else seen.get(slot.stage, 0)
            seen[slot.stage] = seen.get(slot.stage, 0) + 1
            paths.append(f"stages.{slot.stage}.{position}")
        return paths

    def smallest_ops(self) -> list[str]:
        """Identity wherever allowed, else the layer's first candidate."""
        return [next((op for op in slot.ops if is_identity(op)), slot.ops[0])
                for slot in self.layers]

    def largest_ops(self) -> list[str]:
        """Each layer's largest candidate (largest kernel, then expansion; the identity only
        where nothing else is allowed): the child that holds every shared weight."""
        def size(op):
            kernel, expansion = kernel_and_expansion(op)
            return (not is_identity(op), kernel or 0, expansion or 0)
        return [max(slot.ops, key=size) for slot in self.layers]

    def describe_ops(self, ops: Sequence[str]) -> str:
        """``stage0: k3e2 k5e4 | stage1: ...`` for logs."""
        return " | ".join(f"s{i}: {' '.join(stage)}" for i, stage in enumerate(self.stage_ops(ops)))




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
    macro = str(raw.get("macro", "quadranet"))
    if macro not in MACROS:
        raise QnasError(f"search space {source}: unknown macro {macro!r}; use one of "
                        f"{', '.join(MACROS)}")
    unknown = set(raw) - SPACE_SCHEMA_KEYS
    missing = _REQUIRED_KEYS[macro] - set(raw)
    if unknown or missing:
        raise QnasError(f"search space {source}: "
                        + (f"unknown keys {sorted(unknown)} " if unknown else "")
                        + (f"missing keys {sorted(missing)}" if missing else ""))
    for op in raw["candidates"]:
        try:
            parse_op(op)
        except ValueError as err:
            raise QnasError(f"search space {source}: {err}") from None
    try:
        space = SearchSpace(
            name=str(raw["name"]), macro=macro,
            width=int(raw.get("width", raw.get("stem_width", 32))),
            depths=[int(d) for d in raw["depths"]],
            candidates=[str(c) for c in raw["candidates"]],
            input_shape=tuple(int(v) for v in raw.get("input_shape", (1, 3, 224, 224))),
            description=str(raw.get("description", "")), source=source, raw=raw,
            num_classes=int(raw.get("num_classes", 1000)),
            widths=[int(v) for v in raw["widths"]] if "widths" in raw else None,
            strides=[int(v) for v in raw["strides"]] if "strides" in raw else None,
            stem_width=int(raw.get("stem_width", 32)),
            first_block_width=int(raw.get("first_block_width", 16)),
            head_width=int(raw.get("head_width", 1280)),
            kw_ratio=float(raw.get("kw_ratio", 0.5)))
    except (TypeError, ValueError) as err:
        raise QnasError(f"search space {source}: {err}") from None
    if len(space.input_shape) != 4 or min(space.input_shape) <= 0:
        raise QnasError(f"search space {source}: input_shape must be N×C×H×W, got "
                        f"{list(space.input_shape)}")
    if not space.depths or min(space.depths) <= 0:
        raise QnasError(f"search space {source}: depths must be positive, got {space.depths}")
    if len(set(space.candidates)) != len(space.candidates):
        raise QnasError(f"search space {source}: candidates repeat: {space.candidates}")
    if macro == "quadranet" and len(space.depths) != 4:
        raise QnasError(f"search space {source}: the quadranet macro has 4 stages, "
                        f"got depths {space.depths}")
    if macro == "mbconv" and not (len(space.widths) == len(space.strides) == len(space.depths)):
        raise QnasError(f"search space {source}: widths, strides and depths need one entry per "
                        f"stage")
    if space.kw_candidates and macro != "quadranet":
        raise QnasError(f"search space {source}: KernelWarehouse candidates "
                        f"({', '.join(space.kw_candidates)}) need the quadranet macro")
    if not space.kw_ratio > 0:
        raise QnasError(f"search space {source}: kw_ratio must be positive, got {space.kw_ratio}")
    for slot in space.layers:
        if len(slot.ops) < 2:
            raise QnasError(f"search space {source}: layer {slot.index} ({slot.name}) has "
                            f"fewer than two allowed candidates ({', '.join(slot.ops)})")
    return space
