"""Deriving the child under a hard latency constraint.

Arg-max per layer can exceed the budget. :func:`derive_exact` returns instead the most probable
architecture that fits: max Σ_l log p_l,k  s.t.  F + Σ_l LUT[l, k] ≤ T — a multiple-choice
knapsack, solved exactly by dynamic programming over the Pareto frontier of
(latency, log-probability) pairs, one layer at a time. Latencies are summed left to right in
float64 exactly as :meth:`TableView.latency_of` sums them, and dropping dominated partial
solutions is exact in floating point too (rounding is monotone), so "within budget" and
"optimal" hold for the numbers a user will see, not for a discretised proxy.

:func:`derive_greedy` is the baseline (arg-max, then repeatedly the swap with the best
Δlog p / Δlatency until within budget); :func:`derive_brute_force` enumerates small instances.

:func:`sample_in_band` draws the candidates of the ``alpha+eval`` derivation (the search picks
among them by their top-1 with the supernet's weights, :meth:`qnas.nas.search.SearchRun.finish`):
distinct children drawn from softmax(α) whose latency uses the budget, [(1 − band)·T, T].
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import QnasError
from ..units import format_ms
from .latency import TableView, masked_probs


@dataclass
class Derived:
    """A derived architecture: candidate index per layer, its ops, latency and log-probability."""

    choice: list[int]
    ops: list[str]
    latency_ms: float
    log_prob: float
    target_ms: float
    method: str


def log_probs_of(alpha: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """log softmax(α_l) over the allowed candidates, as float64 numpy (−inf where not allowed)."""
    probs = masked_probs(alpha.detach().to(torch.float64).cpu(), mask.cpu())
    with np.errstate(divide="ignore"):
        return np.log(probs.numpy())


def _check(log_probs: np.ndarray, table: TableView) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    log_probs = np.asarray(log_probs, dtype=np.float64)
    ms = table.ms.numpy()
    mask = table.mask.numpy()
    if log_probs.shape != ms.shape:
        raise ValueError(f"log-probabilities {log_probs.shape} and latency table {ms.shape} "
                         f"differ in shape")
    allowed = mask & np.isfinite(log_probs)
    if not allowed.any(1).all():
        raise ValueError("every layer needs an allowed candidate with finite log-probability")
    return log_probs, ms, allowed


def _infeasible(table: TableView, target_ms: float) -> QnasError:
    smallest = table.min_ms()
    return QnasError(f"latency budget {format_ms(target_ms)} on {table.device} cannot be met: "
                     f"the smallest architecture of the space takes {format_ms(smallest)}; "
                     f"use a budget of at least {smallest:.6g}ms")


def derived_of(choice, log_probs, table, target_ms, method) -> Derived:
    """The :class:`Derived` record of ``choice`` (its ops, latency and log-probability)."""
    choice = [int(k) for k in choice]
    return Derived(choice=choice, ops=[table.candidates[k] for k in choice],
                   latency_ms=table.latency_of(choice),
                   log_prob=float(sum(log_probs[l, k] for l, k in enumerate(choice))),
                   target_ms=float(target_ms), method=method)


def derive_exact(log_probs: np.ndarray, table: TableView, target_ms: float) -> Derived:
    """The most probable architecture with ``table.latency_of(arch) ≤ target_ms`` (exact).

    Raises :class:`QnasError` naming the smallest achievable latency when none fits.
    """
    log_probs, ms, allowed = _check(log_probs, table)
    num_layers = ms.shape[0]
    target = float(target_ms)
    # the cheapest completion of layers l.. (only used to prune, with a little slack: the exact
    # test is made on the true left-to-right sums at the end)
    cheapest = np.where(allowed, ms, np.inf).min(1)
    suffix = np.concatenate([np.cumsum(cheapest[::-1])[::-1], [0.0]])
    slack = 1e-9 * max(1.0, abs(target))

    lat = np.array([table.fixed_ms])
    logp = np.array([0.0])
    parents: list[np.ndarray] = []
    ops: list[np.ndarray] = []
    for layer in range(num_layers):
        ks = np.flatnonzero(allowed[layer])
        new_lat = (lat[:, None] + ms[layer, ks][None, :]).ravel()
        new_logp = (logp[:, None] + log_probs[layer, ks][None, :]).ravel()
        parent = np.repeat(np.arange(lat.size), ks.size)
        op = np.tile(ks, lat.size)
        keep = new_lat + suffix[layer + 1] <= target + slack
        if not keep.any():
            raise _infeasible(table, target)
        new_lat, new_logp, parent, op = new_lat[keep], new_logp[keep], parent[keep], op[keep]
        # Pareto frontier: by latency ascending (ties: best log-prob first), keep strict records
        order = np.lexsort((-new_logp, new_lat))
        new_lat, new_logp, parent, op = new_lat[order], new_logp[order], parent[order], op[order]
        best_before = np.concatenate([[-np.inf], np.maximum.accumulate(new_logp)[:-1]])
        frontier = new_logp > best_before
        lat, logp = new_lat[frontier], new_logp[frontier]
        parents.append(parent[frontier])
        ops.append(op[frontier])

    feasible = np.flatnonzero(lat <= target)
    if feasible.size == 0:
        raise _infeasible(table, target)
    # frontier is sorted by latency with strictly increasing log-prob: the last feasible is best
    index = int(feasible[-1])
    choice = [0] * num_layers
    for layer in range(num_layers - 1, -1, -1):
        choice[layer] = int(ops[layer][index])
        index = int(parents[layer][index])
    result = derived_of(choice, log_probs, table, target, "exact")
    assert result.latency_ms <= target, (result.latency_ms, target)
    return result


def derive_greedy(log_probs: np.ndarray, table: TableView, target_ms: float) -> Derived:
    """Greedy repair: start from arg-max; while over budget, make the swap that loses the least
    log-probability per millisecond saved (Δlog p / Δlatency)."""
    log_probs, ms, allowed = _check(log_probs, table)
    choice = np.where(allowed, log_probs, -np.inf).argmax(1)
    target = float(target_ms)
    while table.latency_of(choice) > target:
        current_ms = ms[np.arange(len(choice)), choice][:, None]
        current_logp = log_probs[np.arange(len(choice)), choice][:, None]
        saved = current_ms - ms
        lost = current_logp - log_probs
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(allowed & (saved > 0), lost / saved, np.inf)
        if not np.isfinite(score).any():
            raise _infeasible(table, target)
        layer, k = np.unravel_index(np.argmin(score), score.shape)
        choice[layer] = k
    return derived_of(choice, log_probs, table, target, "greedy")


def derive_brute_force(log_probs: np.ndarray, table: TableView, target_ms: float) -> Derived:
    """Enumerate every architecture (small instances only: tests)."""
    log_probs, ms, allowed = _check(log_probs, table)
    best = None
    for choice in itertools.product(*(np.flatnonzero(row) for row in allowed)):
        latency = table.latency_of(choice)
        if latency > target_ms:
            continue
        score = sum(log_probs[l, k] for l, k in enumerate(choice))
        if best is None or score > best[0] or (score == best[0] and latency < best[1]):
            best = (score, latency, choice)
    if best is None:
        raise _infeasible(table, target_ms)
    return derived_of(best[2], log_probs, table, target_ms, "brute-force")


def sample_in_band(log_probs: np.ndarray, table: TableView, low_ms: float, high_ms: float,
                   count: int, seed: int, draws: int = 200_000,
                   chunk: int = 8192) -> list[list[int]]:
    """Up to ``count`` distinct architectures drawn from the per-layer distributions
    exp(``log_probs``) whose table latency lies in [low_ms, high_ms], in the order drawn (fewer
    when ``draws`` draws find fewer: α may put almost no mass in the band)."""
    log_probs, ms, allowed = _check(log_probs, table)
    probs = np.where(allowed, np.exp(log_probs), 0.0)
    probs /= probs.sum(1, keepdims=True)
    cumulative = probs.cumsum(1)
    rng = np.random.default_rng([int(seed), 331])
    rows = np.arange(ms.shape[0])
    found: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    slack = 1e-9 * max(1.0, abs(high_ms))
    for start in range(0, draws, chunk):
        uniform = rng.random((min(chunk, draws - start), ms.shape[0], 1))
        choice = np.minimum((uniform > cumulative[None]).sum(2), ms.shape[1] - 1)
        approx = table.fixed_ms + ms[rows[None], choice].sum(1)
        for arch in choice[(approx >= low_ms - slack) & (approx <= high_ms + slack)]:
            key = tuple(int(k) for k in arch)
            if key in seen or not low_ms <= table.latency_of(key) <= high_ms:
                continue
            seen.add(key)
            found.append(list(key))
            if len(found) == count:
                return found
    return found


def derive_architecture(alpha: torch.Tensor, table: TableView, target_ms: float) -> Derived:
    """The most probable child of the supernet's α that fits ``target_ms`` on ``table``."""
    return derive_exact(log_probs_of(alpha, table.mask), table, target_ms)


def argmax_choice(alpha: torch.Tensor, mask: torch.Tensor) -> list[int]:
    """The per-layer most probable candidate (no budget)."""
    return alpha.detach().masked_fill(~mask, float("-inf")).argmax(-1).tolist()


# a drawn child replaces the most probable one only at this significance (family-wise, split
# over the drawn candidates by Bonferroni)
SELECTION_LEVEL = 0.05


def beats_by_test(challenger: np.ndarray, incumbent: np.ndarray) -> float:
    """One-sided exact McNemar test that ``challenger`` is right more often than ``incumbent``
    on the same images (boolean vectors in the same order): the p-value of the discordant
    pairs under a fair coin."""
    from scipy.stats import binomtest

    wins = int((challenger & ~incumbent).sum())
    losses = int((~challenger & incumbent).sum())
    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue)
