"""The strategy: ProxylessNAS's binary-gate, path-level sampling (how α is learned).

Weight step: one path per layer, sampled from p = softmax(α) (uniformly during warm-up); only
that path runs, only its weights get gradients (the others keep ``grad = None`` and SGD skips
them).

Arch step (on a held-out split), ``grad_mode="two"`` (the paper's estimator): two distinct
paths S = {i, j} per layer sampled from p, renormalised p' over S, the active one sampled from
p'; gates one-hot on it. Then

    ∂L/∂g_k  = ⟨o_k, ∂L/∂y⟩                                   (k ∈ S)
    ∂L/∂α_m  = Σ_{k∈S} ∂L/∂g_k · p'_k (δ_km − p'_m)            (m ∈ S; 0 elsewhere)

plus the latency term's gradient through softmax(α) (autograd), an Adam step on α, and the
probability-preserving rescale: α_i, α_j shift by one constant so that the total probability
of the ops NOT in S is what it was before the step.

``grad_mode="full"`` (the official code's default ``full_v2``, and NNI's): S is every allowed
candidate, p' = p, the active path ~ p; the same formula, no rescale. Every candidate runs
forward in the arch step (without autograd), so it costs more and is less noisy.

**Mixed precision** (``precision``, :class:`qnas.runtime.precision.Precision`): the forward
passes of both steps run under autocast; the losses, the latency term and the whole α gradient
are formed in fp32/fp64 outside it — the gate gradients ⟨o_k, ∂L/∂y⟩ multiply the recorded
16-bit outputs and gradients in fp64, so autocast changes their inputs' rounding, not the
formula. In fp16 the weight step's loss is scaled by the run's GradScaler and the arch step's by
its current scale (divided out again in fp64); an arch step whose gradients overflowed leaves α
unchanged (``stats["skipped"]``), as the scaler skips such a weight step.

All randomness of a step comes from a ``torch.Generator`` seeded by (seed, step, stream), so
every DDP rank can draw the same paths, and a resumed run draws what an uninterrupted one would.
:func:`compute_arch_gradient` is the one place the α gradient is formed (an all-reduce goes
there under DDP; run the arch forward on the bare module, not the DDP wrapper).
"""
from __future__ import annotations

import contextlib
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..runtime import distributed
from ..runtime.precision import Precision
from .config import OptimConfig
from .latency import LatencyLoss, TableView, expected_latency_ms, masked_probs
from .supernet import Supernet

WEIGHT_STREAM, ARCH_STREAM = 0, 1


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """The generator for one step's path sampling: a pure function of (seed, step, stream)."""
    state = np.random.SeedSequence([int(seed), int(step), int(stream)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]) >> 1)


def uniform_probs(mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(torch.float64)
    return mask / mask.sum(-1, keepdim=True)


def sample_paths(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One candidate per layer ~ probs[l] → LongTensor [layers]."""
    return torch.multinomial(probs.detach().to(torch.float64).cpu(), 1,
                             generator=generator).squeeze(1)


def sample_pairs(alpha: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
    """Two distinct candidates per layer ~ p (without replacement), then the active one ~ p'
    (p renormalised over the two) → LongTensor [layers × 2], column 0 the active path."""
    alpha = alpha.detach().to(torch.float64).cpu()
    mask = mask.cpu()
    probs = masked_probs(alpha, mask)
    probs = torch.where(mask, probs.clamp_min(1e-12), torch.zeros_like(probs))
    pairs = torch.multinomial(probs, 2, replacement=False, generator=generator)
    renormalised = torch.softmax(alpha.gather(1, pairs), dim=1)
    first_active = torch.multinomial(renormalised, 1, generator=generator).squeeze(1) == 0
    return torch.where(first_active[:, None], pairs, pairs.flip(1))


def sample_full(alpha: torch.Tensor, mask: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Every allowed candidate per layer, the active one ~ p first → ``(groups, valid)``, both
    [layers × candidates]; where a layer allows fewer, ``valid`` is False on the padding."""
    alpha = alpha.detach().to(torch.float64).cpu()
    mask = mask.cpu()
    active = torch.multinomial(masked_probs(alpha, mask), 1, generator=generator).squeeze(1)
    groups, valid = [], []
    for layer, first in enumerate(active.tolist()):
        others = [k for k in torch.nonzero(mask[layer]).flatten().tolist() if k != first]
        members = [first, *others]
        padding = mask.shape[1] - len(members)
        groups.append(members + [first] * padding)
        valid.append([True] * len(members) + [False] * padding)
    return torch.tensor(groups), torch.tensor(valid)


def arch_gradient(alpha: torch.Tensor, groups: torch.Tensor, gate_grads: torch.Tensor,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """ProxylessNAS's binary-gate α gradient over the group S of each layer.

    ``gate_grads[l, s] = ∂L/∂g`` of path ``groups[l, s]``; returns ∂L/∂α [layers × candidates]
    with ``Σ_{k∈S} ∂L/∂g_k · p'_k (δ_km − p'_m)`` at m ∈ S and 0 elsewhere, p' the softmax of α
    over S (``valid`` marks S's members; default: every column).
    """
    alpha = alpha.detach()
    groups = groups.to(alpha.device)
    valid = (torch.ones_like(groups, dtype=torch.bool) if valid is None
             else valid.to(alpha.device))
    logits = alpha.gather(1, groups).masked_fill(~valid, float("-inf"))
    renormalised = torch.softmax(logits, dim=1)                          # p' over S
    gate_grads = torch.where(valid, gate_grads.to(alpha.dtype), torch.zeros_like(renormalised))
    weighted = (gate_grads * renormalised).sum(1, keepdim=True)          # Σ_k ∂L/∂g_k p'_k
    grad_s = renormalised * gate_grads - renormalised * weighted         # per m ∈ S
    return torch.zeros_like(alpha).scatter_add_(1, groups, torch.where(valid, grad_s, 0.0))


def rescale_alpha_(alpha: torch.Tensor, old_alpha: torch.Tensor, pairs: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """Shift α over S (both sampled paths, one constant per layer) so that the total probability
    of the allowed ops NOT in S equals its value under ``old_alpha``. In place; returns α."""
    with torch.no_grad():
        mask = mask.to(alpha.device)
        pairs = pairs.to(alpha.device)
        in_s = torch.zeros_like(mask).scatter_(1, pairs, True)
        out_s = mask & ~in_s

        def lse(values, where):
            return torch.logsumexp(values.to(torch.float64).masked_fill(~where, float("-inf")),
                                   dim=1)

        shift = lse(old_alpha, in_s) - lse(alpha, in_s)
        has_out = out_s.any(1)
        if bool(has_out.any()):
            correction = lse(alpha, out_s) - lse(old_alpha, out_s)
            shift = torch.where(has_out, shift + torch.nan_to_num(correction), shift)
        alpha.add_(torch.where(in_s, shift[:, None], torch.zeros_like(shift[:, None]))
                   .to(alpha.dtype))
    return alpha


@contextlib.contextmanager
def no_weight_grads(params: Iterable[torch.nn.Parameter]):
    """Weights take no part in the arch step's graph (saves memory; α-only step)."""
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def compute_arch_gradient(supernet: Supernet, loss: torch.Tensor, groups: torch.Tensor,
                          valid: torch.Tensor | None = None,
                          loss_scale: float = 1.0) -> torch.Tensor:
    """∂L/∂α after a group forward: the gate part (exact formula) + the latency part.

    The one place the α gradient is formed; under torchrun it is averaged over the ranks here
    (each rank saw its shard of the batch, all ranks the same paths). The recorded outputs may
    be 16-bit (autocast): the gate gradients are formed in fp64 and the result has α's dtype
    (fp32). ``loss_scale`` (fp16): the gradients are taken of ``loss × loss_scale`` so that
    small ones do not underflow in 16 bits, and divided by it in fp64; the result is non-finite
    when they overflowed.
    """
    records = supernet.records()
    outputs = [y for y, _ in records]
    inputs = outputs + ([supernet.alpha] if supernet.alpha.requires_grad else [])
    scaled = loss.float() * loss_scale if loss_scale != 1.0 else loss
    grads = torch.autograd.grad(scaled, inputs, allow_unused=True)
    # on α's device: a GPU step then waits for no per-layer copy to the host
    gate = torch.zeros(groups.shape, dtype=torch.float64, device=supernet.alpha.device)
    for layer, ((_, members), grad) in enumerate(zip(records, grads)):
        if grad is not None:
            grad = grad.to(torch.float64)
            # members: the valid ones, in order
            gate[layer, :len(members)] = torch.stack(
                [(output.to(torch.float64) * grad).sum() for output in members])
    if loss_scale != 1.0:
        gate /= loss_scale
    alpha_grad = arch_gradient(supernet.alpha.detach(), groups, gate, valid)
    latency_grad = grads[len(outputs)] if len(grads) > len(outputs) else None
    if latency_grad is not None:
        alpha_grad = alpha_grad + (latency_grad.to(torch.float64) / loss_scale).to(
            alpha_grad.dtype)
    return distributed.all_reduce_mean(alpha_grad)


class ProxylessStrategy:
    """Weight and arch steps of ProxylessNAS on a :class:`Supernet` (separate optimisers).

    Args:
        supernet: the supernet.
        config: optimiser settings.
        seed: base seed of the per-step path generators.
        table: the latency table (None: no latency term).
        latency_loss: how CE and E[LAT] combine (None: CE only).
        weight_model: what the weight step calls instead of the supernet — under torchrun the
            DistributedDataParallel wrapper of ``supernet.net`` (it averages weight gradients).
        precision: autocast and loss scaling (:class:`qnas.runtime.precision.Precision`;
            default fp32 on the supernet's device).
    """

    def __init__(self, supernet: Supernet, config: OptimConfig | None = None, seed: int = 0,
                 table: TableView | None = None, latency_loss: LatencyLoss | None = None,
                 weight_model: torch.nn.Module | None = None, precision: Precision | None = None):
        self.supernet = supernet
        self.precision = precision if precision is not None else \
            Precision("fp32", supernet.alpha.device)
        self.weight_model = weight_model if weight_model is not None else supernet
        self.config = config or OptimConfig()
        self.seed = seed
        self.table = table
        self.latency_loss = latency_loss
        c = self.config
        self.weight_optimizer = torch.optim.SGD(
            supernet.weight_parameters(), lr=c.weight_lr, momentum=c.weight_momentum,
            nesterov=c.weight_nesterov, weight_decay=c.weight_decay)
        self.arch_optimizer = torch.optim.Adam(
            supernet.arch_parameters(), lr=c.arch_lr, betas=tuple(c.arch_betas), eps=c.arch_eps,
            weight_decay=c.arch_weight_decay)

    # --- weight step ----------------------------------------------------------------------
    def sample_paths(self, step: int, uniform: bool) -> torch.Tensor:
        net = self.supernet
        probs = uniform_probs(net.mask) if uniform else net.probs().detach()
        return sample_paths(probs, step_generator(self.seed, step, WEIGHT_STREAM))

    def weight_step(self, images: torch.Tensor, labels: torch.Tensor, step: int,
                    uniform: bool = False, paths: torch.Tensor | None = None) -> dict:
        """One SGD step of the weights on ONE sampled path per layer (with ``sandwich``, on the
        sum of its loss and the largest child's)."""
        net = self.supernet
        net.train()
        paths = self.sample_paths(step, uniform) if paths is None else paths
        self.weight_optimizer.zero_grad(set_to_none=True)
        if self.config.sandwich:        # the largest child's gradient first; the step adds both
            net.set_ops(net.space.largest_ops())
            with self.precision.autocast():
                largest_loss = F.cross_entropy(self.weight_model(images).float(), labels)
            self.precision.backward(largest_loss)
        net.set_paths(paths)
        with self.precision.autocast():
            logits = self.weight_model(images)
        loss = F.cross_entropy(logits.float(), labels)
        self.precision.backward(loss)
        clip = None
        if self.config.grad_clip:
            def clip():
                params = [p for p in net.weight_parameters() if p.grad is not None]
                torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.precision.step(self.weight_optimizer, clip)
        net.clear_paths()
        correct = (logits.detach().argmax(1) == labels).sum().item()
        return {"loss": loss.item(), "correct": correct, "count": len(labels)}

    # --- arch step ------------------------------------------------------------------------
    def sample_pairs(self, step: int) -> torch.Tensor:
        net = self.supernet
        return sample_pairs(net.alpha, net.mask, step_generator(self.seed, step, ARCH_STREAM))

    def sample_group(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The arch step's paths per layer: two (``grad_mode="two"``) or all (``"full"``)."""
        if self.config.grad_mode == "full":
            net = self.supernet
            return sample_full(net.alpha, net.mask, step_generator(self.seed, step, ARCH_STREAM))
        return self.sample_pairs(step), None

    def arch_loss(self, ce: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.table is None or self.latency_loss is None:
            return ce, None
        expected = expected_latency_ms(self.supernet.alpha, self.table)
        return self.latency_loss(ce, expected), expected

    def arch_gradient(self, images: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor,
                      valid: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """The group forward and ∂L/∂α (nothing is updated)."""
        net = self.supernet
        net.train()
        net.set_group(groups, valid)
        try:
            with no_weight_grads(net.weight_parameters()):
                with self.precision.autocast():
                    logits = net(images)
                # the loss, E[LAT] and the α gradient in fp32 (see the module doc)
                ce = F.cross_entropy(logits.float(), labels)
                loss, expected = self.arch_loss(ce)
                alpha_grad = compute_arch_gradient(net, loss, groups, valid,
                                                   self.precision.loss_scale())
        finally:
            net.clear_paths()
        return alpha_grad, {"ce": ce.item(), "loss": loss.item(),
                            "expected_ms": None if expected is None else expected.item()}

    def arch_step(self, images: torch.Tensor, labels: torch.Tensor, step: int,
                  pairs: torch.Tensor | None = None) -> dict:
        """One Adam step of α; in ``two`` mode then the probability-preserving rescale."""
        net = self.supernet
        groups, valid = self.sample_group(step) if pairs is None else (pairs, None)
        alpha_grad, stats = self.arch_gradient(images, labels, groups, valid)
        stats["skipped"] = self.precision.scaled and not bool(torch.isfinite(alpha_grad).all())
        if stats["skipped"]:        # fp16 gradients overflowed: leave α as it is
            return stats
        old_alpha = net.alpha.detach().clone()
        self.arch_optimizer.zero_grad(set_to_none=True)
        net.alpha.grad = alpha_grad.to(net.alpha.dtype)
        self.arch_optimizer.step()
        self.arch_optimizer.zero_grad(set_to_none=True)
        if groups.shape[1] == 2 and valid is None:      # two mode: ProxylessNAS's rescale
            rescale_alpha_(net.alpha.data, old_alpha, groups, net.mask)
        return stats

    # --- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"weight_optimizer": self.weight_optimizer.state_dict(),
                "arch_optimizer": self.arch_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
