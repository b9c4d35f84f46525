"""Latency in the search: the differentiable expected latency, the loss forms.

The latency table itself (milliseconds of candidate k at layer l, plus the fixed part) comes
from :func:`qnas.predictors.lut.build_lut`; this module only needs its ``ms`` tensor
[layers × candidates] and ``fixed_ms``. Everything here is plain torch on α, so the gradient
of the expected latency reaches α (NNI 2.x rebuilt the value with ``torch.tensor([...])`` and
silently cut it; :func:`expected_latency_ms` must never do that).

``E[LAT] = F + Σ_l Σ_k softmax(α_l)_k · LUT[l, k]``
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import QnasError
from ..predictors.devices import list_devices
from ..predictors.lut import build_lut
from ..predictors.registry import get
from ..units import format_ms
from .config import check_loss

# --- the table view the search uses ---------------------------------------------------------

@dataclass
class TableView:
    """What the search needs from a latency table: ``ms`` [layers × candidates] (float64),
    ``fixed_ms`` and ``mask`` (True where the candidate is allowed at that layer).

    Built from a :class:`qnas.predictors.lut.LatencyTable` with :func:`table_view`, or by hand
    (tests, notebooks) with :func:`hand_table`.
    """

    ms: torch.Tensor
    fixed_ms: float
    mask: torch.Tensor
    candidates: list[str]
    device: str = "hand-made"
    source: str = "hand-made"
    version: str = "0"
    known_error: str = "n/a"

    def __post_init__(self):
        self.ms = torch.as_tensor(self.ms, dtype=torch.float64)
        self.mask = torch.as_tensor(self.mask, dtype=torch.bool)
        if self.ms.dim() != 2 or self.ms.shape != self.mask.shape:
            raise ValueError(f"latency table must be [layers × candidates] with a mask of the same "
                             f"shape; got {tuple(self.ms.shape)} and {tuple(self.mask.shape)}")
        if not bool(self.mask.any(1).all()):
            raise ValueError("every layer needs at least one allowed candidate")
        allowed = self.ms[self.mask]
        if not bool(torch.isfinite(allowed).all()) or bool((allowed < 0).any()):
            raise ValueError("latencies of allowed candidates must be finite and ≥ 0")
        # disallowed entries never take part in a sum: make them 0 so 0·x stays 0
        self.ms = torch.where(self.mask, self.ms, torch.zeros_like(self.ms))
        self.fixed_ms = float(self.fixed_ms)

    @property
    def num_layers(self) -> int:
        return self.ms.shape[0]

    def latency_of(self, choice: Sequence[int] | Sequence[str]) -> float:
        """F + Σ_l LUT[l, k_l], summed left to right in float64 (the derivation uses the very
        same order, so 'within budget' means the same thing everywhere)."""
        index = self.indices(choice)
        total = self.fixed_ms
        for layer, k in enumerate(index):
            total += float(self.ms[layer, k])
        return total

    def indices(self, choice: Sequence[int] | Sequence[str]) -> list[int]:
        choice = list(choice)
        if len(choice) != self.num_layers:
            raise QnasError(f"expected {self.num_layers} ops, got {len(choice)}")
        index = [self.candidates.index(c) if isinstance(c, str) else int(c) for c in choice]
        for layer, k in enumerate(index):
            if not bool(self.mask[layer, k]):
                raise QnasError(f"op {self.candidates[k]!r} is not allowed at layer {layer}")
        return index

    def min_ms(self) -> float:
        return self.latency_of(self._pick(torch.argmin))

    def max_ms(self) -> float:
        return self.latency_of(self._pick(torch.argmax))

    def _pick(self, reduce) -> list[int]:
        big = torch.finfo(torch.float64).max
        fill = big if reduce is torch.argmin else -big
        return reduce(torch.where(self.mask, self.ms, torch.full_like(self.ms, fill)), 1).tolist()


def hand_table(ms, fixed_ms: float = 0.0, mask=None, candidates: Sequence[str] | None = None,
               device: str = "hand-made") -> TableView:
    """A latency table from a hand-made [layers × candidates] array (tests, notebooks)."""
    ms = torch.as_tensor(ms, dtype=torch.float64)
    mask = torch.ones_like(ms, dtype=torch.bool) if mask is None else mask
    candidates = list(candidates) if candidates else [f"op{k}" for k in range(ms.shape[1])]
    return TableView(ms, fixed_ms, mask, candidates, device=device)


def table_view(lut, mask: torch.Tensor | None = None) -> TableView:
    """Wrap a :class:`qnas.predictors.lut.LatencyTable` (its ``allowed`` mask, or ``mask``)."""
    allowed = getattr(lut, "allowed", None)
    if mask is None:
        mask = allowed if allowed is not None else torch.ones(tuple(lut.ms.shape), dtype=torch.bool)
    elif allowed is not None and not torch.equal(torch.as_tensor(allowed, dtype=torch.bool),
                                                 torch.as_tensor(mask, dtype=torch.bool)):
        raise QnasError("the latency table allows other ops per layer than the space does; "
                        "rebuild the table for this space")
    mask = torch.as_tensor(mask, dtype=torch.bool)
    ms = torch.as_tensor(lut.ms, dtype=torch.float64)
    ms = torch.where(mask, ms, torch.zeros_like(ms))
    return TableView(ms, float(lut.fixed_ms), mask, list(lut.candidates), device=lut.device,
                     source=lut.source, version=str(lut.version), known_error=lut.known_error)


# --- the differentiable part ----------------------------------------------------------------

def masked_probs(alpha: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(α_l) over the candidates allowed at each layer (0 for the others)."""
    return torch.softmax(alpha.masked_fill(~mask, float("-inf")), dim=-1)


def expected_latency_ms(alpha: torch.Tensor, table: TableView) -> torch.Tensor:
    """``E[LAT] = F + Σ_l Σ_k softmax(α_l)_k · LUT[l, k]`` as a float64 scalar with a graph to α.

    ∂E/∂α_lm = p_lm · (LUT[l, m] − Σ_k p_lk LUT[l, k]).
    """
    probs = masked_probs(alpha.to(torch.float64), table.mask.to(alpha.device))
    return table.fixed_ms + (probs * table.ms.to(alpha.device)).sum()


@dataclass(frozen=True)
class LatencyLoss:
    """The search loss with a latency term, one of :data:`LOSS_FORMS`:

    - ``add-linear`` (ProxylessNAS): ``CE + λ · (E − T) / T``
    - ``mul-log`` (ProxylessNAS/MnasNet): ``CE · exp(β · log(E / T)) = CE · (E / T)^β``.
      ProxylessNAS writes ``CE · (log E / log T)^β`` with E, T in ms, which is 0 at E = 1 ms,
      NaN below it and flips sign for T < 1 ms — every GPU budget is there. The ratio form is the
      same at E = T (a factor of 1), monotone in E for any unit and any budget, and finite with a
      finite gradient for every E > 0; near E = T it pushes log T times harder than
      ProxylessNAS's at the same β (β 0.6 at 300 ms ≈ their β 3.4).
    - ``hinge`` (NNI 3 "positive"): ``CE + λ · max(0, E / T − 1)``
    """

    form: str
    target_ms: float
    lam: float = 0.1
    beta: float = 0.6

    def __post_init__(self):
        check_loss(self.form, self.target_ms, self.lam, self.beta)

    def __call__(self, ce: torch.Tensor, expected_ms: torch.Tensor) -> torch.Tensor:
        target = self.target_ms
        expected = expected_ms.to(ce.dtype)
        if self.form == "add-linear":
            return ce + self.lam * (expected - target) / target
        if self.form == "mul-log":
            return ce * torch.exp(self.beta * torch.log(expected / target))
        return ce + self.lam * torch.clamp(expected / target - 1.0, min=0.0)


def entropy(alpha: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean per-layer entropy of softmax(α_l) in nats (log K_l when uniform)."""
    probs = masked_probs(alpha.detach(), mask)
    logp = torch.log(probs.clamp_min(1e-30))
    return float(-(probs * logp).sum(-1).mean())


# --- the latency table of a space on a device, and what a budget means --------------------------

def latency_table(space, predictor, cache_dir=None) -> TableView:
    """The space's latency table on ``predictor``'s device at the space's deployment shape."""
    lut = build_lut(space, predictor, input_shape=space.input_shape, cache_dir=cache_dir)
    if list(lut.candidates) != list(space.candidates):
        raise QnasError(f"latency table candidates {lut.candidates} differ from the space's "
                        f"{space.candidates}; rebuild the table")
    return table_view(lut, space.allowed_mask())


def check_budgets(table: TableView, budgets: Sequence[float], space_name: str) -> None:
    """Refuse budgets no child of the space meets (one line naming the smallest latency)."""
    smallest = table.min_ms()
    for budget in budgets:
        if budget < smallest:
            raise QnasError(f"latency budget {format_ms(budget)} on {table.device} cannot be met "
                            f"by space '{space_name}': its smallest architecture takes "
                            f"{format_ms(smallest)}; use --latency {smallest:.4g}ms or more")


def describe_range(table: TableView, budgets: Sequence[float], space) -> list[str]:
    """What a search prints before it starts: the latency range of the space's children, the
    budget(s), and whether a budget binds."""
    smallest, largest = table.min_ms(), table.max_ms()
    lines = [f"{table.device}: children of '{space.name}' take {format_ms(smallest)} to "
             f"{format_ms(largest)} at {'x'.join(map(str, space.input_shape))} "
             f"[{table.source} {table.version}]; budget "
             f"{', '.join(format_ms(b) for b in budgets)}"]
    loose = [b for b in budgets if b >= largest]
    if loose:
        lines.append(f"note: the budget {', '.join(format_ms(b) for b in loose)} does not bind "
                     f"— even the largest child ({format_ms(largest)}) fits")
    return lines


def within_budget(table_ms: float | None, predicted_ms: float, budget_ms: float) -> bool:
    """THE rule for "within budget": the derivation's table sum F + Σ LUT (what the hard
    constraint was solved on) AND the predictor's whole-network number both fit the budget
    (they differ where the predictor is not additive over layers)."""
    table_fits = table_ms is None or table_ms <= budget_ms
    return bool(table_fits and predicted_ms <= budget_ms)


def predict_everywhere(module, input_shape, skip: str | None = None,
                       devices: Sequence[str] | None = None) -> dict:
    """``{device: {latency_ms, source, version, known_error}}`` for ``devices`` (default: every
    device usable here; host-cuda only with a GPU); a device that fails gets ``{error}``."""
    out = {}
    for device in (list_devices() if devices is None else devices):
        if device == skip:
            continue
        try:
            prediction = get(device).predict(module, input_shape)
        except QnasError as err:
            out[device] = {"error": str(err)}
            continue
        out[device] = {"latency_ms": float(prediction.latency_ms), "source": prediction.source,
                       "version": prediction.version, "known_error": prediction.known_error}
    return out
