"""What a host predictor is trained on: kernel configurations sampled per nn-Meter kernel type,
nn-Meter's feature vector of each, and how each is timed the way it runs inside a network;
and the small modules whose timings fit the per-op costs of the kernels nn-Meter ignores.

Used by :mod:`qnas.predictors.builder` (``qnas predictor build``).
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import numpy as np
import torch
from timm.layers import LayerNorm2d
from torch import nn

from ..models.ops import is_identity
from ..nn.quadra import QuadraConv2d, quadra_terms, split_kernels
from ..space import load_space
from .base import Kernel
from .kernels import decompose
from .measured import time_callable
from .nnmeter_files import import_nn_meter

# kernel predictors a host predictor provides (nn-Meter names)
HOST_KERNELS = ("conv-bn-relu", "dwconv-bn-relu", "fc", "add", "relu", "bn", "global-avgpool",
                "maxpool", "avgpool")
HW_CHOICES = (1, 2, 3, 4, 7, 8, 14, 16, 28, 32, 56, 64, 112)
MAX_FLOPS = 4e8           # keeps one timed kernel well under 50 ms on one core
MAX_ELEMENTS = 2_000_000  # elements of an element-wise sample


# --- configurations ---------------------------------------------------------------------------
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


def sample_configs(kernel: str, samples: int, prior: dict[str, list[dict]],
                   rng: np.random.Generator) -> list[dict]:
    """``samples`` configurations of nn-Meter kernel type ``kernel``: half around the ``prior``
    ones (:func:`space_prior`; the prior itself first, then neighbours), the rest uniform."""
    configs = []
    near = prior.get(kernel, [])
    if near:
        configs += near[:samples // 2]
        while len(configs) < samples // 2:
            configs.append(_jitter(near[int(rng.integers(len(near)))], rng))
    while len(configs) < samples:
        configs.append(_random_config(kernel, rng))
    return configs


# --- features and timing ----------------------------------------------------------------------
def nnmeter_features(kernel: str, cfg: dict) -> list[float]:
    """The feature vector nn-Meter computes for this kernel at prediction time."""
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
    (:func:`qnas.nn.quadra.split_kernels`); the ONNX graph nn-Meter sees has the one grouped
    conv. The kernel is timed as the eager code runs it (None: not a QuadraConv shape).
    """
    if cout != 3 * cin:
        return None
    layers = _replicas(QuadraConv2d(cin, k).to(x.device).eval())
    split = split_kernels(x)

    def run():
        for layer in layers:
            quadra_terms(x, layer.weight, layer.bias, layer.padding, split)
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


# --- samples for the per-op costs of what nn-Meter ignores ------------------------------------
def op_sample(op: str, rng: np.random.Generator) -> tuple[nn.Module, tuple]:
    """A small module whose kernels are (mostly) of type ``op`` (one of
    :data:`qnas.predictors.op_costs.EXTRA_OPS`), and its input shape."""
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
