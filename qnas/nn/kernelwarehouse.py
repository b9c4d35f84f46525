"""KernelWarehouse (Li & Yao, ICML 2024): dynamic convolution from a warehouse of shared cells.

Structure after the official code (``KWconvNd``, ``Attention``, ``Warehouse_Manager``):

**Kernel partition.** A static kernel W (out × in × k × k) is split along out and in into
m = (out / c_out) · (in / c_in) *cells* of shape (c_out, c_in, k, k) (cells span the whole
k×k window: the official "spatial partition" is not used, the QuadraBlock variant only has
1×1 kernels). Cell i, counted row-major over (out group, in group), is a linear mixture of the
n cells of a *warehouse* E = {e_1 … e_n}: ``w_i = α_i1 e_1 + … + α_in e_n``.

**Warehouse sharing.** A :class:`KWManager`, made once per network by its builder, collects the
layers of each sharing *group* (QuadraNet: one group per stage, ``"stage<s>"``), gives the
group one cell shape (the gcd of its layers' channel counts, or a planned one) and, when the
network is built, allocates ONE warehouse per group with ``n = ceil(ratio · T)`` cells, T the
total number of cells of the group's layers (``ratio`` is the paper's cell_num_ratio: KW(1/2×)
is ratio ½). So a network's parameters are ``Σ_groups n · cell_numel`` plus one attention
branch per layer (plus the layers' biases): they scale with the warehouse size, not with the
number of layers. The warehouses are parameters of the manager (a submodule of the network,
e.g. ``QuadraNet.kw`` → ``kw.warehouses.stage1``); the layers only hold a reference to it.

**Kernel assembly.** Per sample, ``attention [B, m, n] @ warehouse [n, cell_numel]`` gives the
m cells, reassembled into a per-sample kernel [B·out, in, k, k]; the convolution runs as ONE
grouped convolution with groups = B (as dynamic convolution does). In captured graphs (ONNX
export, tracing, TorchScript) a 1×1 stride-1 layer runs the same maths as a batched matmul so
that the graph keeps a dynamic batch (a grouped conv's group count is static in ONNX).

**Attention.** An SE-like branch per layer: global average pool → FC (in → hidden, hidden =
max(⌊in · reduction⌋, 16), reduction 1/16) → BatchNorm1d (or none) → ReLU → FC to m·(n+1)
logits z, reshaped [m, n+1]. The extra (n+1)-th entry is the official code's "zero cell": it
takes part in the normalisation and is dropped afterwards (``zero_cell=False`` leaves it out).
Linear normalisation ``α = z / (Σ_j |z_j| + ε)`` (ε = 1e-3, as the official code), then
``α' = (1 − τ) α + τ β`` with β the binary initial assignment: mixture t of a group (counted
over its layers in order) owns warehouse cell ⌊t · ratio⌋ when it is the first mixture mapped
there, otherwise the zero cell (ratio < 1: some cells start out empty). The temperature τ decays
linearly from 1 to 0 over the first epochs (:func:`kw_temperature`; the training loop calls
:func:`set_kw_temperature` on the model); a freshly built layer runs at τ = 0 (fully dynamic,
the state after the warm-up). τ is a persistent buffer (``temperature``) and β is one too
(``attention.assignment``), so a child that loads a supernet's state dict behaves identically.

**Reduction.** With one cell per kernel (c_out = out, c_in = in, m = 1) and a private
warehouse of n kernels, a KWConv2d at τ = 0 *is* ordinary dynamic convolution (CondConv /
DY-Conv): per-sample kernel ``Σ_j a_j W_j`` with ``a`` the linear-normalised attention.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from .common import capturing, check_positive

NORMS = ("bn", "none")


# --- plans ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KWPlan:
    """How a group's warehouse is sized, fixed in advance (instead of from its own layers).

    cell: (c_out, c_in, kh, kw) of every cell.
    mixtures: T, the number of cells the warehouse is sized for: n = ceil(ratio · T).
    cells: an explicit n (overrides ``ratio · mixtures``).

    A search space plans each stage for its *maximal* architecture, so that a supernet and
    every child of it hold warehouses of the same size (their state dicts fit each other).
    """

    cell: tuple[int, int, int, int]
    mixtures: int
    cells: int | None = None

    def num_cells(self, ratio: float) -> int:
        return int(self.cells) if self.cells else max(1, math.ceil(ratio * self.mixtures - 1e-9))


def plan_warehouse(options: Sequence[Sequence[tuple[int, int, int, int]]],
                   slots: int = 1) -> KWPlan:
    """The plan of a warehouse whose ``slots`` layer positions each hold one of ``options``.

    ``options[i]`` lists the (out, in, kh, kw) kernel shapes of the KW convolutions of option i
    (e.g. one block kind at one expansion). The cell is the gcd over every shape (so that every
    option fits it); T = slots × the most cells any option needs.
    """
    shapes = [tuple(int(v) for v in shape) for option in options for shape in option]
    if not shapes:
        raise ValueError("plan_warehouse needs at least one kernel shape")
    kernels = {shape[2:] for shape in shapes}
    if len(kernels) != 1:
        raise ValueError(f"one warehouse holds cells of one kernel size, got {sorted(kernels)}")
    c_out = math.gcd(*(shape[0] for shape in shapes))
    c_in = math.gcd(*(shape[1] for shape in shapes))
    per_slot = max(sum((o // c_out) * (i // c_in) for o, i, *_ in option) for option in options)
    return KWPlan((c_out, c_in, *next(iter(kernels))), slots * per_slot)


# --- the attention branch -------------------------------------------------------------------------
class KWAttention(nn.Module):
    """SE-like attention of one KW layer: [B, C, H, W] → mixing weights [B, m, n].

    pool → fc1 → BN (or none) → ReLU → fc2 → [m, n(+1)] → z / (Σ|z| + ε) → (1−τ)·α + τ·β →
    (zero cell dropped). ``assignment`` (β, [m, n(+1)]) is a persistent buffer.
    """

    def __init__(self, in_channels: int, mixtures: int, cells: int, assignment: torch.Tensor,
                 reduction: float = 1 / 16, min_hidden: int = 16, norm: str = "bn",
                 zero_cell: bool = True, eps: float = 1e-3):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"attention norm must be one of {NORMS}, got {norm!r}")
        self.mixtures, self.cells, self.zero_cell, self.eps = mixtures, cells, zero_cell, eps
        self.entries = cells + int(zero_cell)
        self.hidden = max(int(in_channels * reduction), min_hidden)
        self.fc1 = nn.Linear(in_channels, self.hidden, bias=norm != "bn")
        self.norm = nn.BatchNorm1d(self.hidden) if norm == "bn" else nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(self.hidden, mixtures * self.entries)
        if tuple(assignment.shape) != (mixtures, self.entries):
            raise ValueError(f"assignment must be [{mixtures}, {self.entries}], got "
                             f"{tuple(assignment.shape)}")
        self.register_buffer("assignment", assignment.to(torch.float32).clone())
        for fc in (self.fc1, self.fc2):          # QuadraNet's init of every Linear
            trunc_normal_(fc.weight, std=0.02)
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """z, [B, m, n(+1)], before normalisation."""
        h = self.act(self.norm(self.fc1(x.mean((2, 3)))))
        return self.fc2(h).view(-1, self.mixtures, self.entries)

    def forward(self, x: torch.Tensor, temperature: float = 0.0) -> torch.Tensor:
        z = self.logits(x)
        alpha = z / (z.abs().sum(-1, keepdim=True) + self.eps)      # linear normalisation
        if temperature:
            alpha = (1.0 - temperature) * alpha + temperature * self.assignment
        return alpha[..., :self.cells] if self.zero_cell else alpha

    def extra_repr(self) -> str:
        return f"mixtures={self.mixtures}, cells={self.cells}, zero_cell={self.zero_cell}"


class KernelAssembly(nn.Module):
    """attention [B, m, n] @ warehouse [n, cell] → the per-sample kernels [B·out, in, kh, kw].

    Its own module so that latency breakdowns name the assembly (``….assemble``).
    """

    def __init__(self, out_channels: int, in_channels: int, cell: tuple[int, int, int, int]):
        super().__init__()
        self.out_channels, self.in_channels = out_channels, in_channels
        self.cell = tuple(cell)
        self.groups_out, self.groups_in = out_channels // cell[0], in_channels // cell[1]

    def forward(self, attention: torch.Tensor, warehouse: torch.Tensor) -> torch.Tensor:
        c_out, c_in, kh, kw = self.cell
        cells = torch.matmul(attention, warehouse.reshape(warehouse.shape[0], -1))  # [B, m, cell]
        if self.groups_in > 1:
            # cell i = (out group i // groups_in, in group i % groups_in): bring each out
            # group's in groups next to each other
            cells = cells.view(-1, self.groups_out, self.groups_in, c_out, c_in, kh, kw)
            cells = cells.permute(0, 1, 3, 2, 4, 5, 6)
        return cells.reshape(-1, self.in_channels, kh, kw)


# --- the convolution ------------------------------------------------------------------------------
class KWConv2d(nn.Module):
    """A KernelWarehouse convolution (groups = 1): per-sample kernels assembled from a warehouse.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as nn.Conv2d.
        kw: the network's :class:`KWManager` (the warehouse is shared with the other layers of
            ``group``; the layer runs after ``kw.allocate()``). None: a private manager and
            warehouse, allocated at once and registered as ``self.kw`` (no sharing).
        group: the sharing group in ``kw`` (e.g. ``"stage1"``).
        cell: (c_out, c_in) of a private warehouse's cells (default: the whole kernel, m = 1).
        cells: n of a private warehouse (default ``ceil(ratio · m)``).
        ratio, manager_kwargs: for a private manager (see :class:`KWManager`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, dilation: int = 1, bias: bool = True,
                 kw: "KWManager | None" = None, group: str = "default",
                 cell: tuple[int, int] | None = None, cells: int | None = None,
                 ratio: float = 0.5, **manager_kwargs):
        super().__init__()
        check_positive("in_channels", in_channels)
        check_positive("out_channels", out_channels)
        check_positive("kernel_size", kernel_size)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kernel_size, kernel_size)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.group = group
        self.register_buffer("temperature", torch.zeros(()))
        self._tau = 0.0
        self.register_load_state_dict_post_hook(_sync_temperature)
        self.attention: KWAttention | None = None
        self.assemble: KernelAssembly | None = None
        self.cell: tuple[int, int, int, int] | None = None
        self.num_cells = 0            # n of its warehouse, after allocation
        self.first_mixture = 0        # its first cell's index t in its group (β)
        if kw is None:
            private = KWManager(ratio=ratio, **manager_kwargs)
            c_out, c_in = cell or (out_channels, in_channels)
            mixtures = (out_channels // c_out) * (in_channels // c_in)
            private.plan(group, KWPlan((c_out, c_in, kernel_size, kernel_size), mixtures, cells))
            self._manager = [private]
            private.reserve(self, group)
            private.allocate()
            self.kw = private
        else:
            if cell is not None or cells is not None or manager_kwargs:
                raise ValueError("cell, cells and manager settings are for a private warehouse; "
                                 "a shared one is configured and sized by its KWManager")
            self._manager = [kw]            # a list: the manager is not registered here
            kw.reserve(self, group)

    @property
    def manager(self) -> "KWManager":
        return self._manager[0]

    @property
    def mixtures(self) -> int:
        """m, the number of cells of this layer's kernel (after allocation)."""
        return self.attention.mixtures if self.attention is not None else 0

    def kernel_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels, *self.kernel_size)

    def _attach(self, cell: tuple[int, int, int, int], cells: int, first_mixture: int,
                assignment: torch.Tensor, manager: "KWManager") -> None:
        """Called by the manager's ``allocate``: build the attention branch and the assembly."""
        self.cell, self.num_cells, self.first_mixture = tuple(cell), cells, first_mixture
        m = (self.out_channels // cell[0]) * (self.in_channels // cell[1])
        self.attention = KWAttention(self.in_channels, m, cells, assignment, manager.reduction,
                                     manager.min_hidden, manager.norm, manager.zero_cell,
                                     manager.eps)
        self.assemble = KernelAssembly(self.out_channels, self.in_channels, cell)

    def set_temperature(self, tau: float) -> None:
        """τ of α' = (1 − τ) α + τ β (1 at the start of training, 0 after the warm-up)."""
        tau = float(tau)
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"temperature must be in [0, 1], got {tau}")
        self._tau = tau
        self.temperature.fill_(tau)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """The per-sample kernels [B, out, in, kh, kw] this layer applies to ``x``."""
        self._check_allocated()
        weight = self.assemble(self.attention(x, self._tau), self.manager.warehouse(self.group))
        return weight.view(-1, *self.kernel_shape())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_allocated()
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"KWConv2d({self.in_channels}, {self.out_channels}) expects "
                             f"N×{self.in_channels}×H×W input, got shape {tuple(x.shape)}")
        batch, _, height, width = x.shape
        weight = self.assemble(self.attention(x, self._tau), self.manager.warehouse(self.group))
        pointwise = (self.kernel_size == (1, 1) and self.stride == 1 and self.padding == 0)
        if pointwise and capturing():
            # the same 1×1 dynamic conv as a batched matmul: the exported graph keeps a
            # dynamic batch (ONNX Conv has a static group count)
            y = torch.matmul(weight.view(-1, self.out_channels, self.in_channels), x.flatten(2))
            y = y.view(-1, self.out_channels, height, width)
        else:
            y = F.conv2d(x.reshape(1, -1, height, width), weight, None, self.stride, self.padding,
                         self.dilation, groups=batch)
            y = y.view(batch, self.out_channels, *y.shape[2:])
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def _check_allocated(self) -> None:
        if self.attention is None:
            raise RuntimeError(f"KWConv2d of group {self.group!r} has no warehouse yet: call "
                               f"allocate() on its KWManager after building the network")

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, group={self.group!r}")
        if self.cell is not None:
            text += f", cell={self.cell}, mixtures={self.mixtures}, warehouse={self.num_cells}"
        return text


def _sync_temperature(module: KWConv2d, _incompatible) -> None:
    module._tau = float(module.temperature)


# --- the manager ----------------------------------------------------------------------------------
class KWManager(nn.Module):
    """The kernel warehouses of one network: collects layers per sharing group, then allocates.

    Args:
        ratio: n / T, warehouse cells per cell of the group's layers (the paper's
            cell_num_ratio; ½ is KW(1/2×)); n = ceil(ratio · T).
        reduction, min_hidden: attention hidden width max(⌊in · reduction⌋, min_hidden).
        norm: ``"bn"`` (BatchNorm1d, the official default) or ``"none"`` in the attention.
        zero_cell: the official extra "zero" entry in the normalisation (see module doc).
        eps: ε of the linear normalisation.

    Usage: build the layers with ``kw=manager, group=...`` (optionally inside
    ``with manager.slot(group, position)`` — see :meth:`slot`), call :meth:`allocate` once the
    network is built, and register the manager as a submodule of the network.
    """

    def __init__(self, ratio: float = 0.5, reduction: float = 1 / 16, min_hidden: int = 16,
                 norm: str = "bn", zero_cell: bool = True, eps: float = 1e-3):
        super().__init__()
        if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not ratio > 0:
            raise ValueError(f"kw ratio must be a positive number, got {ratio!r}")
        if norm not in NORMS:
            raise ValueError(f"kw norm must be one of {NORMS}, got {norm!r}")
        self.ratio, self.reduction, self.min_hidden = float(ratio), float(reduction), min_hidden
        self.norm, self.zero_cell, self.eps = norm, bool(zero_cell), float(eps)
        self.warehouses = nn.ParameterDict()
        self._plans: dict[str, KWPlan] = {}
        self._reserved: dict[str, list[tuple[KWConv2d, tuple | None]]] = {}
        self._slot: tuple[str, int, int] | None = None
        self._slot_counter = 0

    # --- building -------------------------------------------------------------------------------
    def plan(self, group: str, plan: KWPlan) -> None:
        """Size ``group``'s warehouse by ``plan`` instead of by the layers that reserve it."""
        _check_group(group)
        if group in self.warehouses:
            raise RuntimeError(f"warehouse {group!r} is already allocated")
        self._plans[group] = plan

    def reserve(self, layer: KWConv2d, group: str) -> None:
        """Called by a KWConv2d built with this manager: it will share ``group``'s warehouse."""
        _check_group(group)
        if group in self.warehouses:
            raise RuntimeError(f"warehouse {group!r} is already allocated; build every layer of "
                               f"a group before KWManager.allocate()")
        slot = None
        if self._slot is not None and self._slot[0] == group:
            slot = self._slot[1:]
        self._reserved.setdefault(group, []).append((layer, slot))

    @contextlib.contextmanager
    def slot(self, group: str, position: int):
        """Layers of ``group`` built inside this context are alternatives for layer position
        ``position`` (a supernet's candidates): each entry of the context restarts at the
        position's first cell, so every candidate of a position gets the same initial
        assignment β, and the positions follow one another (position p starts after the widest
        candidate of every earlier position)."""
        previous = self._slot
        self._slot_counter += 1
        self._slot = (group, int(position), self._slot_counter)
        try:
            yield self
        finally:
            self._slot = previous

    def allocate(self) -> None:
        """Create the warehouse of every group with reserved layers and attach its layers."""
        for group, entries in self._reserved.items():
            if group in self.warehouses:
                continue
            layers = [layer for layer, _ in entries]
            plan = self._plans.get(group)
            cell = plan.cell if plan is not None else plan_warehouse(
                [[layer.kernel_shape() for layer in layers]]).cell
            mixtures = []
            for layer in layers:
                out, cin, kh, kw = layer.kernel_shape()
                if out % cell[0] or cin % cell[1] or (kh, kw) != tuple(cell[2:]):
                    raise ValueError(f"KWConv2d {tuple(layer.kernel_shape())} does not split "
                                     f"into cells {tuple(cell)} of warehouse {group!r}")
                mixtures.append((out // cell[0]) * (cin // cell[1]))
            starts, used = _first_mixtures(entries, mixtures)
            total = plan.mixtures if plan is not None else used
            if used > total:
                raise ValueError(f"warehouse {group!r} is planned for {total} cells but its "
                                 f"layers need {used}")
            n = plan.num_cells(self.ratio) if plan is not None else max(
                1, math.ceil(self.ratio * total - 1e-9))
            warehouse = nn.Parameter(torch.empty(n, *cell))
            trunc_normal_(warehouse, std=0.02)            # QuadraNet's init of a conv kernel
            self.warehouses[group] = warehouse
            for layer, m, start in zip(layers, mixtures, starts):
                layer._attach(cell, n, start, self._assignment(start, m, n), self)

    def _assignment(self, start: int, mixtures: int, cells: int) -> torch.Tensor:
        """β of mixtures start … start+m−1: mixture t owns cell ⌊t·ratio⌋ if it is the first
        mixture mapped there, else the zero cell (or nothing)."""
        beta = torch.zeros(mixtures, cells + int(self.zero_cell))
        for row, t in enumerate(range(start, start + mixtures)):
            own = math.floor(t * self.ratio + 1e-9)
            first = t == 0 or math.floor((t - 1) * self.ratio + 1e-9) < own
            if first and own < cells:
                beta[row, own] = 1.0
            elif self.zero_cell:
                beta[row, cells] = 1.0
        return beta

    # --- queries ---------------------------------------------------------------------------------
    def warehouse(self, group: str) -> torch.Tensor:
        return self.warehouses[group]

    def layers(self, group: str) -> list[KWConv2d]:
        return [layer for layer, _ in self._reserved.get(group, [])]

    @property
    def groups(self) -> list[str]:
        return list(self._reserved)

    def extra_repr(self) -> str:
        sizes = ", ".join(f"{g}: {tuple(w.shape)}" for g, w in self.warehouses.items())
        return f"ratio={self.ratio}, norm={self.norm!r}, warehouses={{{sizes}}}"


def _check_group(group: str) -> None:
    if not isinstance(group, str) or not group or "." in group:
        raise ValueError(f"a warehouse group is a non-empty name without '.', got {group!r}")


def _first_mixtures(entries, mixtures) -> tuple[list[int], int]:
    """Each layer's first mixture index t in its group, and the cells the group uses.

    Layers outside a slot follow one another; layers inside slots start at their position's
    offset plus what earlier layers of the same context entry took.
    """
    sequential = 0
    fills: dict[tuple[int, int], int] = {}
    local = []
    for (layer, slot), m in zip(entries, mixtures):
        if slot is None:
            local.append(sequential)
            sequential += m
        else:
            key = tuple(slot)
            local.append(fills.get(key, 0))
            fills[key] = fills.get(key, 0) + m
    widths: dict[int, int] = {}
    for (position, _), fill in fills.items():
        widths[position] = max(widths.get(position, 0), fill)
    offsets, running = {}, sequential
    for position in sorted(widths):
        offsets[position] = running
        running += widths[position]
    starts = [start if slot is None else offsets[slot[0]] + start
              for (_, slot), start in zip(entries, local)]
    return starts, running


# --- temperature ----------------------------------------------------------------------------------
def kw_temperature(epoch: float, total_warmup_epochs: float, start: float = 1.0,
                   end: float = 0.0) -> float:
    """τ at ``epoch``: linear from ``start`` (1) at epoch 0 to ``end`` (0) at
    ``total_warmup_epochs``, constant after. Pass a fractional epoch (``epoch + step /
    steps_per_epoch``) to decay per iteration, as the official code does."""
    if total_warmup_epochs <= 0:
        return float(end)
    fraction = min(max(float(epoch) / float(total_warmup_epochs), 0.0), 1.0)
    return float(start + (end - start) * fraction)


def kw_layers(model: nn.Module) -> Iterator[KWConv2d]:
    return (m for m in model.modules() if isinstance(m, KWConv2d))


def set_kw_temperature(model: nn.Module, tau: float) -> int:
    """Set τ on every KWConv2d of ``model``; returns how many there are (0: no KW layers)."""
    count = 0
    for layer in kw_layers(model):
        layer.set_temperature(tau)
        count += 1
    return count
