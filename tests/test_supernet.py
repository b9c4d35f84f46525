"""The supernet and ProxylessNAS's steps on toy spaces: exact α gradient, one-path weight
steps, the probability-preserving rescale, weight inheritance, memory of one child."""
import copy

import pytest
import torch
import torch.nn.functional as F

from qnas.bench.measure import saved_bytes as saved_tensor_bytes
from qnas.space import load_space
from qnas.nas.config import OptimConfig
from qnas.nas.latency import LatencyLoss, hand_table, masked_probs
from qnas.nas.proxyless import (ProxylessStrategy, rescale_alpha_, sample_pairs, sample_paths,
                                step_generator, uniform_probs)
from qnas.space import space_from_dict
from qnas.nas.supernet import Supernet

TOY = {"name": "toy", "width": 8, "depths": [1, 1, 1, 1],
       "candidates": ["k3e2", "k5e2", "identity"], "input_shape": [1, 3, 224, 224]}
TOY_MBCONV = {"name": "toy_mbconv", "macro": "mbconv", "stem_width": 8, "first_block_width": 8,
              "widths": [8, 16], "depths": [2, 2], "strides": [1, 2], "head_width": 32,
              "candidates": ["k3e3", "k5e3", "zero"], "input_shape": [1, 3, 224, 224]}


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


def toy_supernet(raw=TOY, layer_scale_init=0.5, weight_sharing=False):
    space = space_from_dict(raw)
    kwargs = {"layer_scale_init": layer_scale_init} if space.macro == "quadranet" else {}
    net = Supernet(space, num_classes=4, weight_sharing=weight_sharing, **kwargs)
    with torch.no_grad():
        net.alpha.copy_(torch.randn_like(net.alpha))      # not uniform: p' matters
    return net


def batch(n=6, resolution=32, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, resolution, resolution, generator=generator),
            torch.randint(0, 4, (n,), generator=generator))


def explicit_gate_gradients(net, images, labels, pairs):
    """∂L/∂g_k with the gates as explicit leaf tensors: y = g_a·o_a + g_o·o_o, g = (1, 0)."""
    model, gates = net.net, []
    x = model.stem(images)
    for s, stage in enumerate(model.stages):
        if s:
            x = model.downsamples[s - 1](x)
        for mixed in stage:
            active, other = pairs[mixed.index].tolist()
            outputs = [mixed.candidates[mixed.names[k]](x).double() for k in (active, other)]
            gate = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
            gates.append(gate)
            x = (gate[0] * outputs[0] + gate[1] * outputs[1]).float()
    loss = F.cross_entropy(model.forward_head(x), labels)
    return torch.stack(torch.autograd.grad(loss, gates))


@pytest.mark.parametrize("shared", [False, True], ids=["independent", "shared"])
def test_arch_gradient_equals_the_explicit_formula(shared):
    net = toy_supernet(weight_sharing=shared)
    strategy = ProxylessStrategy(net, seed=3)
    # shared k3 and k5 compute the same on maps of ≤ 2×2 (the k5 ring falls outside): give the
    # last stage 4×4
    images, labels = batch(resolution=128 if shared else 32)
    pairs = strategy.sample_pairs(step=0)
    grad, _ = strategy.arch_gradient(images, labels, pairs)

    gate = explicit_gate_gradients(net, images, labels, pairs)        # [layers × 2]
    p = torch.softmax(net.alpha.detach().double().gather(1, pairs), 1)  # p' over S
    expected = torch.zeros_like(net.alpha, dtype=torch.float64)
    for layer in range(len(pairs)):
        for m in range(2):
            expected[layer, pairs[layer, m]] = sum(
                gate[layer, k] * p[layer, k] * (float(k == m) - p[layer, m]) for k in range(2))
    scale = expected.abs().max().item()
    assert scale > 1e-9 and (expected != 0).sum() == 2 * len(pairs)   # a non-trivial case
    torch.testing.assert_close(grad.double(), expected, rtol=1e-4, atol=1e-4 * scale)
    # ops outside S get no gradient from the gates
    outside = torch.ones_like(net.mask).scatter_(1, pairs, False)
    assert grad[outside].eq(0).all()


@pytest.mark.parametrize("raw", [TOY, TOY_MBCONV], ids=["quadranet", "mbconv"])
def test_full_mode_gradient_equals_the_explicit_formula_over_every_candidate(raw):
    """``grad_mode="full"`` (ProxylessNAS's full_v2): gates on every allowed candidate, the full
    softmax, and no gradient for candidates a layer does not allow (mbconv: no identity where
    the layer strides)."""
    from qnas.nas.config import OptimConfig
    from qnas.nas.proxyless import sample_full

    net = toy_supernet(raw)
    strategy = ProxylessStrategy(net, OptimConfig(grad_mode="full"), seed=2)
    images, labels = batch()
    groups, valid = strategy.sample_group(step=1)
    assert torch.equal(valid.sum(1), net.mask.sum(1))                 # every allowed one
    again, _ = sample_full(net.alpha, net.mask, step_generator(2, 1, 1))
    assert torch.equal(groups, again)
    grad, _ = strategy.arch_gradient(images, labels, groups, valid)

    # explicit gates on every allowed candidate: y = Σ_k g_k o_k, g one-hot on the active one
    gates = []
    members_of = [[int(k) for k, ok in zip(g, v) if ok] for g, v in zip(groups, valid)]

    def forward_with_gates(images):
        def hook(mixed, inputs, _output):
            members = members_of[mixed.index]
            outputs = [mixed.candidates[mixed.names[k]](inputs[0]).double() for k in members]
            gate = torch.zeros(len(members), dtype=torch.float64)
            gate[0] = 1.0
            gate.requires_grad_(True)
            gates.append((mixed.index, members, gate))
            return sum(g * o for g, o in zip(gate, outputs)).float()
        handles = [m.register_forward_hook(hook) for m in net.mixed_ops]
        try:
            net.set_paths([m[0] for m in members_of])
            return net(images)
        finally:
            for handle in handles:
                handle.remove()
            net.clear_paths()

    loss = F.cross_entropy(forward_with_gates(images), labels)
    gate_grads = torch.autograd.grad(loss, [g for _, _, g in gates])
    p = masked_probs(net.alpha.detach().double(), net.mask)
    expected = torch.zeros_like(net.alpha, dtype=torch.float64)
    for (layer, members, _), gg in zip(gates, gate_grads):
        for m in members:
            expected[layer, m] = sum(gg[i] * p[layer, k] * (float(k == m) - p[layer, m])
                                     for i, k in enumerate(members))
    scale = expected.abs().max().item()
    assert scale > 1e-9
    torch.testing.assert_close(grad.double(), expected, rtol=1e-3, atol=1e-4 * scale)
    assert grad[~net.mask].eq(0).all()


def test_an_inactive_identity_path_leaves_no_graph_in_the_alpha_gradient():
    net = toy_supernet()
    strategy = ProxylessStrategy(net, seed=0)
    images, labels = batch()
    identity = net.space.candidates.index("identity")
    pairs = torch.tensor([[0, identity]] * len(net.mixed_ops))     # identity inactive everywhere
    images.requires_grad_(True)                                     # x carries a graph
    net.train()
    net.set_pairs(pairs)
    net(images)
    for _, (_, other) in net.records():
        assert other.grad_fn is None and not other.requires_grad
    net.clear_paths()
    grad, _ = strategy.arch_gradient(images, labels, pairs)
    assert grad.grad_fn is None and not grad.requires_grad


def test_arch_gradient_adds_the_latency_term_through_autograd():
    net = toy_supernet()
    table = hand_table(torch.rand(4, 3, dtype=torch.float64) * 5, fixed_ms=1.0)
    plain = ProxylessStrategy(net, seed=0)
    latency = ProxylessStrategy(net, seed=0, table=table,
                                latency_loss=LatencyLoss("add-linear", 4.0, lam=0.1))
    images, labels = batch()
    pairs = plain.sample_pairs(step=5)
    without, _ = plain.arch_gradient(images, labels, pairs)
    with_latency, stats = latency.arch_gradient(images, labels, pairs)
    p = masked_probs(net.alpha.detach().double(), net.mask)
    jacobian = p * (table.ms - (p * table.ms).sum(1, keepdim=True))
    torch.testing.assert_close((with_latency - without).double(), 0.1 / 4.0 * jacobian,
                               rtol=1e-4, atol=1e-8)
    assert stats["expected_ms"] == pytest.approx(1.0 + (p * table.ms).sum().item())


def test_weight_step_trains_only_the_sampled_path():
    net = toy_supernet()
    strategy = ProxylessStrategy(net, seed=0)
    images, labels = batch()
    for step in range(3):
        paths = strategy.sample_paths(step, uniform=True)
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        strategy.weight_step(images, labels, step, paths=paths)
        for mixed in net.mixed_ops:
            for name, module in mixed.candidates.items():
                sampled = name == mixed.names[paths[mixed.index]]
                for pname, param in module.named_parameters():
                    full = f"net.{_path(net, param)}"
                    if sampled:
                        assert param.grad is not None and param.grad.abs().sum() > 0, full
                        assert not torch.equal(param, before[full]), full
                    else:
                        assert param.grad is None, full
                        assert torch.equal(param, before[full]), full
        assert net.alpha.grad is None
        assert torch.equal(net.alpha, before["alpha"])


def _path(net, param):
    return next(n for n, p in net.net.named_parameters() if p is param)


def test_rescale_keeps_the_probability_of_unsampled_ops():
    net = toy_supernet()
    table = hand_table(torch.rand(4, 3, dtype=torch.float64) * 5, fixed_ms=1.0)
    strategy = ProxylessStrategy(net, seed=0, table=table,
                                 latency_loss=LatencyLoss("add-linear", 2.0))
    strategy.arch_optimizer.param_groups[0]["lr"] = 0.1
    images, labels = batch()
    for step in range(3):
        pairs = strategy.sample_pairs(step)
        in_s = torch.zeros_like(net.mask).scatter_(1, pairs, True)
        before = net.probs().detach().clone()
        alpha_before = net.alpha.detach().clone()
        strategy.arch_step(images, labels, step, pairs=pairs)
        after = net.probs().detach()
        # total probability outside S is unchanged (the latency term moved those α too)
        torch.testing.assert_close((after * ~in_s).sum(1), (before * ~in_s).sum(1),
                                   rtol=1e-5, atol=1e-7)
        assert not torch.allclose(after[in_s], before[in_s])          # the step did something
        assert not torch.equal(net.alpha[~in_s], alpha_before[~in_s])  # latency gradient


def test_rescale_alone_in_double_precision():
    generator = torch.Generator().manual_seed(0)
    old = torch.randn(5, 6, dtype=torch.float64, generator=generator)
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[0, 5] = False
    pairs = torch.tensor([[0, 1], [2, 3], [4, 5], [1, 0], [3, 2]])
    new = old + torch.randn(5, 6, dtype=torch.float64, generator=generator)
    stepped = new.clone()
    rescale_alpha_(new, old, pairs, mask)
    in_s = torch.zeros_like(mask).scatter_(1, pairs, True)
    p_old, p_new = masked_probs(old, mask), masked_probs(new, mask)
    torch.testing.assert_close((p_new * (mask & ~in_s)).sum(1), (p_old * (mask & ~in_s)).sum(1))
    # one shift per layer, on the two sampled ops only
    shift = new - stepped
    torch.testing.assert_close(shift.gather(1, pairs)[:, 0], shift.gather(1, pairs)[:, 1])
    assert shift[~in_s].eq(0).all() and shift[in_s].abs().min() > 0


def test_path_sampling_comes_from_the_per_step_generator_and_respects_the_mask():
    net = toy_supernet(TOY_MBCONV)
    mask = net.mask
    assert not mask.all()                       # the stride-2 layer offers no zero op
    a = sample_pairs(net.alpha, mask, step_generator(7, 11, 1))
    b = sample_pairs(net.alpha, mask, step_generator(7, 11, 1))
    assert torch.equal(a, b)
    draws = [sample_pairs(net.alpha, mask, step_generator(7, s, 1)) for s in range(40)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    for pairs in draws:
        assert (pairs[:, 0] != pairs[:, 1]).all()
        assert mask.gather(1, pairs).all()
    paths = [sample_paths(uniform_probs(mask), step_generator(7, s, 0)) for s in range(40)]
    assert all(mask.gather(1, p[:, None]).all() for p in paths)
    # the active path is drawn from p' over the pair: a dominant op is (almost) always active
    alpha = torch.zeros(3, 3)
    alpha[:, 0] = 30.0
    alpha[:, 1] = 0.0
    alpha[:, 2] = 0.0
    actives = torch.stack([sample_pairs(alpha, torch.ones(3, 3, dtype=torch.bool),
                                        step_generator(0, s, 1))[:, 0] for s in range(20)])
    assert actives.eq(0).all()


@pytest.mark.parametrize("raw,shared", [(TOY, False), (TOY, True), (TOY_MBCONV, False)],
                         ids=["quadranet", "quadranet-shared", "mbconv"])
def test_child_inherits_the_supernet_weights(raw, shared):
    net = toy_supernet(raw, weight_sharing=shared)
    strategy = ProxylessStrategy(net, seed=0)
    images, labels = batch()
    for step in range(2):                       # move the weights (and BN statistics) a little
        strategy.weight_step(images, labels, step, uniform=True)
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        ops = [slot.ops[int(torch.randint(len(slot.ops), (1,), generator=generator))]
               for slot in net.space.layers]
        child = net.child(ops).eval()
        assert type(child) is type(net.net)
        net.eval()
        net.set_ops(ops)
        with torch.no_grad():
            torch.testing.assert_close(child(images), net(images))
        net.clear_paths()


@pytest.mark.parametrize("name,shared", [("quadranet", False), ("quadranet", True),
                                         ("proxyless_mbconv", False)],
                         ids=["quadranet", "quadranet-shared", "proxyless_mbconv"])
def test_weight_step_saves_what_one_child_saves(name, shared):
    """Acceptance 7: saved-for-backward bytes of a supernet weight step ≤ 1.2× the child's."""
    space = load_space(name)
    net = Supernet(space, num_classes=10, weight_sharing=shared).train()
    generator = torch.Generator().manual_seed(0)
    ops = [slot.ops[int(torch.randint(len(slot.ops), (1,), generator=generator))]
           for slot in space.layers]
    child = net.child(ops).train()
    # shared candidates also save copies of their sliced weights (kernel centres, PW2's first
    # inputs): ~5 MB on quadranet whatever the batch, so measure at a batch where activations
    # count (the search's is 64: 1.02×)
    images = torch.randn(16 if shared else 2, 3, 32, 32)
    child_bytes = saved_tensor_bytes(lambda: child(images), list(child.parameters()))
    net.set_ops(ops)
    super_bytes = saved_tensor_bytes(lambda: net(images), list(net.parameters()))
    assert child_bytes > 0
    assert super_bytes <= 1.2 * child_bytes, (super_bytes, child_bytes)


def test_shared_quadrablocks_hold_one_set_of_weights_that_every_candidate_trains():
    net = toy_supernet(weight_sharing=True)
    independent = toy_supernet(weight_sharing=False)
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(net) < count(independent)
    for mixed in net.mixed_ops:
        assert mixed.shared is not None and not list(mixed.candidates.parameters())
    # a weight step through the SMALL candidate trains the centre of the shared k5 filters and
    # the first hidden channels only (the rest moves by weight decay alone: zero gradient)
    strategy = ProxylessStrategy(net, seed=0)
    images, labels = batch()
    small = [net.space.candidates.index("k3e2")] * net.space.num_layers
    strategy.weight_step(images, labels, 0, paths=torch.tensor(small))
    for mixed in net.mixed_ops:
        big = mixed.shared.largest
        grad = big.spatial.weight.grad
        assert grad[:, :, 1:4, 1:4].abs().sum() > 0
        assert grad[:, :, 0].eq(0).all() and grad[:, :, :, 4].eq(0).all()
        hidden = mixed.shared.hidden(2)
        grad = big.mlp.pw1.weight.grad.flatten(1)
        assert grad[:hidden].abs().sum() > 0 and grad[hidden:].eq(0).all()
        assert big.mlp.pw2.weight.grad[:, hidden:].eq(0).all()


def test_sandwich_adds_the_largest_childs_gradient_to_every_step():
    """--sandwich (BigNAS's rule): each weight step's gradient is the sampled path's plus the
    largest child's, so the shared filters' outer ring trains even when the identity is drawn."""
    net = toy_supernet(weight_sharing=True)
    reference = copy.deepcopy(net)
    assert net.space.largest_ops() == ["k5e2"] * net.space.num_layers
    strategy = ProxylessStrategy(net, OptimConfig(sandwich=True, grad_clip=None), seed=0)
    images, labels = batch()
    identity = torch.tensor([net.space.candidates.index("identity")] * net.space.num_layers)
    strategy.weight_step(images, labels, 0, paths=identity)
    reference.train()
    reference.set_ops(reference.space.largest_ops())
    loss = F.cross_entropy(reference(images), labels)
    reference.set_paths(identity)
    (loss + F.cross_entropy(reference(images), labels)).backward()
    for (name, got), expected in zip(net.named_parameters(), reference.parameters()):
        if expected.grad is None:
            assert got.grad is None, name
        else:
            torch.testing.assert_close(got.grad, expected.grad, msg=name)
    # (stage 0 runs at 8×8; later stages are too small for the outer ring to see pixels)
    assert net.mixed_ops[0].shared.largest.spatial.weight.grad[:, :, 0].abs().sum() > 0
