"""Benchmark: a datasheet/calibrated profile's predictions against measurements on real hardware.

For each candidate block of a search space (QuadraBlock k3e2 … k7e4) at each distinct layer input
shape of the space at its deployment shape, and for a few whole models, the profile device's
prediction is set beside a measurement with the measured backend (``host-cuda`` or ``host-cpu``,
:class:`~qnas.predictors.measured.MeasuredPredictor`: warm-up, median of repeated rounds).
``rel_error = predicted / measured - 1``.

This is how the ``h100`` profile's ``known_error`` is obtained (``qnas bench profile h100`` on an
H100). A profile checked against OTHER hardware (e.g. ``a100`` against an H100) is labelled
``cross-check`` in the ``relation`` column: that is a comparison, not a validation of the profile.

Batch-1 eager PyTorch on a GPU is dispatch-bound (tens of µs of CPU work per kernel), which a
roofline with a few µs of launch overhead does not model; running at a larger batch as well
(``batches=(1, 32)``) shows how the profile fares once the GPU itself is the bottleneck. The
``measured_us_per_kernel`` column (measured time / kernels in qnas's decomposition) makes that
visible.

Without a GPU, :func:`check_against` sets the profiles beside a committed measurement file
instead (``qnas bench profile a100,h100 --against h100_eager_measurements.csv``, the file the
h100 profile was fitted to): each single timing (a model or a block at its shape, batch 1 or 32)
is predicted at its shape, and each recorded spread of a set of blocks (measured / an older
profile's prediction: median, min, max over the set; the per-block timings were not kept) is set
beside the same ratio of the profile's predictions.
"""
from __future__ import annotations

import re
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from ..errors import QnasError
from ..models.by_name import model_from_name
from ..models.ops import is_identity
from ..models.quadranet import MODEL_NAMES
from ..predictors.calibrate import (
    block_set,
    measured_kernels,
    read_measurements,
    reference_profile,
    resolve_reference_file,
)
from ..predictors.devices import device_info
from ..predictors.measured import HOST_DEVICES, MeasuredPredictor, cpu_model
from ..predictors.registry import profile_predictor
from ..space import load_space

DEFAULT_MODELS = ("quadranet_xxs", "quadranet_t", "resnet18")
COLUMNS = ["profile", "relation", "batch", "kind", "op", "shape", "layer", "kernels",
           "predicted_ms", "measured_ms", "measured_iqr", "rel_error", "measured_us_per_kernel",
           "predicted_source", "measured_source", "measured_on"]


@dataclass
class ProfileCheck:
    """The long table of one check (one row per profile × batch × block/model) and its context."""

    table: pd.DataFrame
    devices: list[str]
    measure: str
    hardware: str
    measured_version: str
    space: str
    input_shape: tuple[int, ...]
    batches: list[int]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> pd.DataFrame:
        """Per profile × batch × kind: count, median |rel error|, range of rel error, and the
        median measured/predicted ratio."""
        rows = []
        keys = ["profile", "relation", "batch", "kind"]
        for key, group in self.table.groupby(keys, sort=False):
            errors = group["rel_error"]
            ratio = group["measured_ms"] / group["predicted_ms"]
            rows.append(dict(zip(keys, key), n=len(group),
                             median_abs_rel_error=float(errors.abs().median()),
                             min_rel_error=float(errors.min()), max_rel_error=float(errors.max()),
                             median_measured_over_predicted=float(ratio.median())))
        return pd.DataFrame(rows, columns=keys + ["n", "median_abs_rel_error", "min_rel_error",
                                                  "max_rel_error",
                                                  "median_measured_over_predicted"])


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in shape)


def _normalised(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def relation(device: str, hardware: str) -> str:
    """``validation`` when the measured hardware is the profile's device (its name appears in
    the hardware's name), else ``cross-check`` (a comparison, NOT a validation of the profile)."""
    return "validation" if _normalised(device) in _normalised(hardware) else "cross-check"


def _against_relation(predictor, hardware: str, path) -> str:
    """As :func:`relation`, but ``in the fit`` when the file is the one the profile was fitted
    to (its ``measurements:``): agreement with its own fit data is not a validation — the
    profile's leave-one-out error (``qnas devices``) is."""
    kind = relation(predictor.device, hardware)
    fitted_to = str(getattr(predictor, "profile", {}).get("measurements") or "")
    if kind == "validation" and fitted_to and Path(fitted_to).name == Path(path).name:
        return "in the fit"
    return kind


def _hardware(measure: str) -> str:
    if measure == "host-cuda":
        return torch.cuda.get_device_name()
    return cpu_model()


def _precision_note(measure: str) -> str | None:
    if measure != "host-cuda":
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # torch ≥ 2.9 deprecates the allow_tf32 flags
        try:
            conv = torch.backends.cudnn.allow_tf32
            matmul = torch.backends.cuda.matmul.allow_tf32
        except Exception:  # noqa: BLE001 -- a torch that dropped the flags
            return None
    return (f"float32 tensors; cuDNN convolutions may use TF32: {conv}; matmuls may use TF32: "
            f"{matmul} (PyTorch defaults)")


def block_cases(space, input_shape: Sequence[int]) -> list[tuple[str, str, tuple, object]]:
    """(op, layer name, input shape, slot) for each non-identity candidate at each distinct
    layer input of ``space`` at ``input_shape`` (a layer's width and stride count as part of
    its shape where the macro lets them differ)."""
    cases, seen = [], set()
    for slot, shape in zip(space.layers, space.layer_input_shapes(tuple(input_shape))):
        for op in slot.ops:
            if is_identity(op):
                continue
            key = (op, tuple(shape), slot.dim, slot.stride)
            if key in seen:
                continue
            seen.add(key)
            cases.append((op, slot.name, tuple(shape), slot))
    return cases


def _build_model(name: str, num_classes: int, notes: list[str]):
    """A qnas model or, if torchvision imports here, a torchvision/timm one (None, with a note,
    when it does not)."""
    if name not in MODEL_NAMES:
        try:
            import torchvision  # noqa: F401 -- a torchvision built for another torch fails here
        except Exception as err:  # noqa: BLE001
            notes.append(f"{name} skipped: torchvision does not import here "
                         f"({type(err).__name__}: {' '.join(str(err).split())[:120]})")
            return None
    return model_from_name(name, num_classes=num_classes)


def check_profile(devices: str | Sequence[str], measure: str = "host-cuda",
                  space: str = "quadranet", batches: Sequence[int] = (1,),
                  models: Sequence[str] = DEFAULT_MODELS, resolution: int | None = None,
                  repeats: int = 15, warmup: int = 3, threads: int | None = None,
                  progress: Callable[[str], None] | None = None) -> ProfileCheck:
    """Predict with each profile device and measure with ``measure``; see the module doc.

    ``devices``: profile devices (names or a comma-separated string). ``batches``: batch sizes
    to run at (the space's deployment shape with N replaced). ``resolution``: override the
    deployment H=W (for quick checks; the reported errors are then not the deployment's).
    """
    say = progress or (lambda _msg: None)
    if isinstance(devices, str):
        devices = [d for d in devices.split(",") if d.strip()]
    if not devices:
        raise QnasError("name at least one profile device, e.g. 'qnas bench profile h100'")
    infos = [device_info(d.strip()) for d in devices]
    for info in infos:
        if info.kind != "profile":
            raise QnasError(f"device '{info.name}' is {info.kind}, not a profile; name a "
                            f"profile device to check (e.g. h100, a100, cortexA76)")
    if measure not in HOST_DEVICES:
        raise QnasError(f"--measure must be one of {', '.join(HOST_DEVICES)}, got '{measure}'")
    batches = [int(b) for b in batches]
    if not batches or min(batches) <= 0:
        raise QnasError(f"batch sizes must be positive integers, got {batches}")
    if resolution is not None and resolution <= 0:
        raise QnasError(f"resolution must be a positive integer, got {resolution}")
    if repeats <= 0 or warmup < 0:
        raise QnasError(f"repeats must be positive and warmup non-negative, got {repeats}, "
                        f"{warmup}")

    predictors = [profile_predictor(info.name) for info in infos]
    meter = MeasuredPredictor(measure, threads=threads, repeats=repeats, warmup=warmup)
    hardware = _hardware(measure)
    spc = load_space(space)
    n, c, h, w = spc.input_shape
    if resolution is not None:
        h = w = resolution
    notes = [note for note in [_precision_note(measure)] if note]
    if resolution is not None:
        notes.append(f"resolution overridden to {resolution}x{resolution}: NOT the space's "
                     f"deployment shape {_shape_text(spc.input_shape)}")
    for predictor in predictors:
        if relation(predictor.device, hardware) == "cross-check":
            notes.append(f"{predictor.device}: cross-check only — {predictor.device} profile vs "
                         f"a measurement on {hardware}; this is NOT a validation of "
                         f"{predictor.device}")

    model_list = [m.strip() for m in models if m and m.strip()]
    built_models = {}
    for name in model_list:
        model = _build_model(name, spc.num_classes, notes)
        if model is not None:
            built_models[name] = model.eval()

    rows = []

    def add(kind: str, op: str, layer: str, module, shape: tuple, batch: int) -> None:
        timing = meter.measure(module, shape)
        for predictor in predictors:
            prediction = predictor.predict(module, shape)
            kernels = len(prediction.kernels)
            rows.append({
                "profile": predictor.device, "relation": relation(predictor.device, hardware),
                "batch": batch, "kind": kind, "op": op, "shape": _shape_text(shape),
                "layer": layer, "kernels": kernels,
                "predicted_ms": prediction.latency_ms, "measured_ms": timing.median_ms,
                "measured_iqr": timing.spread,
                "rel_error": prediction.latency_ms / timing.median_ms - 1.0,
                "measured_us_per_kernel": 1e3 * timing.median_ms / max(kernels, 1),
                "predicted_source": f"profile {predictor.version}",
                "measured_source": f"measured {meter.version}", "measured_on": hardware})

    for batch in batches:
        shape = (batch, c, h, w)
        for op, layer, layer_shape, slot in block_cases(spc, shape):
            say(f"batch {batch}: {op} at {_shape_text(layer_shape)}")
            module = spc.build_layer_op(slot, op).eval()
            add("block", op, layer, module, layer_shape, batch)
        for name, model in built_models.items():
            say(f"batch {batch}: {name} at {_shape_text(shape)}")
            add("model", name, "", model, shape, batch)
        if measure == "host-cuda":
            torch.cuda.empty_cache()
    table = pd.DataFrame(rows, columns=COLUMNS)
    return ProfileCheck(table, [p.device for p in predictors], measure, hardware, meter.version,
                        spc.name, (n, c, h, w), batches, notes)


def format_check(result: ProfileCheck) -> str:
    """The printed report: one table per profile × batch, then the summary of medians."""
    lines = [f"profile predictions vs measurements ({result.measure}) on {result.hardware}",
             f"  measured: {result.measured_version}",
             (f"  space {result.space}, deployment shape {_shape_text(result.input_shape)} "
             f"with N = {', '.join(map(str, result.batches))}"),
             ("  rel_error = predicted / measured - 1; IQR = measured inter-quartile range / "
             "median; us/kernel = measured time / kernels in qnas's decomposition")]
    lines += [f"  note: {note}" for note in result.notes]
    shown = ["op", "shape", "layer", "kernels", "predicted_ms", "measured_ms", "rel_error",
             "measured_iqr", "measured_us_per_kernel"]
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.4g}".format):
        for (profile, relation_, batch), group in result.table.groupby(
                ["profile", "relation", "batch"], sort=False):
            version = group["predicted_source"].iloc[0]
            lines += ["", (f"== {profile} ({version}) vs {result.measure} [{relation_}], "
                          f"batch {batch}")]
            frame = group[shown].rename(columns={"measured_iqr": "IQR",
                                                 "measured_us_per_kernel": "us/kernel"})
            lines.append(frame.to_string(index=False))
            for kind in ("block", "model"):
                errors = group.loc[group["kind"] == kind, "rel_error"]
                if len(errors):
                    lines.append(f"median |rel error| of {len(errors)} {kind}s: "
                                 f"{100 * statistics.median(errors.abs()):.0f}% "
                                 f"(range {100 * errors.min():+.0f}% … {100 * errors.max():+.0f}%)")
        lines += ["", "summary (ratios = measured / predicted):",
                  result.summary().to_string(index=False)]
    return "\n".join(lines)


# --- against a committed measurement file (no GPU needed) ---------------------------------------
AGAINST_COLUMNS = ["profile", "relation", "batch", "kind", "check", "what", "shape", "kernels",
                   "predicted", "measured", "rel_error", "unit", "predicted_source", "measured_on"]
# the rows whose errors make up the printed medians: single timings and the median block of a set
SUMMARISED_CHECKS = ("timing", "median ratio")


@dataclass
class AgainstCheck:
    """Profiles set beside a committed measurement file (see the module doc)."""

    table: pd.DataFrame
    devices: list[str]
    file: str
    hardware: str
    setup: str
    notes: list[str] = field(default_factory=list)

    def summary(self) -> pd.DataFrame:
        """Per profile × batch × kind: median |rel error| over the single timings and the
        median-block ratios of the sets (``n`` of them)."""
        rows = []
        keys = ["profile", "relation", "batch", "kind"]
        used = self.table[self.table["check"].isin(SUMMARISED_CHECKS)]
        for key, group in used.groupby(keys, sort=False):
            errors = group["rel_error"]
            rows.append(dict(zip(keys, key), n=len(group),
                             median_abs_rel_error=float(errors.abs().median()),
                             min_rel_error=float(errors.min()), max_rel_error=float(errors.max())))
        return pd.DataFrame(rows, columns=keys + ["n", "median_abs_rel_error", "min_rel_error",
                                                  "max_rel_error"])


def check_against(devices: str | Sequence[str], measurements: str) -> AgainstCheck:
    """Predict every row of the measurement file ``measurements`` (a path, or a file name in
    the shipped ``predictors/reference/``) with each profile device."""
    if isinstance(devices, str):
        devices = [d for d in devices.split(",") if d.strip()]
    if not devices:
        raise QnasError("name at least one profile device, e.g. 'qnas bench profile h100 "
                        "--against h100_eager_measurements.csv'")
    infos = [device_info(d.strip()) for d in devices]
    for info in infos:
        if info.kind != "profile":
            raise QnasError(f"device '{info.name}' is {info.kind}, not a profile; name a "
                            f"profile device to check (e.g. h100, a100)")
    path = resolve_reference_file(measurements)
    table = read_measurements(path)
    predictors = [profile_predictor(info.name) for info in infos]
    hardware = str(table["gpu"].iloc[0])
    first = table.iloc[0]
    setup = (f"PyTorch {first['torch']}, cuDNN {first['cudnn']}, CUDA {first['cuda']}, driver "
             f"{first['driver']}; {first['dtype']}; {first['timing']}")
    rows = []
    for row in table.itertuples():
        if row.kind in ("model", "block"):
            kernels = measured_kernels(row.kind, row.timed, row.input_shape)
            for predictor in predictors:
                predicted = predictor.predict_kernels(kernels).latency_ms
                rows.append({"profile": predictor.device,
                             "relation": _against_relation(predictor, str(row.gpu), path),
                             "batch": int(row.batch), "kind": row.kind, "check": "timing",
                             "what": row.timed, "shape": row.input_shape,
                             "kernels": len(kernels), "predicted": predicted,
                             "measured": float(row.latency_ms),
                             "rel_error": predicted / float(row.latency_ms) - 1, "unit": "ms",
                             "predicted_source": f"profile {predictor.version}",
                             "measured_on": str(row.gpu)})
            continue
        members = [measured_kernels("block", op, shape) for op, shape in block_set(row)]
        reference = reference_profile(row.ratio_to)
        before = [reference.predict_kernels(m).latency_ms for m in members]
        for predictor in predictors:
            ratios = sorted(predictor.predict_kernels(m).latency_ms / b
                            for m, b in zip(members, before))
            for check, value, measured in (
                    ("median ratio", statistics.median(ratios), row.ratio_median),
                    ("min ratio", ratios[0], row.ratio_min),
                    ("max ratio", ratios[-1], row.ratio_max)):
                rows.append({"profile": predictor.device,
                             "relation": _against_relation(predictor, str(row.gpu), path),
                             "batch": int(row.batch), "kind": "block", "check": check,
                             "what": f"{len(members)} blocks ({row.timed.replace(';', ',')})",
                             "shape": row.input_shape.replace(";", ","),
                             "kernels": sum(len(m) for m in members), "predicted": value,
                             "measured": float(measured),
                             "rel_error": value / float(measured) - 1,
                             "unit": f"x {reference.version}",
                             "predicted_source": f"profile {predictor.version}",
                             "measured_on": str(row.gpu)})
    frame = pd.DataFrame(rows, columns=AGAINST_COLUMNS)
    notes = []
    for predictor in predictors:
        if relation(predictor.device, hardware) == "cross-check":
            notes.append(f"{predictor.device}: cross-check only — {predictor.device} profile vs a "
                         f"measurement on {hardware}; this is NOT a validation of "
                         f"{predictor.device}")
        elif predictor.measurements and Path(str(predictor.measurements)).name == path.name:
            outside = predictor.outside_fit or {}
            notes.append(f"{predictor.device} was fitted to this file: its errors here are IN "
                         f"the fit; outside the fit ({outside.get('method')}): median "
                         f"{outside.get('median_pct')}%, max {outside.get('max_pct')}%")
    return AgainstCheck(frame, [p.device for p in predictors], str(path), hardware, setup, notes)


def format_against(result: AgainstCheck) -> str:
    """The printed report of :func:`check_against`."""
    lines = [f"profile predictions vs the measurements in {result.file}",
             f"  measured on {result.hardware}: {result.setup}",
             ("  rel_error = predicted / measured - 1; a 'ratio' row compares the spread of a set "
             "of blocks whose single timings were not recorded (measured / an older profile's "
             "prediction, median, min and max over the set) with the same ratio of this "
             "profile's predictions")]
    lines += [f"  note: {note}" for note in result.notes]
    shown = ["batch", "kind", "check", "what", "shape", "kernels", "predicted", "measured",
             "unit", "rel_error"]
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.max_colwidth", 60, "display.float_format", "{:.4g}".format):
        for (profile, relation_), group in result.table.groupby(["profile", "relation"],
                                                                sort=False):
            lines += ["", f"== {profile} ({group['predicted_source'].iloc[0]}) [{relation_}]"]
            lines.append(group[shown].to_string(index=False))
            for batch in sorted(group["batch"].unique()):
                for kind in ("block", "model"):
                    errors = group.loc[(group["batch"] == batch) & (group["kind"] == kind)
                                       & group["check"].isin(SUMMARISED_CHECKS), "rel_error"]
                    if len(errors):
                        lines.append(f"batch {batch}: median |rel error| of {len(errors)} "
                                     f"{kind} check{'s' if len(errors) > 1 else ''}: "
                                     f"{100 * statistics.median(errors.abs()):.0f}% "
                                     f"(range {100 * errors.min():+.0f}% … "
                                     f"{100 * errors.max():+.0f}%)")
        lines += ["", "summary (timings and median-block ratios):",
                  result.summary().to_string(index=False)]
    return "\n".join(lines)
