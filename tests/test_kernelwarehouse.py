"""KernelWarehouse: KWConv2d reduces to dynamic convolution, kernel partition and assembly, the
temperature, warehouse sharing and its parameter count, kw candidates in a search space
(supernet steps, inherited child, ONNX), and their latency breakdown."""
import copy
import json
import io
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from qnas.models import QuadraNet, parse_op
from qnas.space import load_space
from qnas.nas.latency import LatencyLoss, table_view
from qnas.nas.proxyless import ProxylessStrategy
from qnas.space import space_from_dict
from qnas.nas.supernet import Supernet
from qnas.nn import (KWConv2d, KWManager, KWPlan, QuadraBlock, QuadraBlockKW, QuadraConv2d,
                     build_block, kw_layers, kw_temperature, set_kw_temperature)
from qnas.predictors.kernels import decompose
from qnas.predictors.lut import build_lut
from qnas.predictors.registry import get


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


def _randomise_bn(module):
    """Non-trivial running statistics, so that eval-mode BN is not the identity."""
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm1d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)


# --- the layer ---------------------------------------------------------------------------------
@pytest.mark.parametrize("zero_cell", [False, True], ids=["plain", "zero-cell"])
@pytest.mark.parametrize("kernel_size,stride", [(3, 2), (1, 1)])
def test_one_cell_per_kernel_without_sharing_is_dynamic_convolution(zero_cell, kernel_size,
                                                                    stride):
    n = 4
    conv = KWConv2d(8, 12, kernel_size, stride=stride, padding=kernel_size // 2, cells=n,
                    zero_cell=zero_cell).eval()
    assert conv.mixtures == 1 and conv.cell == (12, 8, kernel_size, kernel_size)
    warehouse = conv.kw.warehouses["default"]
    assert tuple(warehouse.shape) == (n, 12, 8, kernel_size, kernel_size)
    with torch.no_grad():
        _randomise_bn(conv)
        conv.bias.normal_()
        conv.attention.fc2.weight.normal_()          # attention far from uniform
    x = torch.randn(3, 8, 9, 9)
    with torch.no_grad():
        out = conv(x)
        # the attention, spelled out: GAP → fc1 → BN → ReLU → fc2, linear normalisation
        att = conv.attention
        z = att.fc2(F.relu(att.norm(att.fc1(x.mean((2, 3))))))
        assert z.shape == (3, n + int(zero_cell))
        a = (z / (z.abs().sum(1, keepdim=True) + 1e-3))[:, :n]
        # dynamic convolution (CondConv / DY-Conv): per-sample kernel Σ_j a_j W_j
        expected = torch.cat([
            F.conv2d(x[b:b + 1], torch.einsum("j,joikl->oikl", a[b], warehouse), conv.bias,
                     stride, kernel_size // 2) for b in range(3)])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # and the per-sample kernels really differ from sample to sample
    kernels = conv.kernels(x).detach()
    assert not torch.allclose(kernels[0], kernels[1])


def test_kernel_partition_mixes_warehouse_cells():
    conv = KWConv2d(8, 16, 1, cell=(4, 4), cells=5).eval()      # m = (16/4)·(8/4) = 8 cells
    assert conv.mixtures == 8
    warehouse = conv.kw.warehouses["default"].detach()
    assert tuple(warehouse.shape) == (5, 4, 4, 1, 1)
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        conv.attention.fc2.weight.normal_()
        alpha = conv.attention(x)                                 # [B, m, n]
        kernels = conv.kernels(x)
        out = conv(x)
    assert alpha.shape == (2, 8, 5)
    for b in range(2):
        for i in range(8):
            go, gi = divmod(i, 2)                                 # row-major over (out, in)
            cell = torch.einsum("j,joikl->oikl", alpha[b, i], warehouse)
            torch.testing.assert_close(kernels[b, 4 * go:4 * go + 4, 4 * gi:4 * gi + 4], cell)
        torch.testing.assert_close(out[b:b + 1], F.conv2d(x[b:b + 1], kernels[b], conv.bias),
                                   rtol=1e-5, atol=1e-6)


def test_temperature_mixes_in_the_initial_assignment():
    assert [kw_temperature(e, 4) for e in (0, 1, 2, 4, 9)] == [1.0, 0.75, 0.5, 0.0, 0.0]
    assert kw_temperature(0.5, 2) == 0.75 and kw_temperature(3, 0) == 0.0
    # ratio 1: mixture t owns warehouse cell t; at τ = 1 the layer is that static conv
    conv = KWConv2d(8, 16, 1, cell=(8, 8), ratio=1.0).eval()
    warehouse = conv.kw.warehouses["default"].detach()
    x = torch.randn(2, 8, 4, 4)
    assert conv.set_temperature(1.0) is None and float(conv.temperature) == 1.0
    with torch.no_grad():
        static = torch.cat([warehouse[0], warehouse[1]])          # out groups 0, 1
        torch.testing.assert_close(conv(x), F.conv2d(x, static, conv.bias), rtol=1e-5,
                                   atol=1e-6)
        conv.set_temperature(0.25)
        a = conv.attention(x, 0.0)
        mixed = conv.attention(x, 0.25)
    beta = conv.attention.assignment[:, :2]
    torch.testing.assert_close(mixed, 0.75 * a + 0.25 * beta)
    with pytest.raises(ValueError, match="temperature"):
        conv.set_temperature(1.5)
    # ratio ½: every second mixture owns a cell, the others start at the zero cell
    net = QuadraNet(num_classes=3, width=8, layers=[["k3e2kw"], ["k3e2"], ["k3e2"], ["k3e2"]])
    pw1, pw2 = net.stages[0][0].mlp.pw1, net.stages[0][0].mlp.pw2
    assert torch.equal(pw1.attention.assignment, torch.tensor([[1., 0, 0], [0, 0, 1]]))
    assert torch.equal(pw2.attention.assignment, torch.tensor([[0., 1, 0], [0, 0, 1]]))
    # τ travels with the state dict; set_kw_temperature reaches every KW layer
    assert set_kw_temperature(net, 0.4) == 2
    fresh = QuadraNet(num_classes=3, width=8, layers=[["k3e2kw"], ["k3e2"], ["k3e2"], ["k3e2"]])
    fresh.load_state_dict(net.state_dict())
    assert all(layer._tau == pytest.approx(0.4) for layer in kw_layers(fresh))
    assert set_kw_temperature(QuadraNet(num_classes=3, width=8, depths=(1, 1, 1, 1)), 0.) == 0


# --- sharing and parameters ---------------------------------------------------------------------
KW_LAYERS = [["k3e2kw", "k5e4kw", "k3e2"], ["k3e4kw"], ["k3e2"], ["identity", "k7e2kw"]]


def _attention_params(cin, m, n):
    hidden = max(int(cin / 16), 16)
    return cin * hidden + 2 * hidden + (hidden + 1) * m * (n + 1)   # fc1 (BN: no bias), BN, fc2


def _expected_params(ratio):
    """Parameter count of QuadraNet(layers=KW_LAYERS) by the design's formula."""
    static_ops = [[op.removesuffix("kw") for op in stage] for stage in KW_LAYERS]
    total = sum(p.numel() for p in QuadraNet(num_classes=5, width=8, layers=static_ops)
                .parameters())
    for stage, ops in enumerate(KW_LAYERS):
        dim = 8 * 2 ** stage
        kw = [parse_op(op)[1]["expansion"] for op in ops if op.endswith("kw")]
        if not kw:
            continue
        n = math.ceil(ratio * sum(2 * e for e in kw))              # cell C×C: m = e per conv
        total += n * dim * dim                                     # the stage's warehouse
        for e in kw:
            total -= 2 * e * dim * dim                             # static PW1/PW2 kernels
            total += _attention_params(dim, e, n) + _attention_params(e * dim, e, n)
    return total


@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0, 2.0])
def test_parameters_scale_with_the_warehouse_size(ratio):
    net = QuadraNet(num_classes=5, width=8, layers=KW_LAYERS, kw_ratio=ratio)
    assert sum(p.numel() for p in net.parameters()) == _expected_params(ratio)
    # one warehouse per stage with kw layers, shared by all of them
    assert sorted(net.kw.warehouses) == ["stage0", "stage1", "stage3"]
    assert net.kw.warehouses["stage0"].shape[0] == math.ceil(ratio * (4 + 8))
    for stage, blocks in enumerate(net.stages):
        for layer in kw_layers(blocks):
            assert layer.manager.warehouse(layer.group) is net.kw.warehouses[f"stage{stage}"]
    twin = copy.deepcopy(net)           # (e.g. an EMA copy) shares ITS OWN warehouses
    layer = next(kw_layers(twin.stages[0]))
    assert layer.manager.warehouse("stage0") is twin.kw.warehouses["stage0"]


def test_a_fixed_warehouse_does_not_grow_with_depth():
    plan = {0: KWPlan((8, 8, 1, 1), mixtures=24, cells=10)}

    def count(depth):
        layers = [["k3e2kw"] * depth, ["k3e2"], ["k3e2"], ["k3e2"]]
        return sum(p.numel() for p in QuadraNet(num_classes=2, width=8, layers=layers,
                                                kw_plan=plan).parameters())

    block = QuadraBlock(8, 3, 2)
    per_block = (sum(p.numel() for p in block.parameters()) - 2 * 16 * 8
                 + _attention_params(8, 2, 10) + _attention_params(16, 2, 10))
    assert count(3) - count(1) == 2 * per_block       # attention branches only, no kernels


def test_kw_ops_parse_and_build():
    assert parse_op("k3e2kw") == ("quadra-kw", {"expansion": 2, "kernel_size": 3})
    assert parse_op("quadra-k7e4kw") == ("quadra-kw", {"expansion": 4, "kernel_size": 7})
    assert parse_op("k3e2") == ("quadra", {"expansion": 2, "kernel_size": 3})
    assert parse_op("conv-k7e4") == ("conv", {"expansion": 4, "kernel_size": 7})
    with pytest.raises(ValueError, match="only for QuadraBlock"):
        parse_op("conv-k7e4kw")
    block = build_block("quadra-kw", 8, kernel_size=3, expansion=2).eval()
    assert isinstance(block, QuadraBlockKW) and isinstance(block.spatial, QuadraConv2d)
    x = torch.randn(2, 8, 6, 6)
    assert block(x).shape == x.shape
    with pytest.raises(RuntimeError, match="allocate"):
        KWConv2d(8, 8, kw=KWManager())(x)
    with pytest.raises(Exception, match="quadranet macro"):
        space_from_dict({"name": "m", "macro": "mbconv", "widths": [8], "strides": [1],
                         "depths": [2], "candidates": ["k3e3kw", "zero"]})


# --- search space, supernet, child --------------------------------------------------------------
KW_SPACE = {"name": "kwtoy", "width": 8, "depths": [2, 1, 1, 1], "kw_ratio": 0.5,
            "candidates": ["k3e2", "k3e2kw", "k5e4kw", "identity"],
            "input_shape": [1, 3, 224, 224]}


def test_space_with_kw_candidates_searches_and_the_child_inherits(tmp_path):
    path = tmp_path / "kwtoy.yaml"
    path.write_text(yaml.safe_dump(KW_SPACE))
    space = load_space(str(path))
    assert space.kw_candidates == ["k3e2kw", "k5e4kw"]
    net = Supernet(space, num_classes=4, layer_scale_init=0.5)
    # one warehouse per stage at net level, sized for the stage's maximal architecture
    assert {g: tuple(w.shape) for g, w in net.net.kw.warehouses.items()} == {
        "stage0": (8, 8, 8, 1, 1), "stage1": (4, 16, 16, 1, 1), "stage2": (4, 32, 32, 1, 1),
        "stage3": (4, 64, 64, 1, 1)}                 # ceil(½ · depth · (4 + 4))
    table = table_view(build_lut(space, "cortexA76", use_cache=False), space.allowed_mask())
    strategy = ProxylessStrategy(net, seed=0, table=table,
                                 latency_loss=LatencyLoss("add-linear", table.min_ms() * 1.2))
    strategy.arch_optimizer.param_groups[0]["lr"] = 0.05
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 4, (6,), generator=generator)
    warehouse = net.net.kw.warehouses["stage0"].detach().clone()
    alpha = net.alpha.detach().clone()
    kw_column = space.candidates.index("k3e2kw")
    paths = torch.full((space.num_layers,), kw_column)
    for step in range(3):
        set_kw_temperature(net, kw_temperature(step, 2))
        stats = strategy.weight_step(images, labels, step, paths=paths if step == 0 else None,
                                     uniform=True)
        assert math.isfinite(stats["loss"])
        assert math.isfinite(strategy.arch_step(images, labels, step)["loss"])
    assert not torch.equal(net.net.kw.warehouses["stage0"], warehouse)  # the shared cells learn
    assert not torch.equal(net.alpha, alpha)
    set_kw_temperature(net, 0.3)
    net.eval()
    choices = [["k3e2kw", "identity", "k5e4kw", "k3e2", "k3e2kw"],      # stage 2: no kw op
               ["k5e4kw", "k3e2kw", "identity", "k5e4kw", "identity"]]
    for ops in choices:
        child = net.child(ops).eval()
        assert sorted(child.kw.warehouses) == sorted(space.kw_groups(ops))
        net.set_ops(ops)
        with torch.no_grad():
            torch.testing.assert_close(child(images), net(images), rtol=0, atol=1e-6)
        net.clear_paths()
    # the child exports to ONNX (dynamic batch) and onnxruntime agrees with PyTorch
    import onnxruntime

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(child, (images[:1],), buffer, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    session = onnxruntime.InferenceSession(buffer.getvalue(),
                                           providers=["CPUExecutionProvider"])
    for batch in (images[:1], images[:3]):
        with torch.no_grad():
            expected = child(batch).numpy()
        got = session.run(None, {"x": batch.numpy()})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# --- latency ------------------------------------------------------------------------------------
def test_kw_block_latency_costs_attention_and_assembly():
    shape = (1, 16, 28, 28)
    predictor = get("cortexA76")
    kw_block = build_block("quadra-kw", 16, kernel_size=3, expansion=2)
    plain = predictor.predict(build_block("quadra", 16, kernel_size=3, expansion=2), shape)
    costed = predictor.predict(kw_block, shape)
    assert costed.latency_ms > plain.latency_ms
    frame = costed.kernels
    # every kernel costs something, except the BatchNorm and ReLU the profile fuses into the
    # attention's conv (as TFLite does)
    assert (frame["ms"] >= 0).all()
    assert frame.loc[frame["ms"] == 0, "op"].isin(["batchnorm", "relu"]).all()
    n = kw_block.kw.warehouses["block"].shape[0]
    assert n == 2                                                  # ceil(½ · (2 + 2))
    for conv, m in (("mlp.pw1", 2), ("mlp.pw2", 2)):
        rows = frame[frame["name"] == f"{conv}.assemble"]
        assert rows["op"].isin(["linear", "matmul"]).any()
        assert rows["flops"].max() == 2 * m * n * 16 * 16          # [m, n] @ [n, 16·16]
        attention = frame[frame["name"].str.startswith(f"{conv}.attention")]
        assert {"pool", "linear", "batchnorm", "relu", "elementwise", "reduce",
                "mul"} <= set(attention["op"])
    kernels = decompose(kw_block, (2, 16, 8, 8))
    dynamic = [k for k in kernels if k.params.get("dynamic")]
    assert [k.op for k in dynamic] == ["pwconv", "pwconv"]         # the per-sample 1×1 convs
    assert all(k.params["batch"] == 2 and k.params["groups"] == 1 for k in dynamic)
    assert dynamic[0].flops == 2 * 2 * 32 * 16 * 64                # B · out · in · HW · 2


def test_kw_space_searches_and_exports_end_to_end(tmp_path, single_thread):
    """`qnas search` on a space with kw candidates, then `qnas export` of its best.json (the
    export verifies child = supernet and onnxruntime = PyTorch before it writes)."""
    from qnas.deploy import export_child, load_child
    from qnas.nas.config import SearchConfig
    from qnas.nas.search import search

    path = tmp_path / "kwtoy.yaml"
    path.write_text(yaml.safe_dump(KW_SPACE))
    result = search(SearchConfig(device="cortexA76", latency="100ms", space=str(path),
                                 data="synthetic", epochs=1, warmup_epochs=1, batch_size=16),
                    out=tmp_path / "run")
    best = result.best
    assert best["lut_latency_ms"] <= best["target_latency_ms"]
    # export the searched child, and one that certainly holds kw blocks
    exported = export_child(result.best_path, out=tmp_path / "export")
    assert exported.verification["passed"].all()
    raw = json.loads(result.best_path.read_text())
    kw_ops = [next(op for op in KW_SPACE["candidates"] if op.endswith("kw"))] * len(raw["ops"])
    raw["ops"] = kw_ops
    raw.pop("child_weights", None)     # not the child.pt beside it: inherit from the supernet
    forced = tmp_path / "run" / "kw.json"
    forced.write_text(json.dumps(raw))
    kw_export = export_child(forced, out=tmp_path / "export-kw")
    checks = kw_export.verification
    assert checks["passed"].all() and len(checks) >= 4
    child = load_child(kw_export.files["pt"])
    assert any(isinstance(m, KWConv2d) for m in child.modules())
