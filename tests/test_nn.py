"""QuadraConv2d, QuadraLinear and the blocks: the maths, the gradients, the memory, the errors."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qnas.nn import BLOCKS, QuadraConv2d, QuadraLinear, SwinBlock, build_block
from qnas.nn.quadra import _QuadraConvFunction

pytestmark = pytest.mark.usefixtures("single_thread", "exact_float32")

# CUDA runs the one-grouped-conv path, CPU the three-depthwise-conv path: test wherever we are
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def exact_float32():
    """cuDNN may run float32 convs in TF32 (~1e-3 relative), far from the 1e-5 asked here."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


def reference_convs(quadra: QuadraConv2d) -> nn.ModuleList:
    """Three separate depthwise nn.Conv2d holding QuadraConv2d's A, B and C filters."""
    channels, k = quadra.channels, quadra.kernel_size
    convs = nn.ModuleList(nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels,
                                    bias=quadra.bias is not None) for _ in range(3))
    with torch.no_grad():
        for index, (conv, weight) in enumerate(zip(convs, quadra.filters())):
            conv.weight.copy_(weight)
            if quadra.bias is not None:
                conv.bias.copy_(quadra.bias.view(channels, 3)[:, index])
    return convs.to(quadra.weight.device)


def reference_forward(convs: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    a, b, c = (conv(x) for conv in convs)
    return a * b + c


def assert_matches_reference(quadra, x, run=None):
    """Outputs and the gradients of input, weight and bias agree with the three-conv reference."""
    run = run or quadra
    x_ref = x.detach().clone().requires_grad_()
    x = x.detach().clone().requires_grad_()
    convs = reference_convs(quadra)
    out, expected = run(x), reference_forward(convs, x_ref)
    grad = torch.randn_like(expected)
    out.backward(grad)
    expected.backward(grad)
    channels, k = quadra.channels, quadra.kernel_size
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    weight_grad = torch.stack([conv.weight.grad for conv in convs], dim=1)
    torch.testing.assert_close(quadra.weight.grad, weight_grad.reshape(3 * channels, 1, k, k),
                               atol=1e-5, rtol=1e-5)
    if quadra.bias is not None:
        bias_grad = torch.stack([conv.bias.grad for conv in convs], dim=1)
        torch.testing.assert_close(quadra.bias.grad, bias_grad.view(-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("memory_efficient", [False, True])
@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
def test_quadraconv_matches_three_depthwise_convs(device, memory_efficient, kernel_size):
    quadra = QuadraConv2d(6, kernel_size, memory_efficient=memory_efficient).to(device)
    x = torch.randn(2, 6, 11, 8, device=device)       # non-square map
    assert_matches_reference(quadra, x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("memory_efficient", [False, True])
def test_quadraconv_matches_reference_on_channels_last_input(device, memory_efficient):
    quadra = QuadraConv2d(5, 3, memory_efficient=memory_efficient).to(device)
    x = torch.randn(2, 5, 9, 7, device=device).contiguous(memory_format=torch.channels_last)
    assert not x.is_contiguous()
    assert_matches_reference(quadra, x)


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_quadraconv_without_bias_matches_reference(memory_efficient):
    quadra = QuadraConv2d(4, 5, bias=False, memory_efficient=memory_efficient)
    assert quadra.bias is None
    assert_matches_reference(quadra, torch.randn(1, 4, 7, 10))


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("split", [False, True])
def test_both_kernel_layouts_of_the_training_path_match_reference(split, recompute):
    # split=False is the path CUDA takes (one grouped conv); run it on the CPU here as well
    quadra = QuadraConv2d(4, 3)
    assert_matches_reference(quadra, torch.randn(2, 4, 6, 9), run=lambda x: _QuadraConvFunction.apply(
        x, quadra.weight, quadra.bias, quadra.padding, recompute, split))


def test_quadraconv_inference_and_frozen_paths_match_reference():
    quadra = QuadraConv2d(3, 3)
    x = torch.randn(2, 3, 5, 6)
    expected = reference_forward(reference_convs(quadra), x)
    with torch.no_grad():
        torch.testing.assert_close(quadra(x), expected, atol=1e-5, rtol=1e-5)
    quadra.requires_grad_(False)                      # grads for the input only
    x.requires_grad_()
    quadra(x).sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    reference_forward(reference_convs(quadra), x_ref).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)


def test_traced_quadraconv_is_one_grouped_conv_and_correct():
    quadra = QuadraConv2d(4, 3)
    x = torch.randn(1, 4, 6, 6)
    with pytest.warns(Warning):                       # torch.jit.trace is deprecated upstream
        traced = torch.jit.trace(quadra, x)
    convs = [n for n in traced.graph.nodes() if n.kind() in ("aten::_convolution", "aten::conv2d")]
    assert len(convs) == 1
    torch.testing.assert_close(traced(x), reference_forward(reference_convs(quadra), x),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_quadraconv_is_quadratic_in_its_input(memory_efficient):
    quadra = QuadraConv2d(3, 3, memory_efficient=memory_efficient).double()
    x, direction = torch.randn(2, 3, 6, 5, dtype=torch.float64), torch.randn(2, 3, 6, 5,
                                                                             dtype=torch.float64)
    step = 0.5
    f = [quadra(x + i * step * direction) for i in range(4)]
    second = f[2] - 2 * f[1] + f[0]
    third = f[3] - 3 * f[2] + 3 * f[1] - f[0]
    scale = max(t.abs().max().item() for t in f)
    assert third.abs().max().item() < 1e-12 * scale
    # the second difference is exactly 2 h² (A⋆d)⊙(B⋆d): clearly non-zero
    filter_a, filter_b, _ = quadra.filters()
    a_d = F.conv2d(direction, filter_a, padding=1, groups=3)
    b_d = F.conv2d(direction, filter_b, padding=1, groups=3)
    torch.testing.assert_close(second, 2 * step ** 2 * a_d * b_d, atol=1e-12, rtol=1e-9)
    assert second.abs().max().item() > 1e-2 * scale


@pytest.mark.parametrize("memory_efficient", [False, True])
@pytest.mark.parametrize("pixel", [(4, 5), (0, 0), (8, 6)])
def test_output_channel_sees_only_its_input_channel_in_the_kxk_window(memory_efficient, pixel):
    quadra = QuadraConv2d(4, 3, memory_efficient=memory_efficient).double()
    x = torch.randn(1, 4, 9, 7, dtype=torch.float64, requires_grad=True)
    channel, (row, col) = 2, pixel
    quadra(x)[0, channel, row, col].backward()
    window = torch.zeros_like(x, dtype=torch.bool)
    window[0, channel, max(row - 1, 0):row + 2, max(col - 1, 0):col + 2] = True
    assert torch.all(x.grad[~window] == 0)
    assert torch.all(x.grad[window] != 0)


def saved_storage_bytes(forward, x: torch.Tensor, params) -> int:
    """Bytes of the distinct storages autograd saves for backward, parameters excluded."""
    excluded = {p.untyped_storage().data_ptr() for p in params}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward(x)
    return sum(storages.values())


def test_memory_efficient_mode_saves_fewer_bytes_for_backward():
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    default, efficient = QuadraConv2d(8, 7), QuadraConv2d(8, 7, memory_efficient=True)
    naive = reference_convs(default)
    default_bytes = saved_storage_bytes(default, x, default.parameters())
    efficient_bytes = saved_storage_bytes(efficient, x, efficient.parameters())
    naive_bytes = saved_storage_bytes(lambda t: reference_forward(naive, t), x, naive.parameters())
    assert efficient_bytes < default_bytes <= naive_bytes
    assert efficient_bytes == x.nbytes                 # only the input
    # the input, A⋆x+a and B⋆x+b (on CUDA one 3C-channel conv output holds both: 4 maps)
    assert default_bytes == (3 if x.device.type == "cpu" else 4) * x.nbytes


def test_quadralinear_matches_its_formula():
    layer = QuadraLinear(5, 3)
    x = torch.randn(2, 4, 5)
    w, b = layer.proj.weight, layer.proj.bias
    a = x @ w[0:3].T + b[0:3]
    bb = x @ w[3:6].T + b[3:6]
    c = x @ w[6:9].T + b[6:9]
    torch.testing.assert_close(layer(x), a * bb + c)
    assert layer(x).shape == (2, 4, 3)


@pytest.mark.parametrize("make, message", [
    (lambda: QuadraConv2d(0), "channels must be a positive integer"),
    (lambda: QuadraConv2d(-4, 3), "channels must be a positive integer"),
    (lambda: QuadraConv2d(4, 4), "kernel_size must be odd"),
    (lambda: QuadraConv2d(4, 0), "kernel_size must be a positive integer"),
    (lambda: QuadraLinear(0, 3), "in_features must be a positive integer"),
    (lambda: QuadraLinear(3, -1), "out_features must be a positive integer"),
    (lambda: build_block("quadra", 0), "dim must be a positive integer"),
    (lambda: build_block("quadra", 8, kernel_size=6), "kernel_size must be odd"),
    (lambda: build_block("fancy", 8), "unknown block kind 'fancy'; known kinds: quadra"),
    (lambda: build_block("skip", 8, kernel_size=3), "does not accept these arguments"),
])
def test_bad_arguments_raise_one_line_value_errors(make, message):
    with pytest.raises(ValueError, match=message) as error:
        make()
    assert "\n" not in str(error.value)


def test_quadraconv_refuses_wrong_input_shape():
    with pytest.raises(ValueError, match=r"expects N×4×H×W input, got shape \(1, 3, 5, 5\)"):
        QuadraConv2d(4)(torch.randn(1, 3, 5, 5))


@pytest.mark.parametrize("kind", [*BLOCKS, "identity"])
def test_every_block_kind_runs_forward_and_backward(kind):
    block = build_block(kind, 16)
    x = torch.randn(2, 16, 10, 10, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, param in block.named_parameters():
        assert param.grad is not None, f"{kind}: {name} got no gradient"


@pytest.mark.parametrize("hw", [(10, 13), (5, 5), (8, 14)])
def test_swin_block_works_on_maps_not_multiple_of_the_window(hw):
    block = SwinBlock(32, layer_scale_init=1.0)       # γ = 1: attention visibly shapes the output
    x = torch.randn(2, 32, *hw, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert block.spatial.relative_position_bias_table.grad.abs().sum() > 0


def test_swin_block_attends_within_its_window_only_also_at_the_padded_edge():
    block = SwinBlock(32, layer_scale_init=1.0).double()
    x = torch.randn(1, 32, 10, 13, dtype=torch.float64, requires_grad=True)
    block(x)[0, :, 8, 12].sum().backward()           # a pixel of the last, zero-padded window
    window = torch.zeros(10, 13, dtype=torch.bool)
    window[7:10, 7:13] = True                          # rows 7-13 and cols 7-13, cut at the map
    reach = x.grad[0].abs().sum(0) != 0
    assert torch.equal(reach, window)
