"""Kernel decomposition: what a module does at a concrete input shape, as typed kernels.

:func:`decompose` runs the module once (eval mode, no grad) under a ``TorchDispatchMode`` that
sees every ATen op with its tensors, while forward hooks say which submodule issued it. That
works for ANY module (QuadraNet, timm, every torchvision model), not only the ones a hand-written
rule table knows. By default it runs on the ``meta`` device (shapes only, no arithmetic: a
wide_resnet50_2 at 224×224 decomposes in well under a second); a module that cannot run on
``meta`` is run once on real zero tensors instead.

Every kernel carries FLOPs (a multiply-add counts 2, the same formulas as
``torch.utils.flop_counter`` for conv/linear/matmul) and bytes moved (float32 read + write).
Pure views (view, permute, transpose, expand, split, …) move no bytes and are not kernels; every
op that does touch memory is one, so nothing is silently costed at zero.

Every kernel also records where its inputs came from: ``params["id"]`` is its index in the
decomposition and ``params["inputs_from"]`` the ids of the kernels that produced its tensor
inputs (``None`` for the module's input, weights and constants; views are followed to the kernel
that produced their base). Profiles use it to fold a BatchNorm or activation into the convolution
that produced its input, as TFLite and OpenVINO do (:mod:`qnas.predictors.profile`).

A KernelWarehouse layer (``KWConv2d``) decomposes into its attention branch (pool, fc, BN,
ReLU, the normalisation arithmetic), the kernel assembly (``….assemble``: attention × warehouse,
a matrix product with a weight, hence ``linear``) and its per-sample convolution, which runs as
one grouped conv with groups = batch and is typed as the dense conv/pwconv each sample gets
(``params["dynamic"]``, ``params["batch"]``).
"""
from __future__ import annotations

import contextlib
import math
import re
import warnings
import weakref
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..errors import QnasError
from .base import Kernel

# Bump when the kernel accounting changes: LUT cache keys include it.
DECOMPOSITION_VERSION = "2"

# Bytes per element: costs assume float32 everywhere (the deployment precision of the
# reference predictors), whatever dtype the trace ran in.
BYTES_PER_ELEMENT = 4

# --- the op table ------------------------------------------------------------------------------
# ATen op (overload packet name, trailing "_" of in-place variants stripped) -> kernel type.
# Convolutions and matrix products are typed by their shapes in _classify().
_OP_TYPES: dict[str, str] = {}


def _register(kernel_type: str, names: Iterable[str]) -> None:
    for name in names:
        _OP_TYPES[name] = kernel_type


_register("layernorm", ["native_layer_norm", "layer_norm", "rms_norm", "_fused_rms_norm"])
_register("groupnorm", ["native_group_norm", "group_norm"])
_register("batchnorm", ["native_batch_norm", "_native_batch_norm_legit",
                        "_native_batch_norm_legit_no_training", "batch_norm",
                        "cudnn_batch_norm", "miopen_batch_norm", "instance_norm"])
_register("gelu", ["gelu"])
_register("relu", ["relu", "relu6", "hardtanh", "clamp", "clamp_min", "clamp_max",
                   "leaky_relu", "threshold", "elu", "celu", "selu", "prelu", "_prelu_kernel"])
_register("hswish", ["hardswish"])
_register("sigmoid", ["sigmoid", "hardsigmoid", "silu", "mish", "tanh", "log_sigmoid_forward"])
_register("softmax", ["_softmax", "softmax", "_log_softmax", "log_softmax"])
_register("add", ["add", "sub", "rsub"])
_register("mul", ["mul", "div", "addcmul", "addcdiv"])
_register("elementwise", ["neg", "abs", "sqrt", "rsqrt", "pow", "exp", "log", "erf", "sin",
                          "cos", "reciprocal", "sign", "where", "masked_fill", "lerp", "maximum",
                          "minimum", "eq", "ne", "lt", "le", "gt", "ge", "logical_not", "bitwise_not",
                          "floor", "ceil", "round", "trunc", "square"])
_register("pool", ["max_pool2d_with_indices", "max_pool2d", "max_pool1d", "max_pool3d",
                   "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d",
                   "adaptive_avg_pool1d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d",
                   "adaptive_avg_pool3d", "_adaptive_avg_pool3d", "adaptive_max_pool2d",
                   "adaptive_max_pool1d", "adaptive_max_pool3d"])
# reductions: "pool" when they reduce the trailing spatial dims of an N×C×H×W map, else "reduce"
_REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "var", "std", "var_mean",
               "std_mean", "prod", "norm", "linalg_vector_norm", "logsumexp", "argmax", "argmin"}
_register("copy", ["clone", "contiguous", "cat", "stack", "constant_pad_nd", "pad",
                   "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
                   "replication_pad1d", "replication_pad2d", "replication_pad3d", "copy",
                   "index", "index_select", "gather", "take_along_dim", "roll", "repeat",
                   "flip", "tile", "zeros", "ones", "full", "zeros_like", "ones_like",
                   "full_like", "fill", "zero", "new_zeros", "new_ones", "new_full",
                   "scatter", "index_put", "index_copy", "slice_scatter", "select_scatter",
                   "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle",
                   "im2col", "col2im", "arange", "_to_copy", "embedding"])
_register("resize", ["upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d",
                     "upsample_bilinear2d", "upsample_bicubic2d", "upsample_linear1d",
                     "upsample_trilinear3d", "_upsample_nearest_exact2d",
                     "_upsample_bilinear2d_aa", "grid_sampler_2d", "affine_grid_generator"])

# Ops that allocate, alias or read metadata: no bytes move, no kernel runs.
_NOT_KERNELS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
                "_unsafe_view", "detach", "lift_fresh", "lift_fresh_copy", "alias",
                "_local_scalar_dense", "is_nonzero", "sym_size", "sym_stride", "sym_numel",
                "sym_storage_offset", "set", "resize", "resize_as", "_assert_async",
                "_assert_scalar", "native_dropout", "dropout", "feature_dropout", "alpha_dropout",
                "_efficientzerotensor", "scalar_tensor", "_copy_from_and_resize",
                # return views, only without view tracking
                "unsafe_split", "unsafe_split_with_sizes", "unsafe_chunk"}

# FLOPs per output element of the element-wise and normalisation kernels. Only the compute side
# of a roofline uses them (these kernels are memory-bound on every profile device); conv/linear/
# matmul FLOPs come from their shapes.
FLOPS_PER_ELEMENT = {
    "add": 1, "mul": 1, "relu": 1, "elementwise": 1, "copy": 0, "resize": 4,
    "batchnorm": 2,          # eval: one scale, one shift
    "layernorm": 8,          # mean, variance, normalise, affine
    "groupnorm": 8,
    "gelu": 8,               # erf polynomial + 3 mul/add
    "hswish": 4, "sigmoid": 4,
    "softmax": 5,            # max, sub, exp, sum, div
    "reduce": 1, "other": 1,
}

# Kernel types, for docs and for the profiles' op -> class tables.
KERNEL_TYPES = ("conv", "pwconv", "dwconv", "gconv", "linear", "matmul", "layernorm",
                "groupnorm", "batchnorm", "gelu", "relu", "hswish", "sigmoid", "softmax", "add",
                "mul", "elementwise", "pool", "reduce", "copy", "resize", "other")

# Multiply-accumulates: the kernel types whose FLOPs are multiply-adds (2 FLOPs each).
MAC_KERNELS = ("conv", "pwconv", "dwconv", "gconv", "linear", "matmul")
MACS_RULE = ("forward MACs of the conv, linear and matmul kernels of qnas's kernel decomposition "
             "(qnas.predictors.kernels.decompose, the formulas of torch.utils.flop_counter), "
             "MACs = FLOPs / 2; element-wise ops, norms and softmax not counted")


# --- input shapes ------------------------------------------------------------------------------
_SHAPE_SEPARATORS = re.compile(r"[x×,*\s]+")


def parse_input_shape(shape: str | Sequence[int] | torch.Size) -> tuple[int, ...]:
    """``"1x3x224x224"`` / ``(1, 3, 224, 224)`` -> ``(1, 3, 224, 224)``; anything else is refused."""
    example = "use e.g. 1x3x224x224 (N×C×H×W)"
    if isinstance(shape, str):
        text = shape.strip().strip("()[]")
        parts = [p for p in _SHAPE_SEPARATORS.split(text) if p]
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            raise QnasError(f"input shape {shape!r} is not a list of integers; {example}") from None
    else:
        try:
            dims = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise QnasError(f"input shape {shape!r} is not a list of integers; {example}") from None
    if not dims or any(d <= 0 for d in dims):
        raise QnasError(f"input shape {shape!r} needs positive dimensions; {example}")
    return dims


# --- helpers -----------------------------------------------------------------------------------
def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _stored_elements(tensor: torch.Tensor) -> int:
    """Elements a kernel really touches: broadcast (stride-0) dims are read once, not per use."""
    if tensor.dim() == 0:
        return 1
    return math.prod(size for size, stride in zip(tensor.shape, tensor.stride()) if stride != 0)


# Modules that run a per-sample (dynamic) kernel as ONE grouped convolution with groups = batch
# (KernelWarehouse's KWConv2d): their convolution is typed as the per-sample conv it is.
_DYNAMIC_CONV_MODULES = {"KWConv2d"}


def _conv_kernel(args, out: torch.Tensor, dynamic: bool = False) -> tuple[str, float, dict]:
    x, weight = args[0], args[1]
    stride = list(args[3]) if len(args) > 3 else [1]
    transposed = bool(args[6]) if len(args) > 6 else False
    groups = int(args[8]) if len(args) > 8 else 1
    kernel_size = tuple(weight.shape[2:])
    cin, cout = int(x.shape[1]), int(out.shape[1])
    batch = 1
    if dynamic and groups > 1 and cin % groups == 0 and cout % groups == 0:
        # x is 1×(B·C)×H×W with one group per sample: B per-sample dense convs (same FLOPs)
        batch, cin, cout, groups = groups, cin // groups, cout // groups, 1
    # the formula of torch.utils.flop_counter.conv_flop_count (bias not counted)
    conv_shape = (x.shape if transposed else out.shape)[2:]
    flops = 2.0 * x.shape[0] * math.prod(weight.shape) * math.prod(conv_shape)
    if transposed or groups == 1:
        pointwise = math.prod(kernel_size) == 1 and all(s == 1 for s in stride) and not transposed
        kind = "pwconv" if pointwise else "conv"
    elif groups == cin:
        # one input channel per group: depthwise, possibly with a channel multiplier
        # (QuadraConv2d runs its three depthwise filters as one conv with 3C outputs)
        kind = "dwconv"
    else:
        kind = "gconv"
    params = {"cin": cin, "cout": cout, "kernel_size": kernel_size, "stride": tuple(stride),
              "groups": groups, "transposed": transposed, "has_bias": args[2] is not None,
              "hw_in": tuple(x.shape[2:]), "hw_out": tuple(out.shape[2:]),
              "channel_multiplier": cout // cin if kind == "dwconv" else 1}
    if dynamic:
        params.update(dynamic=True, batch=batch)
    return kind, flops, params


def _mm_flops(name: str, args, out: torch.Tensor) -> tuple[float, dict]:
    if name in ("addmm", "mm"):
        a, b = (args[1], args[2]) if name == "addmm" else (args[0], args[1])
        m, k, n = a.shape[0], a.shape[1], b.shape[1]
        return 2.0 * m * k * n, {"batch": 1, "m": m, "k": k, "n": n}
    if name in ("bmm", "baddbmm"):
        a, b = (args[1], args[2]) if name == "baddbmm" else (args[0], args[1])
        batch, m, k, n = a.shape[0], a.shape[1], a.shape[2], b.shape[2]
        return 2.0 * batch * m * k * n, {"batch": batch, "m": m, "k": k, "n": n}
    # scaled dot-product attention (all variants): q@kᵀ and attn@v, as flop_counter counts them
    q, k, v = args[0], args[1], args[2]
    batch = math.prod(q.shape[:-2])
    s_q, d, s_k, d_v = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    return 2.0 * batch * s_q * s_k * (d + d_v), {"batch": batch, "m": s_q, "k": d, "n": s_k}


def _reduction_kind(args, out) -> str:
    x = args[0]
    dims = args[1] if len(args) > 1 else None
    if isinstance(dims, int):
        dims = [dims]
    if x.dim() == 4 and dims is not None and {d % 4 for d in dims} == {2, 3}:
        return "pool"
    return "reduce"


class _KernelRecorder(TorchDispatchMode):
    """Records one :class:`Kernel` per ATen op that runs a kernel."""

    def __init__(self, module_stack: list[str], module_types: list[str],
                 parameters: Iterable[torch.Tensor]):
        super().__init__()
        self.kernels: list[Kernel] = []
        self._module_stack = module_stack
        self._module_types = module_types
        # tensors that are (views of) weights: a matrix product with one of them is a Linear
        self._weight_ids = {id(p) for p in parameters}
        self._keep_alive: list[torch.Tensor] = []   # so that ids of tracked views are not reused
        # id(tensor) -> (weak reference, index of the kernel that produced it)
        self._producers: dict[int, tuple[weakref.ref, int]] = {}

    def _producer(self, tensor: torch.Tensor) -> int | None:
        entry = self._producers.get(id(tensor))
        return entry[1] if entry is not None and entry[0]() is tensor else None

    def _produced(self, tensors: list[torch.Tensor], index: int | None) -> None:
        if index is None:
            return
        for tensor in tensors:
            self._producers[id(tensor)] = (weakref.ref(tensor), index)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__.rstrip("_") or func.overloadpacket.__name__
        inputs = _tensors((args, kwargs))
        if func.is_view or name in _NOT_KERNELS:
            if func.is_view and any(id(t) in self._weight_ids for t in inputs):
                for view in _tensors(out):
                    self._weight_ids.add(id(view))
                    self._keep_alive.append(view)
            if func.is_view and inputs:
                self._produced(_tensors(out), self._producer(inputs[0]))
            return out
        outputs = _tensors(out)
        if not outputs:
            return out
        inputs_from = tuple(self._producer(t) for t in inputs)
        kernel = self._kernel(name, args, inputs, outputs)
        kernel.params.update(id=len(self.kernels), inputs_from=inputs_from)
        self.kernels.append(kernel)
        self._produced(outputs, kernel.params["id"])
        return out

    def _kernel(self, name: str, args, inputs, outputs) -> Kernel:
        out = outputs[0]
        # read every input, write every output (an in-place op reads and writes its tensor)
        moved = sum(_stored_elements(t) for t in inputs) + sum(_stored_elements(t) for t in outputs)
        params = {"aten": name, "module_type": self._module_types[-1],
                  "input_shape": tuple(inputs[0].shape) if inputs else (),
                  "output_shape": tuple(out.shape)}
        if name in ("convolution", "_convolution", "convolution_overrideable"):
            kind, flops, extra = _conv_kernel(
                args, out, dynamic=self._module_types[-1] in _DYNAMIC_CONV_MODULES)
            params.update(extra)
        elif name in ("addmm", "mm", "bmm", "baddbmm") or name.startswith("_scaled_dot_product") \
                or name == "scaled_dot_product_attention":
            flops, extra = _mm_flops(name, args, out)
            params.update(extra)
            matrices = inputs[1:3] if name in ("addmm", "baddbmm") else inputs[:2]
            kind = "linear" if any(id(t) in self._weight_ids for t in matrices) else "matmul"
        else:
            if name in _REDUCTIONS:
                kind = _reduction_kind(args, out)
            else:
                kind = _OP_TYPES.get(name, "other")
            if kind == "pool" and name not in _REDUCTIONS:
                # every output element reads its window: input / output elements per output
                window = max(1, _stored_elements(inputs[0]) // max(1, out.numel()))
                flops = float(out.numel() * window)
            elif kind in ("pool", "reduce"):
                flops = float(_stored_elements(inputs[0]))
            else:
                flops = float(FLOPS_PER_ELEMENT.get(kind, 1) * out.numel())
        return Kernel(op=kind, flops=flops, bytes=float(moved * BYTES_PER_ELEMENT),
                      name=self._module_stack[-1], params=params)


@contextlib.contextmanager
def _module_tracker(module: nn.Module, stack: list[str], types: list[str]):
    """Keep ``stack[-1]`` = the path of the innermost module currently running forward."""
    names: dict[int, str] = {}
    for name, sub in module.named_modules(remove_duplicate=False):
        names.setdefault(id(sub), name)
    handles = []

    def pre_hook(sub, _inputs):
        stack.append(names.get(id(sub), stack[-1]))
        types.append(type(sub).__name__)

    def post_hook(sub, _inputs, _output):
        if len(stack) > 1:
            stack.pop()
            types.pop()

    for sub in module.modules():
        handles.append(sub.register_forward_pre_hook(pre_hook))
        handles.append(sub.register_forward_hook(post_hook, always_call=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _run(module: nn.Module, input_shape: tuple[int, ...], on_meta: bool) -> list[Kernel]:
    stack, types = [""], [type(module).__name__]
    if on_meta:
        # stand-in meta tensors for every parameter and buffer: no copy of the real weights
        state = {name: torch.empty_like(t, device="meta")
                 for name, t in [*module.named_parameters(remove_duplicate=False),
                                 *module.named_buffers(remove_duplicate=False)]}
        weights = [state[name] for name, _ in module.named_parameters(remove_duplicate=False)]
        x = torch.zeros(input_shape, device="meta")

        def call():
            return torch.func.functional_call(module, state, (x,), strict=False)
    else:
        first = next(iter(module.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
        dtype = first.dtype if first is not None and first.is_floating_point() else None
        weights = list(module.parameters())
        x = torch.zeros(input_shape, device=device, dtype=dtype)

        def call():
            return module(x)

    recorder = _KernelRecorder(stack, types, weights)
    with _module_tracker(module, stack, types), torch.no_grad(), recorder:
        call()
    return recorder.kernels


def decompose(module: nn.Module, input_shape: str | Sequence[int]) -> list[Kernel]:
    """The kernels one forward pass of ``module`` runs at ``input_shape`` (eval mode, batch as given).

    Runs on the ``meta`` device when it can (shapes only, fast, no memory), otherwise once on
    zero tensors on the module's device. ``module`` is left in the training mode it came in.
    """
    shape = parse_input_shape(input_shape)
    if not isinstance(module, nn.Module):
        raise QnasError(f"decompose() needs a torch.nn.Module, got {type(module).__name__}")
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return _run(module, shape, on_meta=True)
            except QnasError:
                raise
            except Exception:  # noqa: BLE001 -- e.g. .item() or a plain tensor attribute: run for real
                try:
                    return _run(module, shape, on_meta=False)
                except Exception as err:  # noqa: BLE001
                    raise QnasError(
                        f"{type(module).__name__} does not run at input shape "
                        f"{'x'.join(map(str, shape))}: {type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]}; check the shape (N×C×H×W)") from None
    finally:
        module.train(was_training)


def macs_of(kernels: Sequence[Kernel], under: str | None = None) -> int:
    """Multiply-accumulates of ``kernels`` (see :data:`MACS_RULE`); with ``under``, only of
    those issued by the submodule at that path or its descendants (a per-layer count)."""
    flops = sum(k.flops for k in kernels if k.op in MAC_KERNELS
                and (under is None or k.name == under or k.name.startswith(under + ".")))
    return round(flops / 2)


def count_macs(module: nn.Module, input_shape: str | Sequence[int]) -> int:
    """Forward multiply-accumulates of ``module`` at ``input_shape`` (see :data:`MACS_RULE`);
    no arithmetic runs (the decomposition runs on the ``meta`` device when it can)."""
    return macs_of(decompose(module, input_shape))
