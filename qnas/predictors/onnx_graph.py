"""An ONNX graph as kernels, so that a device profile can predict a model a user has as a file
(``qnas latency model.onnx``) — no PyTorch module needed.

Each node becomes the :class:`~qnas.predictors.base.Kernel` that :func:`qnas.predictors.kernels.
decompose` records for the PyTorch op it stands for, with the same FLOP and byte rules (FLOPs
of conv/Gemm/MatMul from their shapes, a multiply-add counts 2; bytes = float32 elements of every
input, weights included, and every output), so that a model and its ONNX export predict alike:

* ``Conv`` → ``conv``/``pwconv``/``dwconv``/``gconv`` by groups and kernel, ``Gemm`` and a
  ``MatMul`` with a weight → ``linear`` (a bias ``Add`` right after a MatMul is part of it, as
  in PyTorch's ``addmm``), other ``MatMul`` → ``matmul``; norms, activations, element-wise ops,
  pooling and reductions → their kernel types; ``Concat``/``Pad``/``Tile``/index gathers →
  ``copy``, ``Resize`` → ``resize``, an op with no rule → ``other`` (costed by its bytes).
* Layout ops that PyTorch runs as views — ``Reshape``, ``Flatten``, ``(Un)Squeeze``,
  ``Slice``, ``Split``, ``Expand``, ``Identity``, ``Transpose`` — are not kernels, as in
  qnas's decomposition; a ``Transpose`` feeding a ``Reshape``/``Flatten`` is a ``copy`` (PyTorch
  must make the permuted tensor contiguous there, e.g. a channel shuffle).
* Nodes that only compute shapes (integer or boolean outputs, ``Shape``, ``Constant``) are not
  kernels.
* ``BatchNormalization`` that the exporter folded into the preceding ``Conv`` is gone from the
  graph (profiles with a ``fusion`` table fold it in the module's decomposition too).
* ``params["id"]``/``params["inputs_from"]`` record which kernel produced each input (views
  followed to their source), as the decomposition does, for the profiles' fusion rules.

Shapes come from ONNX shape inference at a fixed input shape (``onnxsim`` folds the graph first
when inference alone leaves a tensor's shape open).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import QnasError
from .base import Kernel, Prediction
from .kernels import BYTES_PER_ELEMENT, FLOPS_PER_ELEMENT, parse_input_shape

DEFAULT_SHAPE = (1, 3, 224, 224)
_FLOAT_TYPES = {1, 10, 11, 16}             # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_VIEWS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Split", "Expand", "Identity",
          "Dropout", "Cast", "CastLike", "Transpose", "Shape", "Size", "Constant",
          "ConstantOfShape", "Range", "Optional", "OptionalGetElement"}
_RESHAPERS = {"Reshape", "Flatten"}
# ONNX op -> (kernel type, the ATen op PyTorch would run)
_OPS = {
    "BatchNormalization": ("batchnorm", "native_batch_norm"),
    "LayerNormalization": ("layernorm", "native_layer_norm"),
    "RMSNormalization": ("layernorm", "rms_norm"),
    "SimplifiedLayerNormalization": ("layernorm", "rms_norm"),
    "GroupNormalization": ("groupnorm", "native_group_norm"),
    "InstanceNormalization": ("groupnorm", "instance_norm"),
    "Gelu": ("gelu", "gelu"), "FastGelu": ("gelu", "gelu"),
    "Relu": ("relu", "relu"), "Clip": ("relu", "hardtanh"), "LeakyRelu": ("relu", "leaky_relu"),
    "PRelu": ("relu", "prelu"), "Elu": ("relu", "elu"), "Selu": ("relu", "selu"),
    "Celu": ("relu", "celu"), "ThresholdedRelu": ("relu", "threshold"),
    "HardSwish": ("hswish", "hardswish"),
    "Sigmoid": ("sigmoid", "sigmoid"), "HardSigmoid": ("sigmoid", "hardsigmoid"),
    "Tanh": ("sigmoid", "tanh"), "Mish": ("sigmoid", "mish"), "Softplus": ("sigmoid", "softplus"),
    "Softmax": ("softmax", "_softmax"), "LogSoftmax": ("softmax", "_log_softmax"),
    "Add": ("add", "add"), "Sub": ("add", "sub"), "Sum": ("add", "add"),
    "Mul": ("mul", "mul"), "Div": ("mul", "div"),
    "Concat": ("copy", "cat"), "Pad": ("copy", "constant_pad_nd"), "Tile": ("copy", "repeat"),
    "GatherElements": ("copy", "gather"), "GatherND": ("copy", "index"),
    "ScatterND": ("copy", "index_put"), "ScatterElements": ("copy", "scatter"),
    "DepthToSpace": ("copy", "pixel_shuffle"), "SpaceToDepth": ("copy", "pixel_unshuffle"),
    "Resize": ("resize", "upsample_bilinear2d"), "Upsample": ("resize", "upsample_nearest2d"),
    "GridSample": ("resize", "grid_sampler_2d"),
    "MaxPool": ("pool", "max_pool2d"), "AveragePool": ("pool", "avg_pool2d"),
    "LpPool": ("pool", "avg_pool2d"),
    "GlobalAveragePool": ("pool", "mean"), "GlobalMaxPool": ("pool", "amax"),
    "GlobalLpPool": ("pool", "norm"),
}
for _name in ("Pow", "Sqrt", "Exp", "Log", "Erf", "Neg", "Abs", "Reciprocal", "Max", "Min",
              "Where", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign", "Mod", "Equal", "Less",
              "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or"):
    _OPS.setdefault(_name, ("elementwise", _name.lower()))
_REDUCES = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "amax", "ReduceMin": "amin",
            "ReduceProd": "prod", "ReduceL2": "norm", "ReduceL1": "norm", "ReduceSumSquare": "sum",
            "ReduceLogSumExp": "logsumexp", "ArgMax": "argmax", "ArgMin": "argmin"}


@dataclass
class OnnxGraph:
    """An ONNX model at a fixed input shape, with every tensor's shape known."""

    path: str
    input_name: str
    input_shape: tuple[int, ...]
    declared_shape: tuple                  # the input's dims as the file declares them
    model: object                          # onnx.ModelProto (shape-inferred)
    shapes: dict                           # tensor name -> (shape tuple, elem_type)
    constants: dict                        # tensor name -> numpy array (initializers, Constant)


def _declared_input(model) -> tuple[str, tuple, int]:
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise QnasError(f"the ONNX graph has {len(inputs)} inputs "
                        f"({', '.join(i.name for i in inputs) or 'none'}); qnas predicts "
                        f"graphs with one image input")
    tensor = inputs[0].type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in tensor.shape.dim)
    return inputs[0].name, dims, tensor.elem_type


def _resolve_shape(declared: tuple, given: Sequence[int] | None, where: str) -> tuple[int, ...]:
    if given is not None:
        shape = parse_input_shape(given)
        if declared and len(shape) != len(declared):
            raise QnasError(f"{where}: input shape {'x'.join(map(str, shape))} has "
                            f"{len(shape)} dims, the graph's input has {len(declared)} "
                            f"({'x'.join(map(str, declared))})")
        clash = [i for i, (d, s) in enumerate(zip(declared, shape)) if isinstance(d, int)
                 and d > 0 and d != s]
        if clash:
            raise QnasError(f"{where}: the graph's input is fixed at "
                            f"{'x'.join(map(str, declared))}; --input-shape "
                            f"{'x'.join(map(str, shape))} differs in dim {clash[0]}")
        return shape
    if all(isinstance(d, int) and d > 0 for d in declared) and declared:
        return tuple(declared)
    if len(declared) == len(DEFAULT_SHAPE):
        # dynamic dims (batch, height, width) from the default deployment shape
        return tuple(d if isinstance(d, int) and d > 0 else DEFAULT_SHAPE[i]
                     for i, d in enumerate(declared))
    raise QnasError(f"{where}: the graph's input {'x'.join(map(str, declared))} has dynamic "
                    f"dims; give the shape to predict at, e.g. --input-shape 1x3x224x224")


def _shapes_of(model) -> dict:
    shapes = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if all(d is not None for d in dims):
            shapes[value.name] = (tuple(dims), tensor.elem_type)
    for init in model.graph.initializer:
        shapes[init.name] = (tuple(init.dims), init.data_type)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = (tuple(attr.t.dims), attr.t.data_type)
    return shapes


def _missing(model, shapes: dict) -> list[str]:
    return [out for node in model.graph.node if node.op_type not in _VIEWS
            for out in node.output if out and out not in shapes]


def load_onnx_graph(path: str | os.PathLike, input_shape: Sequence[int] | None = None
                    ) -> OnnxGraph:
    """Read the ONNX file ``path`` and infer every tensor's shape at ``input_shape`` (default:
    the graph's own static shape; dynamic dims of a 4-D input from 1×3×224×224)."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise QnasError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as err:  # noqa: BLE001 -- a truncated or foreign file
        raise QnasError(f"{path} is not a readable ONNX model ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:120]})") from None
    name, declared, _ = _declared_input(model)
    shape = _resolve_shape(declared, input_shape, where)
    for value in model.graph.input:
        if value.name == name:
            for dim, size in zip(value.type.tensor_type.shape.dim, shape):
                dim.Clear()
                dim.dim_value = int(size)
    inferred = _infer(model)
    shapes = _shapes_of(inferred)
    if _missing(inferred, shapes):
        inferred = _infer(_simplified(model, name, shape, where))
        shapes = _shapes_of(inferred)
    missing = _missing(inferred, shapes)
    if missing:
        raise QnasError(f"{where}: shape inference leaves {len(missing)} tensor(s) without a "
                        f"shape at input {'x'.join(map(str, shape))} (e.g. {missing[0]}); "
                        f"simplify the graph (onnxsim) or give another --input-shape")
    constants = {init.name: numpy_helper.to_array(init) for init in inferred.graph.initializer}
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attr.t)
    return OnnxGraph(where, name, shape, declared, inferred, shapes, constants)


def _infer(model):
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 -- inference gives up on some custom ops: try onnxsim
        return model


def _simplified(model, name: str, shape: tuple, where: str):
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model, overwrite_input_shapes={name: list(shape)})
        return simplified if ok else model
    except Exception as err:  # noqa: BLE001
        raise QnasError(f"{where}: the graph's shapes cannot be inferred at input "
                        f"{'x'.join(map(str, shape))} ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:120]})") from None


# --- nodes -> kernels ------------------------------------------------------------------------------
def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _module_path(node_name: str) -> str:
    """``/stages/stages.0/stages.0.0/mlp/pw1/Conv`` → ``stages.0.0.mlp.pw1`` (the torch
    exporter's scopes); other names as they are."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2:
        return node_name
    scopes = parts[:-1]
    start = max((i for i, p in enumerate(scopes) if "." in p), default=0)
    return ".".join(scopes[start:])


def _numel(shape: tuple) -> int:
    return math.prod(shape) if shape else 1


class _Converter:
    def __init__(self, graph: OnnxGraph):
        self.graph = graph
        self.shapes = graph.shapes
        self.consumers: dict[str, list] = {}
        for node in graph.model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.weights = set(graph.constants)
        self.producer: dict[str, int] = {}         # tensor name -> id of the kernel that made it
        self.count = 0

    def shape(self, name: str) -> tuple:
        return self.shapes.get(name, ((), 1))[0]

    def is_float(self, name: str) -> bool:
        return self.shapes.get(name, ((), 1))[1] in _FLOAT_TYPES

    def moved(self, inputs: Sequence[str], outputs: Sequence[str]) -> float:
        names = [n for n in inputs if n] + [n for n in outputs if n]
        return float(sum(_numel(self.shape(n)) for n in names) * BYTES_PER_ELEMENT)

    def kernels(self) -> list[Kernel]:
        out, absorbed = [], set()
        for node in self.graph.model.graph.node:
            if id(node) in absorbed:
                continue
            kernel = self.kernel(node, absorbed)
            if kernel is not None:
                out.append(kernel)
                self.count += 1
                for name in kernel.params.pop("_outputs"):
                    self.producer[name] = kernel.params["id"]
            elif node.input and node.input[0] in self.producer:
                # a view (or a node that is not a kernel): its outputs come from its input's
                # producer, as PyTorch's views do
                for name in node.output:
                    self.producer.setdefault(name, self.producer[node.input[0]])
        return out

    def _base_params(self, node, aten: str) -> dict:
        first = next((n for n in node.input if n), "")
        return {"aten": aten, "onnx_op": node.op_type, "module_type": "",
                "input_shape": self.shape(first), "output_shape": self.shape(node.output[0])}

    def kernel(self, node, absorbed: set) -> Kernel | None:
        op = node.op_type
        outputs = [o for o in node.output if o]
        if not outputs or not any(self.is_float(o) for o in outputs):
            return None                                    # shape arithmetic, not a kernel
        if op in _VIEWS:
            if op == "Transpose" and any(c.op_type in _RESHAPERS
                                         for c in self.consumers.get(outputs[0], [])):
                return self._make(node, "copy", 0.0, node.input, outputs, "clone")
            return None
        if op == "Gather":
            indices = node.input[1] if len(node.input) > 1 else ""
            if indices in self.graph.constants and self.graph.constants[indices].ndim == 0:
                return None                                # x[:, i]: a view (select)
            return self._make(node, "copy", 0.0, node.input, outputs, "index_select")
        if op in ("Conv", "ConvTranspose"):
            return self._conv(node, outputs)
        if op in ("Gemm", "MatMul"):
            return self._matmul(node, outputs, absorbed)
        if op in _REDUCES:
            return self._reduce(node, outputs)
        kind, aten = _OPS.get(op, ("other", op.lower()))
        out_elements = _numel(self.shape(outputs[0]))
        if kind == "pool" and op.startswith("Global"):
            flops = float(_numel(self.shape(node.input[0])))
        elif kind == "pool":
            window = max(1, _numel(self.shape(node.input[0])) // max(1, out_elements))
            flops = float(out_elements * window)
        else:
            flops = float(FLOPS_PER_ELEMENT.get(kind, 1) * out_elements)
        inputs = list(node.input)
        if op == "LayerNormalization":
            outputs = outputs[:1]            # mean/inv-std outputs are optional extras
        return self._make(node, kind, flops, inputs, outputs, aten)

    def _make(self, node, kind, flops, inputs, outputs, aten, extra=None) -> Kernel:
        params = self._base_params(node, aten)
        params.update(extra or {})
        # where the inputs came from (None: the graph input, weights, constants), for the
        # profiles' fusion rules; "_outputs" is consumed by kernels()
        params.update(id=self.count, inputs_from=tuple(self.producer.get(n) for n in inputs if n),
                      _outputs=list(outputs))
        return Kernel(op=kind, flops=float(flops), bytes=self.moved(inputs, outputs),
                      name=_module_path(node.name), params=params)

    def _conv(self, node, outputs) -> Kernel:
        attrs = _attrs(node)
        x, w = self.shape(node.input[0]), self.shape(node.input[1])
        out = self.shape(outputs[0])
        transposed = node.op_type == "ConvTranspose"
        groups = int(attrs.get("group", 1))
        kernel_size = tuple(attrs.get("kernel_shape") or w[2:])
        stride = tuple(attrs.get("strides") or (1,) * len(kernel_size))
        cin, cout = int(x[1]), int(out[1])
        spatial = (x if transposed else out)[2:]
        flops = 2.0 * x[0] * _numel(w) * _numel(spatial)
        if transposed or groups == 1:
            pointwise = _numel(kernel_size) == 1 and all(s == 1 for s in stride) \
                and not transposed
            kind = "pwconv" if pointwise else "conv"
        elif groups == cin:
            kind = "dwconv"
        else:
            kind = "gconv"
        has_bias = len(node.input) > 2 and bool(node.input[2])
        extra = {"cin": cin, "cout": cout, "kernel_size": kernel_size, "stride": stride,
                 "groups": groups, "transposed": transposed, "has_bias": has_bias,
                 "hw_in": tuple(x[2:]), "hw_out": tuple(out[2:]),
                 "channel_multiplier": cout // cin if kind == "dwconv" else 1}
        return self._make(node, kind, flops, node.input, outputs, "convolution", extra)

    def _matmul(self, node, outputs, absorbed: set) -> Kernel:
        a, b = self.shape(node.input[0]), self.shape(node.input[1])
        out = self.shape(outputs[0])
        weighted = node.input[1] in self.weights or node.input[0] in self.weights
        inputs = list(node.input)
        if node.op_type == "Gemm":
            attrs = _attrs(node)
            m, k = (a[1], a[0]) if attrs.get("transA") else (a[0], a[1])
            n = b[0] if attrs.get("transB") else b[1]
            batch, aten = 1, "addmm" if len(node.input) > 2 and node.input[2] else "mm"
        else:
            a2 = a if len(a) >= 2 else (1, *a)
            k, n = a2[-1], (b[-1] if len(b) >= 2 else 1)
            if weighted and len(b) <= 2:
                # a Linear on an N-D input: one matrix product over all leading dims
                batch, m, aten = 1, _numel(a2[:-1]), "mm"
            else:
                batch, m, aten = _numel(out[:-2]) if len(out) > 2 else 1, a2[-2], "bmm"
            users = self.consumers.get(outputs[0], [])
            if weighted and len(users) == 1 and users[0].op_type == "Add":
                add = users[0]
                bias = [i for i in add.input if i != outputs[0]]
                if len(bias) == 1 and bias[0] in self.weights and len(self.shape(bias[0])) == 1:
                    absorbed.add(id(add))                  # bias of the Linear: one addmm
                    inputs, outputs, aten = inputs + bias, [add.output[0]], "addmm"
        flops = 2.0 * batch * m * k * n
        kind = "linear" if weighted else "matmul"
        return self._make(node, kind, flops, inputs, outputs, aten,
                          {"batch": int(batch), "m": int(m), "k": int(k), "n": int(n)})

    def _reduce(self, node, outputs) -> Kernel:
        x = self.shape(node.input[0])
        axes = _attrs(node).get("axes")
        if axes is None and len(node.input) > 1 and node.input[1] in self.graph.constants:
            axes = self.graph.constants[node.input[1]].tolist()
        if isinstance(axes, int):
            axes = [axes]
        kind = "pool" if len(x) == 4 and axes is not None and \
            {int(d) % 4 for d in axes} == {2, 3} else "reduce"
        inputs = node.input[:1]                            # axes are metadata
        return self._make(node, kind, float(_numel(x)), inputs, outputs,
                          _REDUCES[node.op_type])


def onnx_kernels(model: str | os.PathLike | OnnxGraph,
                 input_shape: Sequence[int] | None = None) -> list[Kernel]:
    """The kernels of an ONNX graph (a path or a loaded :class:`OnnxGraph`) at
    ``input_shape`` — the same records :func:`~qnas.predictors.kernels.decompose` makes for a
    PyTorch module (see the module doc for the rules)."""
    graph = model if isinstance(model, OnnxGraph) else load_onnx_graph(model, input_shape)
    return _Converter(graph).kernels()


def predict_onnx(device: str, path: str | os.PathLike,
                 input_shape: Sequence[int] | None = None) -> Prediction:
    """Predicted latency of the ONNX graph ``path`` on ``device`` — with the device's profile
    (its analytic model costs kernels; nn-Meter and measured backends take PyTorch modules)."""
    from .devices import device_info
    from .registry import profile_predictor

    info = device_info(device)
    if info.profile is None:
        raise QnasError(f"device '{info.name}' is {info.kind} on this machine and times PyTorch "
                        f"modules; an ONNX graph is predicted with a profile device (e.g. "
                        f"cortexA76, or your own from 'qnas predictor calibrate')")
    return profile_predictor(info.name).predict_kernels(onnx_kernels(path, input_shape))
