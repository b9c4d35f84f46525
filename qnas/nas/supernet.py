"""The supernet: the space's macro-architecture with a mixed op at every searchable layer.

A :class:`MixedOp` holds the candidates allowed at its layer and runs

- ONE of them (``set_paths``): the weight step and evaluation — time and memory of one child;
- TWO of them (``set_pairs``, the arch step): the active one with autograd, the other under
  ``no_grad``. Its output is the active path's output passed straight through (the gates are
  one-hot, so ``y = Σ_k g_k o_k = o_active``); the layer records ``y`` and the detached outputs
  so the strategy can form ∂L/∂g_k = ⟨o_k, ∂L/∂y⟩ afterwards. No op runs inside a custom
  autograd function (NNI's lesson: that breaks DDP).

α is one [layers × candidates] parameter; candidates not allowed at a layer are masked out of
the softmax (``mask``). ``child(ops)`` builds the plain child network (the same class the space
builds) and copies the supernet's weights into it.

KernelWarehouse candidates (``k3e2kw``, …) of one stage share the stage's warehouse, held at
network level (``net.kw.warehouses.stage<s>``, the path a child QuadraNet uses) and sized for
the stage's maximal architecture in both, so the child state dict loads strictly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..errors import QnasError
from ..models.ops import IDENTITY, parse_op
from ..nn.common import CandidateView
from ..nn.mbconv import SharedMBConv
from ..nn.shared_quadra import SharedQuadraBlock
from ..runtime.checkpoints import load_verified
from ..space import SearchSpace, load_space
from .latency import masked_probs


class MixedOp(nn.Module):
    """One searchable layer: its allowed candidates (``candidates[op_name]``); one runs, or a
    group of them (an arch step: the active one with autograd, the others without)."""

    def __init__(self, index: int, names: Sequence[str], modules: dict[str, nn.Module],
                 shared: SharedMBConv | SharedQuadraBlock | None = None):
        super().__init__()
        self.index = index
        self.names = list(names)                 # the space's candidates, by α column
        self.candidates = nn.ModuleDict(modules)  # only the allowed ones
        self.shared = shared                     # the candidates' one set of weights, if shared
        self.path: int | None = None
        self.group: tuple[int, ...] | None = None  # (active, others…)
        self.record: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.group is not None:
            return self._forward_group(x)
        if self.path is None:
            raise RuntimeError("MixedOp has no path: call Supernet.set_paths or set_group first")
        return self.candidates[self.names[self.path]](x)

    def _forward_group(self, x: torch.Tensor) -> torch.Tensor:
        active, *others = self.group
        with torch.no_grad():       # (an identity returns x itself: detach it from x's graph)
            o_others = [self.candidates[self.names[k]](x).detach() for k in others]
        y = self.candidates[self.names[active]](x)
        if y is x:                      # identity: give the layer output its own autograd node
            y = x.view_as(x)
        if not y.requires_grad:         # nothing upstream needs grad: ∂L/∂y is still wanted
            y = y.detach().requires_grad_(True)
        self.record = (y, [y.detach(), *o_others])
        return y

    def extra_repr(self) -> str:
        return f"layer={self.index}, candidates={list(self.candidates)}"


class Supernet(nn.Module):
    """The space's network with a :class:`MixedOp` at every searchable layer, plus α.

    Args:
        space: the search space.
        num_classes: classifier width (the dataset's).
        alpha_init_std: α ~ N(0, std²) (ProxylessNAS: 1e-3).
        layer_scale_init: γ init of the candidate blocks (QuadraNet macro only; None:
            :func:`default_layer_scale`).
        weight_sharing: the QuadraBlock candidates of a layer share one set of weights
            (:class:`qnas.nn.shared_quadra.SharedQuadraBlock`); MBConv candidates always do.
    """

    def __init__(self, space: SearchSpace, num_classes: int, alpha_init_std: float = 1e-3,
                 layer_scale_init: float | None = None, weight_sharing: bool = True,
                 **net_kwargs):
        super().__init__()
        self.space = space
        self.weight_sharing = weight_sharing
        self.num_classes = num_classes
        block_kwargs = {}
        if layer_scale_init is None:
            layer_scale_init = default_layer_scale(space, weight_sharing)
        if space.macro == "quadranet":
            block_kwargs["layer_scale_init"] = layer_scale_init
            net_kwargs["layer_scale_init"] = layer_scale_init
        self.net = space.build_child(space.smallest_ops(), num_classes=num_classes,
                                     keep_identity=True, **net_kwargs)
        # KernelWarehouse candidates: the kw candidates of a stage share one warehouse, sized
        # for the stage's maximal architecture (space.kw_plan), as every child's is
        kw = space.kw_manager()
        mixed = []
        for slot in space.layers:
            if space.macro == "mbconv":          # one set of weights per layer (see SharedMBConv)
                op = MixedOp(slot.index, space.candidates, *shared_mbconv_candidates(space, slot))
            elif weight_sharing and shareable_quadra_layer(slot):
                op = MixedOp(slot.index, space.candidates,
                             *shared_quadra_candidates(slot, **block_kwargs))
            else:
                op = MixedOp(slot.index, space.candidates,
                             {name: space.build_layer_op(slot, name, kw=kw, **block_kwargs)
                              for name in slot.ops})
            op.apply(type(self.net)._init_weights)
            if isinstance(op.shared, SharedMBConv):
                op.shared.zero_init_last()
            self.net.stages[slot.stage][slot.position] = op
            mixed.append(op)
        if kw is not None:
            kw.allocate()
            self.net.kw = kw        # where the child's QuadraNet holds its warehouses
        self._mixed = tuple(mixed)            # not registered twice: they live in self.net
        self.register_buffer("mask", space.allowed_mask(), persistent=False)
        self.alpha = nn.Parameter(torch.randn(space.num_layers, len(space.candidates))
                                  * alpha_init_std)

    # --- parameters -----------------------------------------------------------------------
    @property
    def mixed_ops(self) -> tuple[MixedOp, ...]:
        return self._mixed

    def weight_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def probs(self) -> torch.Tensor:
        """softmax(α_l) over the allowed candidates, [layers × candidates]."""
        return masked_probs(self.alpha, self.mask)

    # --- which paths run ------------------------------------------------------------------
    def set_paths(self, paths: Sequence[int] | torch.Tensor) -> None:
        """Run ONE candidate per layer (α column indices)."""
        paths = [int(p) for p in (paths.tolist() if torch.is_tensor(paths) else paths)]
        self._check_len(paths)
        for op, path in zip(self._mixed, paths):
            if op.names[path] not in op.candidates:
                raise ValueError(f"candidate {op.names[path]!r} is not allowed at layer "
                                 f"{op.index}")
            op.path, op.group, op.record = path, None, None

    def set_ops(self, ops: Sequence[str]) -> None:
        """Run the child ``ops`` (op names)."""
        self.set_paths([self.space.candidates.index(op) for op in self.space.check_ops(ops)])

    def set_group(self, groups: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Run a group of candidates per layer: ``groups[l] = (active, others…)``; where
        ``valid[l, j]`` is False, ``groups[l, j]`` is padding and does not run."""
        self._check_len(groups)
        valid = torch.ones_like(groups, dtype=torch.bool) if valid is None else valid
        for op, members, keep in zip(self._mixed, groups.tolist(), valid.tolist()):
            op.path, op.record = None, None
            op.group = tuple(int(k) for k, ok in zip(members, keep) if ok)

    def set_pairs(self, pairs: torch.Tensor) -> None:
        """Run TWO candidates per layer: ``pairs[l] = (active, other)``."""
        self.set_group(pairs)

    def clear_paths(self) -> None:
        for op in self._mixed:
            op.path, op.group, op.record = None, None, None

    def records(self) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """Per layer, after a group forward: (y, [o_active, o_others…]) in the group's order."""
        if any(op.record is None for op in self._mixed):
            raise RuntimeError("no group forward has been run since set_group")
        return [op.record for op in self._mixed]

    def _check_len(self, seq) -> None:
        if len(seq) != len(self._mixed):
            raise ValueError(f"expected one entry per searchable layer ({len(self._mixed)}), "
                             f"got {len(seq)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # --- the child ------------------------------------------------------------------------
    def child_state_dict(self, ops: Sequence[str], keep_identity: bool = False) -> dict:
        """The supernet's weights renamed for ``space.build_child(ops, keep_identity=...)``."""
        ops = self.space.check_ops(ops)
        paths = self.space.child_layer_paths(ops, keep_identity)
        prefixes = {self.space.layer_path(l) + ".": l for l in range(len(ops))}
        kw_groups = self.space.kw_groups(ops)
        state = {}
        for name, value in self.net.state_dict().items():
            parts = name.split(".")
            prefix = ".".join(parts[:3]) + "."
            layer = prefixes.get(prefix) if parts[0] == "stages" else None
            if layer is None:
                if parts[:2] == ["kw", "warehouses"] and parts[2] not in kw_groups:
                    continue        # a stage warehouse the child does not use (no kw op there)
                state[name] = value
                continue
            if parts[3] == "shared":           # shared candidates' weights: sliced below
                continue
            # stages.<s>.<p>.candidates.<op>.<rest>
            op, rest = parts[4], ".".join(parts[5:])
            if op == ops[layer] and paths[layer] is not None:
                state[f"{paths[layer]}.{rest}"] = value
        for mixed, op, path in zip(self._mixed, ops, paths):
            if mixed.shared is not None and path is not None:
                view = mixed.candidates[op]
                state.update({f"{path}.{key}": value for key, value in
                              mixed.shared.candidate_state(view.kernel_size,
                                                           view.expansion).items()})
        return state

    def child(self, ops: Sequence[str], keep_identity: bool = False) -> nn.Module:
        """The child network of ``ops`` with the supernet's (inherited) weights."""
        child = self.space.build_child(ops, num_classes=self.num_classes,
                                       keep_identity=keep_identity)
        child.load_state_dict(self.child_state_dict(ops, keep_identity), strict=True)
        return child.to(self.alpha.device)


# Measured on digit-pairs with the default warm-up (SGD lr 0.025, grad clip 5): γ barely moves
# in a few hundred steps (0.1 → 0.098–0.101). Shallow space (quadranet_shallow, ≤ 6 layers a
# stage), shared candidates: at 0.1 the blocks add little (all-identity child 48.3% with the
# supernet's weights, others 48.7–49.8%), at 1.0 they matter (identity 39.7%, others 46–50%);
# independent candidates diverge at 1.0 (12–21%). Deep space (quadranet, 48 layers in stage 3):
# 1.0 does not train (loss 2.6 after 2 epochs), 0.3 trains slower than 0.1 (33% vs 39% after 3).
SHALLOW_STAGE_LAYERS = 8
SHALLOW_SHARED_LAYER_SCALE, LAYER_SCALE = 1.0, 0.1


def default_layer_scale(space: SearchSpace, weight_sharing: bool) -> float:
    """γ init of a supernet's QuadraBlocks: 1.0 for shared candidates when no stage has more
    than :data:`SHALLOW_STAGE_LAYERS` searchable layers (the residual stream stays bounded),
    else 0.1."""
    if weight_sharing and max(space.depths) <= SHALLOW_STAGE_LAYERS:
        return SHALLOW_SHARED_LAYER_SCALE
    return LAYER_SCALE


def shareable_quadra_layer(slot) -> bool:
    """Whether a QuadraNet layer's candidates can share one set of weights: two or more plain
    QuadraBlocks (KernelWarehouse candidates have their own sharing), besides the identity."""
    kinds = [parse_op(name)[0] for name in slot.ops]
    blocks = [kind for kind in kinds if kind != IDENTITY]
    return len(blocks) >= 2 and all(kind == "quadra" for kind in blocks)


def shared_quadra_candidates(slot, **block_kwargs) -> tuple[dict[str, nn.Module],
                                                            SharedQuadraBlock]:
    """The candidates of a QuadraNet layer as views of ONE :class:`SharedQuadraBlock` (and the
    identity where it is allowed)."""
    parsed = {name: parse_op(name) for name in slot.ops}
    blocks = {name: kwargs for name, (kind, kwargs) in parsed.items() if kind != IDENTITY}
    shared = SharedQuadraBlock(slot.dim, [kw["kernel_size"] for kw in blocks.values()],
                               [kw["expansion"] for kw in blocks.values()], **block_kwargs)
    modules = {name: (CandidateView(shared, blocks[name]["kernel_size"],
                                      blocks[name]["expansion"])
                      if name in blocks else nn.Identity()) for name in slot.ops}
    return modules, shared


def shared_mbconv_candidates(space: SearchSpace, slot) -> tuple[dict[str, nn.Module],
                                                                 SharedMBConv]:
    """The candidates of an mbconv-macro layer: views of ONE :class:`SharedMBConv` (and the
    identity where it is allowed)."""
    parsed = {name: parse_op(name) for name in slot.ops}
    blocks = {name: kwargs for name, (kind, kwargs) in parsed.items() if kind != IDENTITY}
    shared = SharedMBConv(slot.in_dim, slot.dim, [kw["kernel_size"] for kw in blocks.values()],
                          [kw["expansion"] for kw in blocks.values()], slot.stride)
    modules = {name: (CandidateView(shared, blocks[name]["kernel_size"], blocks[name]["expansion"])
                      if name in blocks else nn.Identity()) for name in slot.ops}
    return modules, shared


# --- supernet checkpoints ---------------------------------------------------------------------
# A search checkpoint (checkpoint-<step>.pt) and train-supernet's supernet.pt both hold the
# supernet's state dict with the space's name and hash, the class count and the run's config.

SEARCH_CHECKPOINT_FORMAT = "qnas-search-checkpoint"
SUPERNET_FORMAT = "qnas-supernet"


def read_supernet_checkpoint(path: str | Path) -> dict:
    """A search checkpoint or ``supernet.pt``, checksum-verified (QnasError otherwise)."""
    state = load_verified(path)
    if not isinstance(state, dict) or state.get("format") not in (SEARCH_CHECKPOINT_FORMAT,
                                                                  SUPERNET_FORMAT):
        raise QnasError(f"{path} is not a qnas search or supernet checkpoint")
    return state


def load_supernet_weights(supernet: Supernet, path: str | Path) -> None:
    """Load a warmed-up supernet's weights (train-supernet's supernet.pt or a search
    checkpoint) into ``supernet``; α stays as it is. Refuses another space or class count."""
    state = read_supernet_checkpoint(path)
    if state["space_hash"] != supernet.space.hash:
        raise QnasError(f"supernet {path} was trained for space '{state['space']}' (hash "
                        f"{state['space_hash']}), not '{supernet.space.name}' (hash "
                        f"{supernet.space.hash}); train one with 'qnas train-supernet'")
    if state["num_classes"] != supernet.num_classes:
        raise QnasError(f"supernet {path} has {state['num_classes']} classes, the data has "
                        f"{supernet.num_classes}; train it on the same data")
    shared = bool(state["config"].get("weight_sharing", False))
    if shared != supernet.weight_sharing:
        flag = "--weight-sharing" if shared else "--no-weight-sharing"
        raise QnasError(f"supernet {path} was trained with{'' if shared else 'out'} weight "
                        f"sharing; search from it with {flag}, or train one that matches")
    weights = {k: v for k, v in state["supernet"].items() if k != "alpha"}
    supernet.load_state_dict({**weights, "alpha": supernet.alpha.detach()}, strict=True)


def load_supernet(path: str | Path, space: SearchSpace | None = None) -> Supernet:
    """Rebuild the supernet of a search checkpoint or ``supernet.pt`` (weights AND α), in eval
    mode on the CPU. ``space`` defaults to the one recorded in the checkpoint; a space whose
    hash differs from the recorded one is refused."""
    state = read_supernet_checkpoint(path)
    if space is None:
        space = load_space(state["config"]["space"])
    if state["space_hash"] != space.hash:
        raise QnasError(f"checkpoint {path} was made for space '{state['space']}' (hash "
                        f"{state['space_hash']}), not '{space.name}' (hash {space.hash})")
    config = state["config"]
    supernet = Supernet(space, int(state["num_classes"]),
                        layer_scale_init=config.get("layer_scale_init"),
                        weight_sharing=bool(config.get("weight_sharing", False)))
    try:
        supernet.load_state_dict(state["supernet"], strict=True)
    except RuntimeError as err:
        raise QnasError(f"checkpoint {path} does not fit space '{space.name}': "
                        f"{str(err).splitlines()[0]}") from None
    return supernet.eval()
