"""Build an nn-Meter-format latency predictor for THIS host from PyTorch kernel timings.

nn-Meter's own builder profiles only TFLite and OpenVINO backends. ``build_host_predictor``
does the same job for PyTorch on this machine (CPU, or CUDA when present):

1. sample kernel configurations for each kernel type nn-Meter's predictor uses
   (conv-bn-relu, dwconv-bn-relu, fc, add, relu, bn, global-avgpool, maxpool, avgpool) —
   half of them around the kernels of a search space's blocks at the deployment shape
   (nn-Meter samples from a prior over real models the same way), half uniformly;
2. time each one with PyTorch (eval, no_grad, fixed threads, warm-up, median) the way it runs
   inside a network: weighted kernels cycle through copies whose weights exceed the L2 cache
   (in a network every layer's weights were evicted since its last call; a tight loop on one
   module keeps them hot and runs up to 3× faster), and QuadraConv's depthwise conv with
   3 outputs per channel runs as QuadraConv2d runs it in eager mode on this device;
3. train one ``RandomForestRegressor`` per kernel type on exactly the feature vector nn-Meter
   computes for it at prediction time (``nn_meter.predictor.prediction.extract_feature``);
4. write ``<kernel>.pkl`` + ``fusion_rules.json`` (PyTorch eager fuses nothing: every rule
   "obey": false) + ``meta.yaml``, and register it with the real
   ``nn-meter register --predictor meta.yaml`` so that nn-Meter itself can load it;
5. fit per-op costs (overhead + bytes + FLOPs terms, non-negative least squares) for the kernel
   types nn-Meter ignores (LayerNorm, GELU, mul, copies, softmax, MatMul, …), measured the same
   way, into ``qnas_op_costs.yaml`` — :class:`~qnas.predictors.nnmeter_backend.NNMeterPredictor`
   costs those kernels with them instead of a device profile;
6. time a few random children of the search space whole and fit one more constant: the
   in-network framework overhead per kernel (PyTorch eager's Python and dispatch work between
   kernels, which isolated kernel timings do not contain). It is reported as its own part of
   every prediction, never folded into nn-Meter's number.

Device mapping: the predictor is registered as ``qnas_host_cpu`` (``qnas_host_cuda``); the qnas
device ``host-cpu`` (``host-cuda``) resolves to it as long as ``meta.yaml`` records this host's
CPU (GPU) model — a predictor copied to another machine is not used there. Building again
replaces the registration.
"""
from __future__ import annotations

import copy
import math
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import yaml
from torch import nn

from ..errors import QnasError
from ..models.ops import is_identity
from ..runtime.files import replace_folder
from .base import Kernel
from .measured import HOST_DEVICES, default_threads, time_callable, torch_device

PREDICTOR_VERSION = 1.0
BUILDER_VERSION = "1"
OP_COSTS_FILE = "qnas_op_costs.yaml"

# kernel predictors a host predictor provides (nn-Meter names)
HOST_KERNELS = ("conv-bn-relu", "dwconv-bn-relu", "fc", "add", "relu", "bn", "global-avgpool",
                "maxpool", "avgpool")
# nn-Meter fusion rules: PyTorch eager runs every op as its own kernel
FUSION_RULES = {f"BF_{a}_{b}": {"obey": False} for a, b in (
    ("conv", "bn"), ("conv", "relu"), ("conv", "add"), ("dwconv", "bn"), ("dwconv", "relu"),
    ("bn", "relu"), ("add", "relu"), ("fc", "relu"))}
# the kernel types nn-Meter leaves uncosted whose per-op costs the builder fits
EXTRA_OPS = ("layernorm", "gelu", "mul", "copy", "softmax", "sigmoid", "matmul", "linear",
             "add", "pool")
# ops without a fit of their own borrow the nearest fitted one
_OP_FALLBACK = {"elementwise": "mul", "reduce": "pool", "resize": "copy", "groupnorm": "layernorm",
                "hswish": "sigmoid", "relu": "mul", "batchnorm": "mul", "other": "copy",
                "conv": "linear", "pwconv": "linear", "gconv": "linear", "dwconv": "linear"}

HW_CHOICES = (1, 2, 3, 4, 7, 8, 14, 16, 28, 32, 56, 64, 112)
MAX_FLOPS = 4e8           # keeps one timed kernel well under 50 ms on one core
MAX_ELEMENTS = 2_000_000  # elements of an element-wise sample


# --- configurations ----------------------------------------------------------------------------
def _channels(rng: np.random.Generator, low: int = 8, high: int = 1024) -> int:
    value = math.exp(rng.uniform(math.log(low), math.log(high)))
    return int(max(low, min(high, round(value / 8) * 8 or 8)))


def _conv_padding(kernel: int) -> int:
    return (kernel - 1) // 2 if kernel % 2 else 0


def _conv_flops(cfg: dict) -> float:
    hw_out = max(1, cfg["HW"] // cfg["STRIDES"])
    per_out = cfg["KERNEL_SIZE"] ** 2 * (1 if cfg.get("DW") else cfg["CIN"])
    return 2.0 * hw_out * hw_out * cfg["COUT"] * per_out


def _random_config(kernel: str, rng: np.random.Generator) -> dict:
    for _ in range(100):
        hw = int(rng.choice(HW_CHOICES))
        if kernel == "conv-bn-relu":
            k = int(rng.choice([1, 1, 1, 2, 3, 3, 4, 5, 7]))
            s = k if k in (2, 4) else int(rng.choice([1, 1, 2]))
            cfg = {"HW": max(hw, s), "CIN": int(rng.choice([3, _channels(rng)])) if rng.random() < 0.1
                   else _channels(rng), "COUT": _channels(rng), "KERNEL_SIZE": k, "STRIDES": s}
            if _conv_flops(cfg) <= MAX_FLOPS:
                return cfg
        elif kernel == "dwconv-bn-relu":
            cin = _channels(rng)
            cfg = {"HW": hw, "CIN": cin, "COUT": cin * int(rng.choice([1, 3])),
                   "KERNEL_SIZE": int(rng.choice([3, 5, 7])), "STRIDES": int(rng.choice([1, 1, 2])),
                   "DW": True}
            cfg["HW"] = max(cfg["HW"], cfg["STRIDES"])
            if _conv_flops(cfg) <= MAX_FLOPS:
                return cfg
        elif kernel == "fc":
            return {"CIN": _channels(rng, 8, 2048), "COUT": _channels(rng, 8, 2048)}
        elif kernel in ("add", "relu", "bn"):
            cfg = {"HW": hw, "CIN": _channels(rng)}
            if hw * hw * cfg["CIN"] <= MAX_ELEMENTS:
                return cfg
        elif kernel == "global-avgpool":
            return {"HW": int(rng.choice([1, 2, 4, 7, 8, 14])), "CIN": _channels(rng, 8, 2048)}
        elif kernel in ("maxpool", "avgpool"):
            cin = _channels(rng)
            k = int(rng.choice([2, 3]))
            cfg = {"HW": max(hw, k), "CIN": cin, "COUT": cin, "KERNEL_SIZE": k,
                   "STRIDES": int(rng.choice([1, 2]))}
            if cfg["HW"] ** 2 * cin <= MAX_ELEMENTS:
                return cfg
        else:
            raise ValueError(f"no sampler for kernel {kernel!r}")
    return cfg


def _jitter(cfg: dict, rng: np.random.Generator) -> dict:
    """A neighbour of a prior configuration: channels scaled by up to ±25 %."""
    out = dict(cfg)
    for key in ("CIN", "COUT"):
        if key in out and out[key] > 8:
            out[key] = max(8, int(round(out[key] * rng.uniform(0.75, 1.25))))
    if out.get("DW"):
        out["COUT"] = out["CIN"] * max(1, cfg["COUT"] // cfg["CIN"])
    return out


def _configs_of_kernel(kernel: Kernel, batch: int) -> tuple[str, dict] | None:
    """The nn-Meter kernel type and configuration of one qnas kernel (None if not modelled)."""
    p = kernel.params
    if kernel.op in ("conv", "pwconv", "dwconv"):
        hw = int(p["hw_in"][0])
        cfg = {"HW": hw, "CIN": int(p["cin"]), "COUT": int(p["cout"]),
               "KERNEL_SIZE": int(p["kernel_size"][0]), "STRIDES": int(p["stride"][0])}
        if kernel.op == "dwconv":
            cfg["DW"] = True
            return "dwconv-bn-relu", cfg
        return "conv-bn-relu", cfg
    if kernel.op == "linear" and int(p.get("m", batch)) <= batch:
        return "fc", {"CIN": int(p["k"]), "COUT": int(p["n"])}
    shape = tuple(p.get("output_shape", ()))
    if len(shape) == 4 and kernel.op in ("add", "relu", "batchnorm"):
        name = {"add": "add", "relu": "relu", "batchnorm": "bn"}[kernel.op]
        return name, {"HW": int(shape[2]), "CIN": int(shape[1])}
    if kernel.op == "pool" and p.get("aten") == "mean":
        hw = tuple(p.get("input_shape", ()))
        return "global-avgpool", {"HW": int(hw[2]) if len(hw) == 4 else 1, "CIN": int(shape[1])}
    return None


def space_prior(space: str | None, input_shape: Sequence[int] | None) -> dict[str, list[dict]]:
    """Kernel configurations of a search space's candidate blocks and fixed part at a shape."""
    if space is None:
        return {}
    from ..space import load_space
    from .kernels import decompose

    spc = load_space(space)
    shape = tuple(input_shape or spc.input_shape)
    prior: dict[str, list[dict]] = {}
    modules = [(spc.build_child(spc.smallest_ops(), num_classes=1000), shape)]
    for stage in range(len(spc.depths)):
        stage_shape = spc.stage_input_shape(stage, shape)
        for op in spc.candidates:
            if not is_identity(op):
                modules.append((spc.build_op(op, stage_shape[1]), stage_shape))
    for module, mshape in modules:
        for kernel in decompose(module, mshape):
            found = _configs_of_kernel(kernel, batch=shape[0])
            if found and found[1] not in prior.setdefault(found[0], []):
                prior[found[0]].append(found[1])
    return prior


# --- features and measurement ------------------------------------------------------------------
def nnmeter_features(kernel: str, cfg: dict) -> list[float]:
    """The feature vector nn-Meter computes for this kernel at prediction time."""
    from .nnmeter_backend import import_nn_meter

    import_nn_meter()
    from nn_meter.predictor.prediction.extract_feature import get_predict_features

    hw, cin = cfg.get("HW", 1), cfg["CIN"]
    item: dict = {"cin": cin, "inputh": hw, "inputw": hw, "input_tensors": [[1, hw, hw, cin]]}
    if kernel in ("conv-bn-relu", "dwconv-bn-relu", "maxpool", "avgpool"):
        op = {"conv-bn-relu": "conv", "dwconv-bn-relu": "dwconv"}.get(kernel, kernel)
        item.update(op=op, cout=cfg["COUT"], ks=[cfg["KERNEL_SIZE"]] * 2,
                    strides=[cfg["STRIDES"]] * 2)
    elif kernel == "fc":
        item = {"op": "fc", "cin": cin, "cout": cfg["COUT"], "input_tensors": [[1, cin]]}
    elif kernel == "add":
        item.update(op="add", input_tensors=[[1, hw, hw, cin]] * 2)
    elif kernel in ("relu", "bn"):
        item.update(op=kernel)
    elif kernel == "global-avgpool":
        item.update(op="gap")
    else:
        raise ValueError(f"no feature rule for kernel {kernel!r}")
    features = get_predict_features([item])
    return [float(v) for v in next(iter(features[0].values()))]


COLD_BYTES = 16 * 2 ** 20   # weights cycled per timing round: more than this CPU's L2 holds
MAX_REPLICAS = 64


def _replicas(module: nn.Module) -> list[nn.Module]:
    """Copies of ``module`` with their own weights, so that each call reads cold weights.

    In a network every layer's weights were evicted from the caches by the other layers
    since its last call; timing one module in a tight loop keeps them hot and runs up to 3×
    faster than the same layer in a model. Cycling through copies whose weights together
    exceed the L2 cache reproduces the in-network condition (the activations stay hot, as
    they are in a network where the previous layer just wrote them).
    """
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    count = int(min(MAX_REPLICAS, max(1, math.ceil(COLD_BYTES / max(weight_bytes, 1)))))
    return [module] + [copy.deepcopy(module) for _ in range(count - 1)]


def _cycle(modules: list, x: torch.Tensor) -> tuple[Callable[[], object], int]:
    def run():
        for module in modules:
            module(x)
    return run, len(modules)


def _quadra_conv_callable(cin: int, cout: int, k: int, x: torch.Tensor):
    """A depthwise conv with 3 outputs per channel, run the way QuadraConv2d runs it here.

    In eager mode on CPU QuadraConv2d runs its grouped conv as three depthwise convs
    (``qnas.nn.quadra``); the ONNX graph nn-Meter sees has the one grouped conv. The kernel is
    timed as the eager code runs it; if that code is not importable, as the grouped conv.
    """
    try:
        from ..nn.quadra import QuadraConv2d, _split_kernels, _terms
    except ImportError:
        return None
    if cout != 3 * cin:
        return None
    layers = _replicas(QuadraConv2d(cin, k).to(x.device).eval())
    split = _split_kernels(x)

    def run():
        for layer in layers:
            _terms(x, layer.weight, layer.bias, layer.padding, split)
    return run, len(layers)


def _kernel_callable(kernel: str, cfg: dict, device: torch.device) -> tuple[Callable[[], object], int]:
    """What runs in the model for this kernel (the module call or the tensor expression), and
    how many kernel calls one call of the returned function makes."""
    hw, cin = cfg.get("HW", 1), cfg["CIN"]
    x = torch.randn(1, cin, hw, hw, device=device)
    if kernel in ("conv-bn-relu", "dwconv-bn-relu"):
        k = cfg["KERNEL_SIZE"]
        if kernel == "dwconv-bn-relu" and cfg["STRIDES"] == 1 and k % 2:
            quadra = _quadra_conv_callable(cin, cfg["COUT"], k, x)
            if quadra is not None:
                return quadra
        module = nn.Conv2d(cin, cfg["COUT"], k, cfg["STRIDES"], _conv_padding(k),
                           groups=cin if kernel == "dwconv-bn-relu" else 1).to(device).eval()
        return _cycle(_replicas(module), x)
    if kernel == "fc":
        module = nn.Linear(cin, cfg["COUT"]).to(device).eval()
        return _cycle(_replicas(module), torch.randn(1, cin, device=device))
    if kernel == "add":
        y = torch.randn_like(x)
        return (lambda: x + y), 1
    if kernel == "relu":
        module = nn.ReLU()
        return (lambda: module(x)), 1
    if kernel == "bn":
        return _cycle(_replicas(nn.BatchNorm2d(cin).to(device).eval()), x)
    if kernel == "global-avgpool":
        return (lambda: x.mean((2, 3))), 1
    if kernel in ("maxpool", "avgpool"):
        cls = nn.MaxPool2d if kernel == "maxpool" else nn.AvgPool2d
        module = cls(cfg["KERNEL_SIZE"], cfg["STRIDES"])
        return (lambda: module(x)), 1
    raise ValueError(f"no timing rule for kernel {kernel!r}")


def time_kernel(kernel: str, cfg: dict, device: torch.device, threads: int) -> float:
    """Median milliseconds of one call of this kernel, timed as in a network (cold weights)."""
    fn, calls = _kernel_callable(kernel, cfg, device)
    timing = time_callable(fn, device, threads=threads, repeats=7, min_round_s=1e-3)
    return timing.median_ms / calls


# --- per-op costs for what nn-Meter ignores ----------------------------------------------------
def _extra_op_modules(op: str, rng: np.random.Generator) -> tuple[nn.Module, tuple]:
    """A small module whose kernels are (mostly) of type ``op``, and its input shape."""
    from timm.layers import LayerNorm2d

    hw = int(rng.choice([1, 2, 4, 7, 8, 14, 16, 28, 32, 56]))
    c = _channels(rng, 8, 512)
    while hw * hw * c > MAX_ELEMENTS:
        hw //= 2
    image = (1, c, hw, hw)
    if op == "layernorm":
        return (LayerNorm2d(c, eps=1e-6), image) if rng.random() < 0.8 \
            else (nn.LayerNorm(c, eps=1e-6), (1, c))
    if op == "gelu":
        return nn.GELU(), image
    if op == "mul":
        return (_Mul(), image) if rng.random() < 0.5 else (_Scale(c), image)
    if op == "add":
        return _AddSelf(), (1, c)           # 2-D adds: the ones nn-Meter cannot cost
    if op == "copy":
        return _Permute(), image
    if op == "softmax":
        return _Softmax(), (1, max(1, c // 32), hw * hw, hw * hw) if hw <= 8 else (1, 4, 49, 49)
    if op == "sigmoid":
        return nn.Sigmoid(), image
    if op == "matmul":
        tokens = int(rng.choice([16, 49, 64, 196]))
        return _SelfMatmul(), (1, max(1, c // 32), tokens, 32)
    if op == "linear":
        tokens = int(rng.choice([4, 16, 49, 64, 196]))
        return nn.Linear(c, _channels(rng, 8, 512)), (1, tokens, c)
    if op == "pool":
        return _Mean(), image
    raise ValueError(op)


class _Mul(nn.Module):
    def forward(self, x):
        return x * x


class _Scale(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return x * self.gamma.view(1, -1, 1, 1)


class _AddSelf(nn.Module):
    def forward(self, x):
        return x + x


class _Permute(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1).contiguous()


class _Softmax(nn.Module):
    def forward(self, x):
        return x.softmax(-1)


class _SelfMatmul(nn.Module):
    def forward(self, x):
        return x @ x.transpose(-2, -1)


class _Mean(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


_TERMS = ("overhead_ms", "ms_per_mb", "ms_per_gflop")


def _design_row(kernels: Sequence[Kernel], ops: Sequence[str]) -> np.ndarray:
    row = np.zeros(3 * len(ops))
    for kernel in kernels:
        op = _resolve_op(kernel.op, ops)
        j = 3 * ops.index(op)
        row[j:j + 3] += (1.0, kernel.bytes / 1e6, kernel.flops / 1e9)
    return row


def _resolve_op(op: str, fitted: Sequence[str]) -> str:
    seen = set()
    while op not in fitted and op not in seen:
        seen.add(op)
        op = _OP_FALLBACK.get(op, "copy")
    return op if op in fitted else fitted[0]


class HostOpCosts:
    """Per-op latency models fitted on this host: ms = overhead + bytes·a + FLOPs·b.

    Costs the kernels nn-Meter ignores, for predictors built by ``qnas predictor build``.
    An op without a fit of its own uses the nearest fitted op (``_OP_FALLBACK``).
    ``overhead_per_kernel_ms`` is the in-network framework overhead per kernel (PyTorch eager's
    dispatch and Python work between kernels, which a kernel timed alone in a tight loop does
    not pay in full), fitted on whole calibration networks; 0 when none were measured.
    """

    def __init__(self, ops: dict[str, dict], version: str, overhead_per_kernel_ms: float = 0.0,
                 calibration: dict | None = None):
        self.ops = ops
        self.version = version
        self.overhead_per_kernel_ms = float(overhead_per_kernel_ms)
        self.calibration = calibration or {}

    @classmethod
    def from_folder(cls, folder: Path | None) -> "HostOpCosts | None":
        if folder is None or not (Path(folder) / OP_COSTS_FILE).is_file():
            return None
        with open(Path(folder) / OP_COSTS_FILE, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle) or {}
        return cls(raw.get("ops") or {}, str(raw.get("version", "host op costs")),
                   float(raw.get("overhead_per_kernel_ms") or 0.0), raw.get("calibration"))

    def cost_kernels(self, kernels: Sequence[Kernel]) -> list[float]:
        fitted = list(self.ops)
        if not fitted:
            raise QnasError("the host predictor's op-cost file is empty; rebuild it with "
                            "'qnas predictor build'")
        out = []
        for kernel in kernels:
            coef = self.ops[_resolve_op(kernel.op, fitted)]
            out.append(coef["overhead_ms"] + coef["ms_per_mb"] * kernel.bytes / 1e6
                       + coef["ms_per_gflop"] * kernel.flops / 1e9)
        return out

    def to_dict(self) -> dict:
        return {"version": self.version, "overhead_per_kernel_ms": self.overhead_per_kernel_ms,
                "calibration": self.calibration, "ops": self.ops}


def fit_op_costs(device: torch.device, threads: int, samples: int, rng: np.random.Generator,
                 label: str, progress: Callable[[str], None]) -> HostOpCosts:
    """Measure small modules of each ignored op type and fit their per-op cost models."""
    from scipy.optimize import nnls

    from .kernels import decompose

    rows, targets, per_op = [], [], {}
    ops = list(EXTRA_OPS)
    for op in ops:
        progress(f"timing {samples} '{op}' samples (op costs for what nn-Meter ignores)")
        for _ in range(samples):
            module, shape = _extra_op_modules(op, rng)
            module = module.to(device).eval()
            kernels = decompose(module, shape)
            if not kernels:
                continue
            x = torch.randn(*shape, device=device)
            timing = time_callable(lambda: module(x), device, threads=threads, repeats=7,
                                   min_round_s=1e-3)
            rows.append(_design_row(kernels, ops))
            targets.append(timing.median_ms)
            per_op.setdefault(op, []).append(len(rows) - 1)
    a, y = np.array(rows), np.array(targets)
    # scale columns so NNLS is well conditioned, solve, unscale
    scale = np.maximum(np.abs(a).max(axis=0), 1e-12)
    coef, _ = nnls(a / scale, y)
    coef = coef / scale
    fitted = a @ coef
    result = {}
    for i, op in enumerate(ops):
        idx = per_op.get(op, [])
        rel = [abs(fitted[j] - y[j]) / y[j] for j in idx if y[j] > 0]
        result[op] = {"overhead_ms": float(coef[3 * i]), "ms_per_mb": float(coef[3 * i + 1]),
                      "ms_per_gflop": float(coef[3 * i + 2]), "samples": len(idx),
                      "median_rel_error": float(statistics.median(rel)) if rel else None}
    return HostOpCosts(result, f"op costs fitted on {label}")


def calibrate_overhead(folder: Path, op_costs: HostOpCosts, space: str, input_shape,
                       device: torch.device, threads: int, networks: int, seed: int,
                       progress: Callable[[str], None]) -> HostOpCosts:
    """Fit the per-kernel in-network overhead on ``networks`` random children of ``space``.

    Each child is predicted through nn-Meter with the kernel predictors in ``folder`` (loaded
    by nn-Meter's own loader) plus ``op_costs``, and timed whole; the overhead per kernel is
    the least-squares slope (through 0, never negative) of measured − predicted against the
    child's kernel count. The children are drawn from their own random stream, so they are not
    the ones ``qnas bench predictor`` draws.
    """
    import random

    from ..space import load_space
    from .measured import time_module
    from .nnmeter_backend import import_nn_meter, predict_parts_with

    import_nn_meter()
    from nn_meter.predictor.nn_meter_predictor import nnMeterPredictor
    from nn_meter.predictor.utils import loading_customized_predictor

    kernel_predictors, rules = loading_customized_predictor(
        {"name": folder.name, "package_location": str(folder),
         "kernel_predictors": list(HOST_KERNELS)})
    predictor = nnMeterPredictor(kernel_predictors, rules)
    spc = load_space(space)
    shape = tuple(input_shape or spc.input_shape)
    rng = random.Random(f"qnas-calibration-{seed}")
    rows = []
    for index in range(networks):
        ops = [rng.choice(spc.candidates) for _ in range(spc.num_layers)]
        child = spc.build_child(ops, num_classes=int(spc.raw.get("num_classes", 1000)))
        child = child.to(device).eval()
        progress(f"calibration network {index + 1}/{networks}: predicting and timing")
        parts = predict_parts_with(predictor, op_costs, child, shape)
        timing = time_module(child, shape, device, threads=threads, repeats=15)
        rows.append((parts.total_ms, timing.median_ms, parts.kernel_count))
    numerator = sum((measured - predicted) * count for predicted, measured, count in rows)
    denominator = sum(count * count for _, _, count in rows) or 1
    per_kernel = max(0.0, numerator / denominator)
    errors = [abs((p + per_kernel * n) / m - 1) for p, m, n in rows]
    calibration = {
        "space": space, "input_shape": list(shape), "networks": networks,
        "measured_ms": [round(m, 4) for _, m, _ in rows],
        "predicted_before_ms": [round(p, 4) for p, _, _ in rows],
        "kernels": [n for _, _, n in rows],
        "in_sample_median_rel_error": float(statistics.median(errors)) if errors else None,
    }
    return HostOpCosts(op_costs.ops, op_costs.version, per_kernel, calibration)


# --- the builder -------------------------------------------------------------------------------
@dataclass
class BuiltPredictor:
    name: str
    device: str
    folder: Path
    meta_path: Path
    registered: bool
    kernel_errors: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0


def _nn_meter_command() -> list[str]:
    script = Path(sys.executable).with_name("nn-meter")
    if script.is_file():
        return [str(script)]
    found = shutil.which("nn-meter")
    if found:
        return [found]
    return [sys.executable, "-c",
            "import sys; from nn_meter.utils.nn_meter_cli.interface import nn_meter_cli; "
            "sys.argv[0] = 'nn-meter'; nn_meter_cli()"]


def run_nn_meter_cli(*args: str) -> subprocess.CompletedProcess:
    """Run the real ``nn-meter`` command line (same HOME, so the same ~/.nn_meter)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([*_nn_meter_command(), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def register_predictor(meta_path: Path, name: str) -> None:
    """Register with ``nn-meter register --predictor meta.yaml``, replacing an older entry."""
    from .nnmeter_backend import predictor_configs

    for _ in range(5):   # nn-Meter's unregister drops one of two adjacent duplicates per call
        if not any(c["name"] == name for c in predictor_configs()):
            break
        run_nn_meter_cli("unregister", "--predictor", name)
    done = run_nn_meter_cli("register", "--predictor", str(meta_path))
    if done.returncode != 0 or not any(c["name"] == name for c in predictor_configs()):
        tail = " ".join((done.stderr or done.stdout).split())[-300:]
        raise QnasError(f"'nn-meter register --predictor {meta_path}' did not register '{name}' "
                        f"(exit {done.returncode}: {tail}); check that nn-meter is installed in "
                        f"this environment")


def build_host_predictor(device: str = "host-cpu", samples: int = 100, out: str | Path | None = None,
                         *, space: str | None = "quadranet",
                         input_shape: Sequence[int] | None = None, threads: int | None = None,
                         n_estimators: int = 100, op_samples: int | None = None, seed: int = 0,
                         calibration_networks: int = 4, register: bool = True,
                         progress: Callable[[str], None] | None = None) -> BuiltPredictor:
    """Measure kernels on this host, train nn-Meter-format kernel predictors, register them.

    Args:
        device: ``host-cpu`` or ``host-cuda``.
        samples: timed configurations per kernel type (nn-Meter uses thousands; 100 is a
            practical minimum for a search space's kernels, 5 builds a smoke-test predictor).
        out: predictor folder (default ``<nn-Meter data folder>/predictor/qnas_host_cpu``).
        space, input_shape: half the samples are drawn around the kernels of this search
            space's blocks at this input shape (``space=None``: all uniform).
        threads: torch threads while timing (default 1 or ``$QNAS_HOST_THREADS``).
        n_estimators: trees per random forest.
        op_samples: timed samples per ignored op type (default ``max(4, samples // 4)``).
        calibration_networks: random children of ``space`` timed whole to fit the per-kernel
            in-network framework overhead (0, or ``space=None``: no overhead term).
        register: run ``nn-meter register`` so nn-Meter (and qnas) can use it.
    """
    from sklearn.ensemble import RandomForestRegressor

    from .nnmeter_backend import HOST_PREDICTOR_NAMES, data_folder, host_fingerprint

    if device not in HOST_DEVICES:
        raise QnasError(f"qnas can build predictors only for this host ({', '.join(HOST_DEVICES)}),"
                        f" not {device!r}; for phones and VPUs install nn-Meter's published "
                        f"predictors with 'qnas predictor install-nnmeter PATH'")
    if samples < 2:
        raise QnasError(f"--samples must be at least 2 per kernel type, got {samples}")
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    tdevice = torch_device(device)
    threads = threads if threads is not None else default_threads()
    name = HOST_PREDICTOR_NAMES[device]
    host = host_fingerprint(device)
    folder = Path(out).expanduser() if out else data_folder() / "predictor" / name
    rng = np.random.default_rng(seed)
    prior = space_prior(space, input_shape)
    label = f"{host}, torch {torch.__version__}, {threads} thread(s)"

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        errors: dict[str, float | None] = {}
        counts: dict[str, int] = {}
        for kernel in HOST_KERNELS:
            configs = []
            near = prior.get(kernel, [])
            if near:
                configs += near[:samples // 2]
                while len(configs) < samples // 2:
                    configs.append(_jitter(near[int(rng.integers(len(near)))], rng))
            while len(configs) < samples:
                configs.append(_random_config(kernel, rng))
            say(f"timing {len(configs)} '{kernel}' kernels on {device}")
            features, latencies = [], []
            for cfg in configs:
                features.append(nnmeter_features(kernel, cfg))
                latencies.append(time_kernel(kernel, cfg, tdevice, threads))
            x, y = np.array(features), np.array(latencies)
            errors[kernel] = _holdout_error(x, y, n_estimators, seed)
            model = RandomForestRegressor(n_estimators=n_estimators, random_state=seed).fit(x, y)
            with open(staging / f"{kernel}.pkl", "wb") as handle:
                pickle.dump(model, handle)
            counts[kernel] = len(configs)
        with open(staging / "fusion_rules.json", "w", encoding="utf-8") as handle:
            import json

            json.dump(FUSION_RULES, handle, indent=2)
        op_costs = fit_op_costs(tdevice, threads, op_samples or max(4, samples // 4), rng, label,
                                say)
        if space is not None and calibration_networks > 0:
            op_costs = calibrate_overhead(staging, op_costs, space, input_shape, tdevice, threads,
                                          calibration_networks, seed, say)
        with open(staging / OP_COSTS_FILE, "w", encoding="utf-8") as handle:
            yaml.safe_dump(op_costs.to_dict(), handle, sort_keys=False)
        meta = {
            "name": name, "version": PREDICTOR_VERSION,
            "category": "gpu" if device == "host-cuda" else "cpu",
            "package_location": str(folder.resolve()),
            "kernel_predictors": list(HOST_KERNELS),
            "qnas": {
                "device": device, "host": host, "threads": threads,
                "torch": str(torch.__version__), "builder": BUILDER_VERSION,
                "samples_per_kernel": counts, "space": space,
                "input_shape": list(input_shape) if input_shape else None,
                "holdout_median_rel_error": errors,
                "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        }
        with open(staging / "meta.yaml", "w", encoding="utf-8") as handle:
            yaml.safe_dump(meta, handle, sort_keys=False)
        replace_folder(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    meta_path = folder / "meta.yaml"
    if register:
        say(f"registering '{name}' with nn-meter register --predictor {meta_path}")
        register_predictor(meta_path, name)
    return BuiltPredictor(name, device, folder, meta_path, register, errors,
                          time.perf_counter() - started)


def _holdout_error(x: np.ndarray, y: np.ndarray, n_estimators: int, seed: int) -> float | None:
    """Median |relative error| of a forest trained on 80 % and tested on the other 20 %."""
    from sklearn.ensemble import RandomForestRegressor

    if len(y) < 10:
        return None
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    model = RandomForestRegressor(n_estimators=n_estimators, random_state=seed)
    pred = model.fit(x[train], y[train]).predict(x[test])
    return float(np.median(np.abs(pred - y[test]) / np.maximum(y[test], 1e-9)))
