"""nn-Meter 2.0 as a qnas latency backend — offline, quiet, on a current software stack.

What this module does that nn-Meter's own ``predictor.predict(model, "torch")`` cannot:

* **Export**: ``torch.onnx.export(dynamo=False, opset_version=20)`` into memory (nn-Meter's
  exporter writes into a ``TemporaryFile`` with the default exporter, which fails on torch >= 2.9;
  opset 20 keeps LayerNorm and GELU single nodes), then ``onnxsim.simplify`` and
  ``nn_meter.ir_converter.model_to_graph(onnx_model, "onnx")``; the IR is predicted with
  nn-Meter's IR-level call ``predictor.predict(graph, "nnmeter-ir")``.
* **IR fix-up**: a Split/Slice/Add/Conv on a tensor that is not 4-D (QuadraConv2d splits its
  N×C×3×H×W output) crashes nn-Meter's feature extraction, which unpacks every such input as
  N×H×W×C. Those nodes are retyped ``<type>-nd`` so nn-Meter skips them; qnas then costs the
  kernels nn-Meter did not (next point).
* **Ops nn-Meter ignores**: nn-Meter has no kernel predictor for LayerNorm, GELU, element-wise
  mul, transpose, softmax, MatMul, … and silently costs them 0. qnas finds which kernels of its
  own decomposition (:mod:`qnas.predictors.kernels`) have no costed counterpart among
  nn-Meter's kernels of the same graph and costs exactly those with the device's calibrated
  profile (``profile.cost_kernels``) — or, for a host predictor built by
  ``qnas predictor build``, with the per-op models fitted on that host
  (:mod:`qnas.predictors.op_costs`). The reported latency is nn-Meter's IR prediction + those
  extra costs (+ for a qnas-built host predictor, its fitted in-network framework overhead);
  the breakdown keeps the parts apart (column ``backend``).

Which predictor files serve a device, installing them, and importing nn-Meter offline (old
scikit-learn pickles, downloads refused): :mod:`qnas.predictors.nnmeter_files`.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
import torch

from ..errors import QnasError
from .base import Kernel, Prediction
from .kernels import decompose, parse_input_shape
from .measured import module_signature
from .nnmeter_files import (
    HOST_PREDICTOR_NAMES,
    import_nn_meter,
    missing_message,
    nnmeter_files,
    nnmeter_version,
    user_config_folder,
)
from .op_costs import HostOpCosts

ONNX_OPSET = 20

NNMETER_KNOWN_ERROR = ("nn-Meter: ±10% for ~99% of models on CPU/Adreno, ~83% on Myriad VPU "
                       "(nn-Meter paper, its own benchmark set)")
HOST_KNOWN_ERROR = ("nn-Meter-format random forests trained on this host's PyTorch kernel "
                    "timings by 'qnas predictor build'; see its meta.yaml for the hold-out error")

# IR op types whose kernel features nn-Meter reads from a 4-D (N×H×W×C) input
_NEEDS_4D_INPUT = {"Conv", "Split", "Slice", "Add", "MaxPool", "AveragePool", "Concat"}

# which nn-Meter kernel tokens (IR types after nn-Meter's aliasing) cost a qnas kernel type
_COVERING_TOKENS = {
    "conv": {"conv"}, "pwconv": {"conv"}, "gconv": {"conv"}, "dwconv": {"dwconv"},
    "linear": {"fc"}, "batchnorm": {"bn"}, "relu": {"relu"}, "hswish": {"hswish"},
    "add": {"add"},
}


# --- nn-Meter's predictor objects -------------------------------------------------------------
_LOADED: dict[tuple, Any] = {}


def load_nnmeter_predictor(device: str):
    """nn-Meter's own predictor object for ``device`` (cached), or QnasError if files are missing."""
    files = nnmeter_files(device)
    if not files.available:
        raise QnasError(missing_message(device, files))
    stamp = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in files.folder.iterdir()
                         if p.is_file()))
    key = (str(user_config_folder()), files.name, str(files.version), str(files.folder), stamp)
    if key not in _LOADED:
        nn_meter = import_nn_meter()
        with contextlib.redirect_stdout(io.StringIO()):   # it print()s version warnings
            _LOADED[key] = nn_meter.load_latency_predictor(files.name, files.version)
    return _LOADED[key], files


# --- module -> ONNX -> nn-Meter IR ------------------------------------------------------------
def export_onnx(module, input_shape: Sequence[int]):
    """The simplified ONNX model of ``module`` at ``input_shape`` (legacy exporter, opset 20)."""
    import onnx
    import onnxsim

    params = list(module.parameters())
    device = params[0].device if params else torch.device("cpu")
    was_training = module.training
    module.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.zeros(*input_shape, device=device),), buffer,
                              dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["input"], output_names=["output"])
    except Exception as err:  # noqa: BLE001 -- unsupported op, bad shape, ...
        raise QnasError(f"{type(module).__name__} does not export to ONNX at input shape "
                        f"{'x'.join(map(str, input_shape))} ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:160]}); nn-Meter needs an ONNX graph — "
                        f"use the profile backend for this module") from None
    finally:
        module.train(was_training)
    model = onnx.load_from_string(buffer.getvalue())
    simplified, ok = onnxsim.simplify(model)
    return simplified if ok else model


def sanitize_ir(graph: dict) -> dict:
    """Retype nodes whose non-4-D input would crash nn-Meter's feature extraction (in place)."""
    for node in graph.values():
        attr = node.get("attr") or {}
        op_type = attr.get("type")
        shapes = attr.get("input_shape") or []
        if op_type in _NEEDS_4D_INPUT and shapes and any(len(s) != 4 for s in shapes if s):
            attr["type"] = f"{op_type}-nd"
    return graph


def nnmeter_ir(module, input_shape: Sequence[int]) -> dict:
    """nn-Meter's IR graph of ``module`` at ``input_shape`` (ONNX path, sanitised)."""
    nn_meter = import_nn_meter()
    onnx_model = export_onnx(module, input_shape)
    return sanitize_ir(nn_meter.ir_converter.model_to_graph(onnx_model, "onnx"))


def _host_known_error(info: dict, extra_costs) -> str:
    """The measured errors of a host predictor built by qnas (from its meta and op-cost files)."""
    qnas_meta = info.get("qnas") or {}
    parts = [HOST_KNOWN_ERROR.split(";")[0]]
    holdout = {k: v for k, v in (qnas_meta.get("holdout_median_rel_error") or {}).items()
               if v is not None}
    if holdout:
        shown = ", ".join(f"{k} {100 * v:.0f}%" for k, v in holdout.items())
        parts.append(f"kernel hold-out median |rel. error|: {shown}")
    calibration = getattr(extra_costs, "calibration", None) or {}
    if calibration.get("in_sample_median_rel_error") is not None:
        parts.append(f"whole-network median |rel. error| "
                     f"{100 * calibration['in_sample_median_rel_error']:.0f}% on the "
                     f"{calibration.get('networks')} calibration networks (in-sample)")
    return "; ".join(parts)


# --- costing ----------------------------------------------------------------------------------
@dataclass
class NNMeterKernel:
    """One kernel as nn-Meter's kernel detector sees it, with nn-Meter's cost (or none)."""

    name: str
    op: str
    predictor: str | None           # the kernel predictor that costs it (None: nn-Meter skips it)
    features: list | None
    ms: float


def nnmeter_kernels(predictor, graph: dict) -> tuple[float, list[NNMeterKernel]]:
    """nn-Meter's IR-level prediction of ``graph`` and its per-kernel split.

    The total is nn-Meter's own ``predictor.predict(graph, "nnmeter-ir")``; the split re-runs
    the same kernel predictors per kernel (batched by kernel type) on the kernels the same
    detector found.
    """
    from nn_meter.predictor.prediction.extract_feature import get_predict_features
    from nn_meter.predictor.prediction.predict_by_kernel import merge_conv_kernels
    from nn_meter.predictor.prediction.utils import get_kernel_name

    with contextlib.redirect_stdout(io.StringIO()):
        total = float(predictor.predict(graph, "nnmeter-ir"))
    detected = predictor.kd.get_kernels()
    rows, batches = [], {}
    for kernel in detected:
        feats = get_predict_features([kernel])
        row = NNMeterKernel(kernel["name"], kernel["op"], None, None, 0.0)
        if feats:
            op, features = next(iter(feats[0].items()))
            kname = get_kernel_name(merge_conv_kernels(op))
            row.features = list(features)
            if kname in predictor.kernel_predictors:
                row.predictor = kname
                batches.setdefault(kname, []).append(len(rows))
        rows.append(row)
    for kname, indices in batches.items():
        values = predictor.kernel_predictors[kname].predict([rows[i].features for i in indices])
        for i, value in zip(indices, values):
            rows[i].ms = float(value)
    return total, rows


def _tokens(op: str) -> set[str]:
    return set(op.split("-"))


def _covering_tokens(kernel: Kernel, batch: int) -> set[str]:
    """The nn-Meter kernel tokens that would cost this qnas kernel (empty: none can)."""
    if kernel.params.get("dynamic"):
        # a KernelWarehouse (per-sample) conv exports as MatMul, which nn-Meter skips
        return set()
    if kernel.op == "linear":
        # a Linear on more than one token per image exports as MatMul, which nn-Meter skips
        return {"fc"} if int(kernel.params.get("m", batch)) <= batch else set()
    if kernel.op == "pool":
        aten = str(kernel.params.get("aten", ""))
        if "max" in aten:
            return {"maxpool"}
        out = tuple(kernel.params.get("output_shape", ()))
        if aten == "mean" or (len(out) == 4 and out[2:] == (1, 1)):
            return {"gap"}
        return {"avgpool"}
    if kernel.op == "copy" and kernel.params.get("aten") in ("cat", "stack"):
        return {"concat"}
    return set(_COVERING_TOKENS.get(kernel.op, ()))


def kernels_ignored_by_nnmeter(kernels: Sequence[Kernel], nm_rows: Sequence[NNMeterKernel],
                               batch: int = 1) -> list[Kernel]:
    """qnas kernels that none of nn-Meter's costed kernels accounts for."""
    covered = set()
    for row in nm_rows:
        if row.predictor is not None:
            covered |= _tokens(row.op)
    return [k for k in kernels if not (_covering_tokens(k, batch) & covered)]


@dataclass
class NNMeterParts:
    """The parts of an nn-Meter prediction, kept apart."""

    nnmeter_ms: float                     # nn-Meter's IR prediction
    extra_ms: float                       # qnas's costs for the kernels nn-Meter ignores
    nnmeter_kernels: list[NNMeterKernel]
    ignored_kernels: list[Kernel]
    ignored_ms: list[float]
    graph: dict
    overhead_ms: float = 0.0              # host predictors: fitted in-network framework overhead
    kernel_count: int = 0                 # qnas kernels of the module (the overhead's basis)

    @property
    def total_ms(self) -> float:
        return self.nnmeter_ms + self.extra_ms + self.overhead_ms


def predict_parts_with(predictor, extra_costs, module, input_shape: Sequence[int]) -> NNMeterParts:
    """nn-Meter's prediction of ``module`` with ``predictor`` (an nn-Meter predictor object)
    plus ``extra_costs.cost_kernels`` for the kernels it ignores (and, when ``extra_costs``
    has one, the fitted per-kernel in-network overhead of a host predictor)."""
    shape = parse_input_shape(input_shape)
    graph = nnmeter_ir(module, shape)
    nm_total, nm_rows = nnmeter_kernels(predictor, graph)
    kernels = decompose(module, shape)
    ignored = kernels_ignored_by_nnmeter(kernels, nm_rows, batch=shape[0])
    costs = [float(c) for c in extra_costs.cost_kernels(ignored)] if ignored else []
    per_kernel = float(getattr(extra_costs, "overhead_per_kernel_ms", 0.0) or 0.0)
    return NNMeterParts(nm_total, sum(costs), nm_rows, ignored, costs, graph,
                        overhead_ms=per_kernel * len(kernels), kernel_count=len(kernels))


class NNMeterPredictor:
    """Latency from nn-Meter's predictor for ``device`` plus qnas's costs for ignored ops.

    Args:
        device: a qnas device with an nn-Meter predictor (``cortexA76``, ``adreno640``,
            ``adreno630``, ``myriadvpu``, ``host-cpu``/``host-cuda`` after
            ``qnas predictor build``) or a registered nn-Meter predictor's name.
        profile: the object that costs the kernels nn-Meter ignores — anything with
            ``cost_kernels(kernels) -> list[float]`` and ``version`` (the device's calibrated
            ``ProfilePredictor``). Host predictors built by qnas carry their own fitted op
            costs and need none.

    Raises QnasError (saying how to install the files and which backend is used instead) when
    the predictor's files are not on disk.
    """

    source = "nn-meter"

    def __init__(self, device: str, profile=None):
        self.device = device
        self.files = nnmeter_files(device)
        if not self.files.available:
            raise QnasError(missing_message(device, self.files))
        self.profile = profile
        self.extra_costs = profile
        extra_name = None
        if profile is not None:
            extra_name = " ".join(str(part) for part in (
                "calibrated profile", getattr(profile, "device", ""),
                getattr(profile, "version", "")) if part)
        if profile is None:
            self.extra_costs = HostOpCosts.from_folder(self.files.folder)
            if self.extra_costs is None:
                raise QnasError(
                    f"nn-Meter predictor '{self.files.name}' ignores LayerNorm, GELU, mul and "
                    f"transpose, and no profile was given to cost them; pass the device's "
                    f"ProfilePredictor (qnas.predictors.get('{device}') does) or build the "
                    f"predictor with 'qnas predictor build'")
            extra_name = self.extra_costs.version
        self._extra_name = extra_name
        self.version = (f"nn-Meter {nnmeter_version()}: {self.files.name} v{self.files.version}"
                        f" + ignored ops: {extra_name}")
        base_error = (_host_known_error(self.files.info, self.extra_costs)
                      if device in HOST_PREDICTOR_NAMES else NNMETER_KNOWN_ERROR)
        self.known_error = f"{base_error}; ignored ops costed by {extra_name}"
        self._cache: dict[tuple, NNMeterParts] = {}

    def predict_parts(self, module, input_shape: Sequence[int]) -> NNMeterParts:
        """The prediction's parts (cached per module structure and input shape)."""
        shape = parse_input_shape(input_shape)
        key = (module_signature(module), shape)
        if key not in self._cache:
            predictor, _files = load_nnmeter_predictor(self.device)
            self._cache[key] = predict_parts_with(predictor, self.extra_costs, module, shape)
        return self._cache[key]

    def predict(self, module, input_shape: Sequence[int]) -> Prediction:
        parts = self.predict_parts(module, input_shape)
        extra_label = f"qnas: {self._extra_name}"
        rows = []
        for row in parts.nnmeter_kernels:
            if row.predictor is None:
                continue
            flops = float(row.features[-2]) * 2e6 if row.predictor in (
                "conv-bn-relu", "dwconv-bn-relu", "fc") else float("nan")
            rows.append((row.name, row.op, flops, float("nan"), row.ms, "nn-meter", row.predictor))
        for kernel, ms in zip(parts.ignored_kernels, parts.ignored_ms):
            rows.append((kernel.name, kernel.op, float(kernel.flops), float(kernel.bytes), ms,
                         extra_label, ""))
        if parts.overhead_ms:
            rows.append((f"(framework overhead: {parts.kernel_count} kernels)", "overhead",
                         0.0, 0.0, parts.overhead_ms,
                         "qnas: per-kernel in-network overhead fitted on calibration networks", ""))
        frame = pd.DataFrame(rows, columns=["name", "op", "flops", "bytes", "ms", "backend",
                                            "nnmeter_kernel"])
        return Prediction(
            latency_ms=parts.total_ms, device=self.device, source=self.source,
            version=self.version,
            known_error=(f"{self.known_error} (nn-Meter part {parts.nnmeter_ms:.3f} ms, ignored "
                         f"ops {parts.extra_ms:.3f} ms"
                         + (f", framework overhead {parts.overhead_ms:.3f} ms)"
                            if parts.overhead_ms else ")")),
            kernels=frame)
