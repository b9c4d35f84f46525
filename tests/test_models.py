"""The QuadraNet family: block parameter count, timm registration, every model end to end."""
import pytest
import timm
import torch
from torch import nn

import qnas  # noqa: F401  (registers the family with timm)
from qnas.errors import QnasError
from qnas.models import MODEL_NAMES, QuadraNet
from qnas.nn import ConvBlock, HorBlock, QuadraBlock, SkipBlock, SwinBlock

pytestmark = pytest.mark.usefixtures("single_thread")

# Every model trains one step at 32×32 and at 224×224. On one thread that is ~25 s for all ten;
# two OpenMP threads on the 2 shared test cores were ~20× slower (see conftest.single_thread).


@pytest.mark.parametrize("channels", [8, 16, 48, 64, 96])
def test_quadrablock_has_8c2_plus_161c_parameters(channels):
    block = QuadraBlock(channels, kernel_size=7, expansion=4)
    assert sum(p.numel() for p in block.parameters()) == 8 * channels ** 2 + 161 * channels


def test_every_model_is_registered_with_timm():
    assert len(MODEL_NAMES) == 10
    assert set(MODEL_NAMES) <= set(timm.list_models("quadranet*"))


def _train_step(model: nn.Module, size: int) -> None:
    model.zero_grad(set_to_none=True)
    out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 10)
    out.square().sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:3]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_registered_model_builds_and_runs_at_32_and_224(name):
    model = timm.create_model(name, num_classes=10)
    assert isinstance(model, QuadraNet) and model.num_classes == 10
    _train_step(model, 32)
    _train_step(model, 224)


def test_model_sizes_follow_the_paper():
    model = timm.create_model("quadranet_t", num_classes=10)
    assert model.dims == [64, 128, 256, 512]
    assert [len(stage) for stage in model.stages] == [2, 3, 18, 2]
    assert all(isinstance(block, QuadraBlock) and block.kernel_size == 7
               for stage in model.stages for block in stage)


def test_mixed_per_layer_op_lists_build_and_run():
    layers = [["k3e2", "identity"], ["conv-k5e4", {"kind": "hor", "order": 2}],
              ["swin", "k7e4"], ["skip"]]
    model = QuadraNet(num_classes=5, width=8, layers=layers)
    first, second = model.stages[0]
    assert isinstance(first, QuadraBlock) and first.kernel_size == 3
    assert first.mlp.pw1.out_channels == 16                   # e = 2 at C = 8
    assert isinstance(second, nn.Identity)
    assert isinstance(model.stages[1][0], ConvBlock) and model.stages[1][0].kernel_size == 5
    assert isinstance(model.stages[1][1], HorBlock) and model.stages[1][1].order == 2
    assert isinstance(model.stages[2][0], SwinBlock)
    assert isinstance(model.stages[3][0], SkipBlock)
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    assert model.stages[2][1].spatial.weight.grad is not None


def test_mixed_ops_through_timm_create_model():
    layers = [["k5e2"], ["identity", "k3e4"], ["k7e2"], ["k3e2"]]
    model = timm.create_model("quadranet_xxs", num_classes=3, layers=layers)
    assert [len(stage) for stage in model.stages] == [1, 2, 1, 1]
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_bad_layer_op_is_refused_with_one_line():
    with pytest.raises(ValueError, match="unknown layer op 'k4x2'") as error:
        QuadraNet(width=8, layers=[["k4x2"], [], [], []])
    assert "\n" not in str(error.value)


def test_pretrained_weights_are_refused():
    with pytest.raises(QnasError, match="no pretrained weights exist for quadranet_xxs"):
        timm.create_model("quadranet_xxs", pretrained=True)
