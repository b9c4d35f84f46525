"""Deriving the child under a hard latency constraint: exact, within budget, optimal."""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qnas.errors import QnasError
from qnas.nas.derive import (derive_architecture, derive_brute_force, derive_exact,
                             derive_greedy, log_probs_of, sample_in_band)
from qnas.nas.latency import hand_table


@st.composite
def instances(draw, max_layers=12, max_ops=7, masked=False):
    layers = draw(st.integers(1, max_layers))
    ops = draw(st.integers(2, max_ops))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    # a mix of continuous and coarse (tie-prone) latencies, some zero (identity)
    ms = rng.uniform(0, 20, (layers, ops))
    if draw(st.booleans()):
        ms = np.round(ms)
    ms[:, -1] *= rng.integers(0, 2, layers)
    mask = np.ones((layers, ops), dtype=bool)
    if masked:
        for layer in range(layers):
            off = rng.permutation(ops)[:rng.integers(0, ops - 1)]
            mask[layer, off] = False
    alpha = torch.tensor(rng.normal(0, draw(st.sampled_from([0.01, 1.0, 4.0])), (layers, ops)))
    table = hand_table(ms, fixed_ms=float(rng.uniform(0, 5)), mask=torch.tensor(mask))
    fraction = draw(st.floats(0.0, 1.2))
    target = table.min_ms() + fraction * (table.max_ms() - table.min_ms())
    return log_probs_of(alpha, table.mask), table, target


@settings(max_examples=300, deadline=None)
@given(instances(masked=True))
def test_exact_is_within_budget_and_never_worse_than_greedy_repair(instance):
    log_probs, table, target = instance
    exact = derive_exact(log_probs, table, target)
    greedy = derive_greedy(log_probs, table, target)
    assert exact.latency_ms <= target and greedy.latency_ms <= target
    assert table.latency_of(exact.choice) == exact.latency_ms
    assert all(table.mask[layer, k] for layer, k in enumerate(exact.choice))
    assert exact.log_prob >= greedy.log_prob - 1e-9


@settings(max_examples=200, deadline=None)
@given(instances(max_layers=5, max_ops=4, masked=True))
def test_exact_is_optimal_against_brute_force(instance):
    log_probs, table, target = instance
    exact = derive_exact(log_probs, table, target)
    brute = derive_brute_force(log_probs, table, target)
    assert exact.log_prob == pytest.approx(brute.log_prob, abs=1e-9)
    assert exact.latency_ms <= target


def test_exact_beats_greedy_on_a_known_trap():
    # greedy first takes layer 0's cheap-per-ms swap (saves 1 ms), is still over budget and
    # then also swaps layer 1; the optimum swaps only layer 1 (saves 5 ms)
    log_probs = np.log(np.array([[0.505, 0.495], [0.6, 0.4]]))
    table = hand_table([[10.0, 9.0], [10.0, 5.0]])
    exact = derive_exact(log_probs, table, 15.0)
    greedy = derive_greedy(log_probs, table, 15.0)
    assert exact.choice == [0, 1] and exact.latency_ms == 15.0
    assert greedy.choice == [1, 1]
    assert exact.log_prob > greedy.log_prob


def test_budget_met_exactly_counts_as_within():
    table = hand_table([[1.0, 2.0], [1.0, 2.0]], fixed_ms=1.0)
    log_probs = np.log(np.array([[0.1, 0.9], [0.2, 0.8]]))
    assert derive_exact(log_probs, table, 5.0).choice == [1, 1]
    assert derive_exact(log_probs, table, 4.0).choice == [1, 0]


def test_argmax_is_returned_when_it_fits():
    alpha = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
    table = hand_table([[5.0, 1.0, 0.0], [2.0, 6.0, 1.0]])
    assert derive_architecture(alpha, table, 100.0).choice == [0, 1]


def test_infeasible_budget_names_the_smallest_latency():
    table = hand_table([[5.0, 1.0], [2.0, 6.0]], fixed_ms=3.0, device="toy")
    with pytest.raises(QnasError) as err:
        derive_exact(np.log(np.full((2, 2), 0.5)), table, 5.5)
    message = str(err.value)
    assert "6.00 ms" in message and "\n" not in message and "toy" in message
    with pytest.raises(QnasError, match="6.00 ms"):
        derive_greedy(np.log(np.full((2, 2), 0.5)), table, 5.5)


def test_exact_is_fast_on_a_search_sized_instance():
    rng = np.random.default_rng(1)
    table = hand_table(rng.uniform(0, 20, (60, 7)), fixed_ms=5.0)
    log_probs = log_probs_of(torch.tensor(rng.normal(0, 1, (60, 7))), table.mask)
    target = (table.min_ms() + table.max_ms()) / 2
    result = derive_exact(log_probs, table, target)
    assert result.latency_ms <= target
    assert result.log_prob >= derive_greedy(log_probs, table, target).log_prob


def test_sample_in_band_draws_distinct_children_from_alpha_within_the_band():
    # layer 0 almost surely picks op 0; every child in the band is found, none outside it
    log_probs = np.log(np.array([[0.98, 0.01, 0.01], [0.4, 0.3, 0.3], [0.5, 0.25, 0.25]]))
    table = hand_table([[4.0, 1.0, 0.0], [3.0, 2.0, 0.0], [3.0, 1.0, 0.0]], fixed_ms=1.0)
    drawn = sample_in_band(log_probs, table, 6.0, 8.0, 100, seed=0)
    in_band = {c for c in itertools.product(range(3), repeat=3)
               if 6.0 <= table.latency_of(c) <= 8.0}
    assert len(drawn) == len(set(map(tuple, drawn)))
    assert all(6.0 <= table.latency_of(c) <= 8.0 for c in drawn)
    assert set(map(tuple, drawn)) == in_band          # 200k draws find every one of them
    # drawn in proportion to α: the first ones are the probable ones (layer 0 = op 0)
    assert all(c[0] == 0 for c in drawn[:3])
    assert sample_in_band(log_probs, table, 6.0, 8.0, 2, seed=0) == drawn[:2]
    assert sample_in_band(log_probs, table, 100.0, 200.0, 5, seed=0) == []


def test_a_drawn_child_must_beat_the_most_probable_one_beyond_noise():
    from qnas.nas.derive import beats_by_test

    rng = np.random.default_rng(0)
    incumbent = rng.random(2000) < 0.70
    # the same canvases, 40 of the incumbent's errors fixed: a clear, paired win
    better = incumbent.copy()
    better[np.flatnonzero(~incumbent)[:40]] = True
    assert beats_by_test(better, incumbent) < 1e-6
    # as many new errors as fixes (0.0 points ahead): no evidence, whatever the ranking says
    shuffled = incumbent.copy()
    shuffled[np.flatnonzero(~incumbent)[:30]] = True
    shuffled[np.flatnonzero(incumbent)[:28]] = False
    assert 0.2 < beats_by_test(shuffled, incumbent) < 0.7
    assert beats_by_test(incumbent, better) == 1.0         # worse: never a win
    assert beats_by_test(incumbent, incumbent) == 1.0      # identical answers
