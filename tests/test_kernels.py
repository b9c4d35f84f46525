"""Kernel decomposition: FLOPs agree with torch's own counter, every memory move is a kernel."""
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from qnas.errors import QnasError
from qnas.nn import HorBlock, QuadraBlock, SwinBlock
from qnas.predictors import decompose, parse_input_shape
from qnas.predictors.devices import device_table
from qnas.predictors.registry import profile_predictor

MATRIX_OPS = {"conv", "pwconv", "dwconv", "gconv", "linear", "matmul"}


def counted_flops(module: nn.Module, shape) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module.eval()(torch.zeros(shape, device=next(module.parameters()).device))
    return counter.get_total_flops()


def matrix_flops(kernels) -> float:
    return sum(k.flops for k in kernels if k.op in MATRIX_OPS)


@pytest.mark.parametrize("build, shape", [
    (lambda: QuadraBlock(16, kernel_size=5, expansion=2), (1, 16, 14, 14)),
    (lambda: HorBlock(16, order=3), (2, 16, 9, 9)),
    (lambda: SwinBlock(32, num_heads=2), (1, 32, 10, 10)),   # padded to 14×14 windows
], ids=["QuadraBlock", "HorBlock", "SwinBlock"])
def test_block_flops_match_torch_flop_counter(build, shape):
    module = build()
    assert matrix_flops(decompose(module, shape)) == counted_flops(module, shape)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_flops_match_at_224(name):
    # both sides on the meta device: shapes only, so full size stays fast
    with torch.device("meta"):
        model = getattr(torchvision.models, name)()
    kernels = decompose(model, "1x3x224x224")
    assert matrix_flops(kernels) == counted_flops(model, (1, 3, 224, 224))


def test_quadrablock_kernels_are_typed_and_named():
    kernels = decompose(QuadraBlock(16, kernel_size=7, expansion=4), (1, 16, 8, 8))
    by_name = {(k.name, k.op) for k in kernels}
    assert ("spatial", "dwconv") in by_name          # the 3C-output depthwise conv
    assert ("mlp.pw1", "pwconv") in by_name and ("mlp.pw2", "pwconv") in by_name
    assert ("norm1", "layernorm") in by_name and ("mlp.act", "gelu") in by_name
    assert ("spatial", "mul") in by_name             # (A⋆x+a) ⊙ (B⋆x+b)
    spatial = next(k for k in kernels if k.op == "dwconv")
    assert spatial.params["channel_multiplier"] == 3 and spatial.params["kernel_size"] == (7, 7)
    # LayerNorm reads and writes the 16×8×8 map (plus its small statistics): ≥ 2 × 4 KiB
    norm = next(k for k in kernels if k.op == "layernorm")
    assert norm.bytes >= 2 * 16 * 8 * 8 * 4


def test_quadrablock_memory_kernels_cost_time_on_every_profile_device():
    kernels = decompose(QuadraBlock(32), (1, 32, 14, 14))
    ops = {k.op for k in kernels}
    assert {"layernorm", "gelu", "mul"} <= ops
    devices = [d.name for d in device_table() if d.kind == "profile"]
    assert {"cortexA76", "myriadvpu", "a100", "adreno640", "adreno630"} <= set(devices)
    for device in devices:
        ms = profile_predictor(device).cost_kernels(kernels)
        for kernel, cost in zip(kernels, ms):
            assert cost > 0, (device, kernel.op)


def test_views_are_not_kernels_but_copies_are():
    class ViewsOnly(nn.Module):
        def forward(self, x):
            return x.flatten(2).transpose(1, 2).unsqueeze(0)[..., :2]

    class Materialise(nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1).contiguous()

    assert decompose(ViewsOnly(), (1, 4, 5, 5)) == []
    (copy,) = decompose(Materialise(), (1, 4, 5, 5))
    assert copy.op == "copy" and copy.bytes == 2 * 100 * 4 and copy.flops == 0


def test_conv_types():
    net = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 16, 1),
                        nn.Conv2d(16, 16, 3, padding=1, groups=16),
                        nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.Conv2d(16, 16, 1, stride=2))
    ops = [k.op for k in decompose(net, (1, 8, 8, 8))]
    assert ops == ["conv", "pwconv", "dwconv", "gconv", "conv"]


def test_swin_attention_is_matmul_and_linear():
    kernels = decompose(SwinBlock(32, num_heads=2), (1, 32, 14, 14))
    ops = [k.op for k in kernels]
    assert ops.count("matmul") == 2 and ops.count("linear") == 2 and "softmax" in ops
    assert "copy" in ops          # window partition/reverse materialise permuted tensors


@pytest.mark.filterwarnings("ignore::FutureWarning")      # googlenet/inception init notice
@pytest.mark.parametrize("name", ["inception_v3", "googlenet", "densenet121", "shufflenet_v2_x1_0",
                                  "mnasnet1_0"])
def test_torchvision_zoo_decomposes_fully(name):
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None)
    kernels = decompose(model, (1, 3, 224, 224))
    assert kernels and all(k.bytes > 0 for k in kernels)
    assert not [k.params["aten"] for k in kernels if k.op == "other"]


def test_module_that_cannot_run_on_meta_runs_for_real():
    class ReadsAValue(nn.Module):
        def forward(self, x):
            return x.relu() if x.sum().item() >= 0 else x   # .item() needs data

    ops = [k.op for k in decompose(ReadsAValue(), (1, 3, 4, 4))]
    assert ops == ["reduce", "relu"]


def test_decompose_keeps_training_mode():
    block = QuadraBlock(8)
    block.train()
    decompose(block, (1, 8, 4, 4))
    assert block.training


def test_parse_input_shape():
    assert parse_input_shape("1x3x224x224") == (1, 3, 224, 224)
    assert parse_input_shape(" 1,3,32,32 ") == (1, 3, 32, 32)
    assert parse_input_shape((2, 3, 8, 8)) == (2, 3, 8, 8)
    for bad in ("1x3xfoo", "", "1x0x4x4", [1, -3]):
        with pytest.raises(QnasError, match="1x3x224x224"):
            parse_input_shape(bad)


def test_wrong_shape_is_a_clear_error():
    with pytest.raises(QnasError, match="does not run at input shape 1x5x8x8"):
        decompose(QuadraBlock(8), "1x5x8x8")


def test_kernels_record_their_producers():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = torch.relu_(self.bn(self.conv(x)))      # in place: the relu becomes the producer
            return y.flatten(1).view_as(x) + x           # views lead back to the relu

    kernels = decompose(Residual(), (1, 4, 6, 6))
    assert [k.op for k in kernels] == ["conv", "batchnorm", "relu", "add"]
    assert [k.params["id"] for k in kernels] == [0, 1, 2, 3]
    sources = [k.params["inputs_from"] for k in kernels]
    assert sources[0][0] is None and sources[1][0] == 0 and sources[2] == (1,)
    assert sources[3] == (2, None)                       # relu output (via views), network input
