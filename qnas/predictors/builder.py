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
   way, into ``qnas_op_costs.yaml`` (:mod:`qnas.predictors.op_costs`) —
   :class:`~qnas.predictors.nnmeter_backend.NNMeterPredictor` costs those kernels with them
   instead of a device profile;
6. time a few random children of the search space whole and fit one more constant: the
   in-network framework overhead per kernel (PyTorch eager's Python and dispatch work between
   kernels, which isolated kernel timings do not contain). It is reported as its own part of
   every prediction, never folded into nn-Meter's number.

Device mapping: the predictor is registered as ``qnas_host_cpu`` (``qnas_host_cuda``); the qnas
device ``host-cpu`` (``host-cuda``) resolves to it as long as ``meta.yaml`` records this host's
CPU (GPU) model — a predictor copied to another machine is not used there. Building again
replaces the registration.

The samples and their timing: :mod:`qnas.predictors.kernel_samples`.
"""
from __future__ import annotations

import pickle
import random
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import yaml

from ..errors import QnasError
from ..runtime.files import (
    staged_folder,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from ..runtime.threads import MEASURING, resolve_threads
from ..space import load_space
from .kernel_samples import (
    HOST_KERNELS,
    nnmeter_features,
    op_sample,
    sample_configs,
    space_prior,
    time_kernel,
)
from .kernels import decompose
from .measured import HOST_DEVICES, time_callable, time_module, torch_device
from .nnmeter_backend import predict_parts_with
from .nnmeter_files import (
    HOST_PREDICTOR_NAMES,
    data_folder,
    host_fingerprint,
    import_nn_meter,
    register_predictor,
)
from .op_costs import COST_TERMS, EXTRA_OPS, HostOpCosts, design_row

PREDICTOR_VERSION = 1.0
BUILDER_VERSION = "1"
# nn-Meter fusion rules: PyTorch eager runs every op as its own kernel
FUSION_RULES = {f"BF_{a}_{b}": {"obey": False} for a, b in (
    ("conv", "bn"), ("conv", "relu"), ("conv", "add"), ("dwconv", "bn"), ("dwconv", "relu"),
    ("bn", "relu"), ("add", "relu"), ("fc", "relu"))}


# --- per-op costs and the in-network overhead -------------------------------------------------
def fit_op_costs(device: torch.device, threads: int, samples: int, rng: np.random.Generator,
                 label: str, progress: Callable[[str], None]) -> HostOpCosts:
    """Measure small modules of each ignored op type and fit their per-op cost models."""
    from scipy.optimize import nnls

    rows, targets, per_op = [], [], {}
    ops = list(EXTRA_OPS)
    for op in ops:
        progress(f"timing {samples} '{op}' samples (op costs for what nn-Meter ignores)")
        for _ in range(samples):
            module, shape = op_sample(op, rng)
            module = module.to(device).eval()
            kernels = decompose(module, shape)
            if not kernels:
                continue
            x = torch.randn(*shape, device=device)
            timing = time_callable(lambda: module(x), device, threads=threads, repeats=7,
                                   min_round_s=1e-3)
            rows.append(design_row(kernels, ops))
            targets.append(timing.median_ms)
            per_op.setdefault(op, []).append(len(rows) - 1)
    a, y = np.array(rows), np.array(targets)
    # scale columns so NNLS is well conditioned, solve, unscale
    scale = np.maximum(np.abs(a).max(axis=0), 1e-12)
    coef, _ = nnls(a / scale, y)
    coef = coef / scale
    fitted = a @ coef
    result, width = {}, len(COST_TERMS)
    for i, op in enumerate(ops):
        idx = per_op.get(op, [])
        rel = [abs(fitted[j] - y[j]) / y[j] for j in idx if y[j] > 0]
        terms = coef[width * i:width * (i + 1)]
        result[op] = {**{name: float(value) for name, value in zip(COST_TERMS, terms)},
                      "samples": len(idx),
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


# --- the builder ------------------------------------------------------------------------------
@dataclass
class BuiltPredictor:
    name: str
    device: str
    folder: Path
    meta_path: Path
    registered: bool
    kernel_errors: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0


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
        threads: torch threads while timing (default: the measuring policy of
            :mod:`qnas.runtime.threads`, 1 or ``$QNAS_HOST_THREADS``).
        n_estimators: trees per random forest.
        op_samples: timed samples per ignored op type (default ``max(4, samples // 4)``).
        calibration_networks: random children of ``space`` timed whole to fit the per-kernel
            in-network framework overhead (0, or ``space=None``: no overhead term).
        register: run ``nn-meter register`` so nn-Meter (and qnas) can use it.
    """
    from sklearn.ensemble import RandomForestRegressor

    if device not in HOST_DEVICES:
        raise QnasError(f"qnas can build predictors only for this host ({', '.join(HOST_DEVICES)}),"
                        f" not {device!r}; for phones and VPUs install nn-Meter's published "
                        f"predictors with 'qnas predictor install-nnmeter PATH'")
    if samples < 2:
        raise QnasError(f"--samples must be at least 2 per kernel type, got {samples}")
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    tdevice = torch_device(device)
    threads = resolve_threads(threads, MEASURING)
    name = HOST_PREDICTOR_NAMES[device]
    host = host_fingerprint(device)
    folder = Path(out).expanduser() if out else data_folder() / "predictor" / name
    rng = np.random.default_rng(seed)
    prior = space_prior(space, input_shape)
    label = f"{host}, torch {torch.__version__}, {threads} thread(s)"

    errors: dict[str, float | None] = {}
    with staged_folder(folder) as staging:
        counts: dict[str, int] = {}
        for kernel in HOST_KERNELS:
            configs = sample_configs(kernel, samples, prior, rng)
            say(f"timing {len(configs)} '{kernel}' kernels on {device}")
            features, latencies = [], []
            for cfg in configs:
                features.append(nnmeter_features(kernel, cfg))
                latencies.append(time_kernel(kernel, cfg, tdevice, threads))
            x, y = np.array(features), np.array(latencies)
            errors[kernel] = _holdout_error(x, y, n_estimators, seed)
            model = RandomForestRegressor(n_estimators=n_estimators, random_state=seed).fit(x, y)
            write_bytes_atomic(staging / f"{kernel}.pkl", pickle.dumps(model))
            counts[kernel] = len(configs)
        write_json_atomic(staging / "fusion_rules.json", FUSION_RULES)
        op_costs = fit_op_costs(tdevice, threads, op_samples or max(4, samples // 4), rng, label,
                                say)
        if space is not None and calibration_networks > 0:
            op_costs = calibrate_overhead(staging, op_costs, space, input_shape, tdevice, threads,
                                          calibration_networks, seed, say)
        op_costs.write(staging)
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
        write_text_atomic(staging / "meta.yaml", yaml.safe_dump(meta, sort_keys=False))
    meta_path = folder / "meta.yaml"
    if register:
        say(f"registering '{name}' with nn-meter register --predictor {meta_path}")
        register_predictor(meta_path, name)
    return BuiltPredictor(name, device, folder, meta_path, register, errors,
                          time.perf_counter() - started)


def _holdout_error(x: np.ndarray, y: np.ndarray, n_estimators: int, seed: int) -> float | None:
    """Median |relative error| of a forest trained on 80 % and tested on the other 20 %."""
    from sklearn.ensemble import RandomForestRegressor  # heavy: only while building

    if len(y) < 10:
        return None
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    model = RandomForestRegressor(n_estimators=n_estimators, random_state=seed)
    pred = model.fit(x[train], y[train]).predict(x[test])
    return float(np.median(np.abs(pred - y[test]) / np.maximum(y[test], 1e-9)))
