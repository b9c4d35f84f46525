"""The calibration set: models a user times on their own device, so that qnas can fit a profile
for it (the workflow of ``qnas predictor calibration-set`` and ``qnas predictor calibrate NAME
--measurements FILE.csv``).

The set is defined in ``predictors/calibration_set.yaml`` (the single source of truth): mostly
QuadraNet children of the ``quadranet`` space plus a few torchvision models, at one input shape.
:func:`write_calibration_set` exports each model as ONNX (checked with onnxruntime against
PyTorch) and, where the optional converter ``litert-torch`` is installed
(``pip install qnas[tflite]``), as LiteRT/TFLite, beside a ``measurements.csv`` template and a
README on how to time them. :func:`read_measurements` reads the filled CSV back into
:class:`~qnas.predictors.calibrate.TimedModel` s, rebuilding each model's kernels from the set's
definition (a row whose model is not in the set but whose ``file`` is an ONNX graph is costed
from that graph, :mod:`qnas.predictors.onnx_graph`).
"""
from __future__ import annotations

import functools
import io
import math
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import QnasError
from ..resources import data_dir

SET_FILE = "calibration_set.yaml"
CSV_FILE = "measurements.csv"
README_FILE = "README.txt"
MODELS_FOLDER = "models"
CSV_COLUMNS = ["model", "file", "input_shape", "latency_ms"]
MIN_MEASURED = 5                 # a fit has 4 parameters; leave-one-out needs a few more models
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_SET_KEYS = {"name", "version", "input_shape", "num_classes", "onnx_opset", "models"}
_MODEL_KEYS = {"name", "model", "space", "stages", "why"}
ONNX_INPUT, ONNX_OUTPUT = "input", "logits"


# --- the definition ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationModel:
    """One model of the set: a named model (``model``) or a child of ``space`` (``stages``)."""

    name: str
    model: str | None = None
    space: str | None = None
    stages: tuple[str, ...] = ()
    why: str = ""

    @property
    def kind(self) -> str:
        return "child" if self.space else "model"

    def ops(self) -> list[str]:
        """The child's op per searchable layer of its space (identity fills each stage)."""
        from ..space import load_space

        space = load_space(self.space)
        if len(self.stages) != len(space.depths):
            raise QnasError(f"calibration model {self.name}: space '{space.name}' has "
                            f"{len(space.depths)} stages, 'stages' lists {len(self.stages)}")
        ops = []
        for stage, (text, depth) in enumerate(zip(self.stages, space.depths)):
            chosen = _expand_stage(text, self.name)
            if len(chosen) > depth:
                raise QnasError(f"calibration model {self.name}: stage {stage} of space "
                                f"'{space.name}' has {depth} layers, got {len(chosen)} ops")
            ops += chosen + ["identity"] * (depth - len(chosen))
        return space.check_ops(ops)

    def build(self, num_classes: int = 1000, meta: bool = False):
        """The model with fresh weights (``meta``: shapes only where the model allows it)."""
        if self.space:
            from ..space import load_space

            return load_space(self.space).build_child(self.ops(), num_classes=num_classes)
        from ..models.by_name import model_from_name

        return model_from_name(self.model, num_classes=num_classes, meta=meta)


def _expand_stage(text: str, where: str) -> list[str]:
    ops = []
    for token in str(text or "").split():
        op, _, count = token.partition("*")
        try:
            repeat = int(count) if count else 1
        except ValueError:
            repeat = -1
        if not op or repeat < 1:
            raise QnasError(f"calibration model {where}: bad stage token {token!r}; write ops "
                            f"separated by spaces, 'op*n' to repeat (e.g. 'k3e2*2 k7e4')")
        ops += [op] * repeat
    return ops


@dataclass
class CalibrationSet:
    """A parsed calibration set (see ``predictors/calibration_set.yaml``)."""

    name: str
    version: str
    input_shape: tuple[int, ...]
    num_classes: int
    onnx_opset: int
    models: list[CalibrationModel]
    source: str = ""
    text: str = field(default="", repr=False)     # the YAML as read (copied beside the files)

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def model(self, name: str) -> CalibrationModel | None:
        return {m.name: m for m in self.models}.get(name)

    def kernels(self, name: str, input_shape: Sequence[int] | None = None) -> tuple:
        """The kernels of model ``name`` at ``input_shape`` (default: the set's)."""
        from .kernels import parse_input_shape

        shape = parse_input_shape(input_shape or self.input_shape)
        return _kernels(self.text, self.source, name, shape)


@functools.lru_cache(maxsize=256)
def _kernels(text: str, source: str, name: str, shape: tuple[int, ...]) -> tuple:
    from .kernels import decompose

    cset = parse_calibration_set(text, source)
    entry = cset.model(name)
    if entry is None:
        raise QnasError(f"model '{name}' is not in calibration set {cset.label}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = entry.build(num_classes=cset.num_classes, meta=True)
    return tuple(decompose(module, shape))


def default_set_path() -> Path:
    return data_dir("predictors") / SET_FILE


def parse_calibration_set(text: str, source: str = "<yaml>") -> CalibrationSet:
    """A calibration set from its YAML text; one-line errors for a malformed definition."""
    from .kernels import parse_input_shape

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise QnasError(f"calibration set {source} is not valid YAML: "
                        f"{str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), list) or not raw["models"]:
        raise QnasError(f"calibration set {source} must be a mapping with a non-empty 'models:' "
                        f"list")
    unknown = set(raw) - _SET_KEYS
    if unknown:
        raise QnasError(f"calibration set {source}: unknown keys {sorted(unknown)}; allowed: "
                        f"{sorted(_SET_KEYS)}")
    models, seen = [], set()
    for entry in raw["models"]:
        if not isinstance(entry, dict) or set(entry) - _MODEL_KEYS or "name" not in entry \
                or (("model" in entry) == ("space" in entry)) \
                or (("space" in entry) != ("stages" in entry)):
            raise QnasError(f"calibration set {source}: bad model entry {entry!r}; each needs a "
                            f"name and either 'model' (e.g. resnet18) or 'space' + 'stages'")
        name = str(entry["name"])
        if not _NAME.match(name) or name.lower() in seen:
            raise QnasError(f"calibration set {source}: model name {name!r} is "
                            f"{'repeated' if name.lower() in seen else 'not a plain file name'}")
        seen.add(name.lower())
        stages = entry.get("stages") or ()
        if not isinstance(stages, (list, tuple)):
            raise QnasError(f"calibration set {source}: model {name}: 'stages' must be a list "
                            f"with one string per stage")
        models.append(CalibrationModel(
            name=name, model=str(entry["model"]) if "model" in entry else None,
            space=str(entry["space"]) if "space" in entry else None,
            stages=tuple("" if s is None else str(s) for s in stages),
            why=str(entry.get("why", ""))))
    return CalibrationSet(
        name=str(raw.get("name", Path(source).stem)), version=str(raw.get("version", "1")),
        input_shape=parse_input_shape(raw.get("input_shape", [1, 3, 224, 224])),
        num_classes=int(raw.get("num_classes", 1000)), onnx_opset=int(raw.get("onnx_opset", 20)),
        models=models, source=source, text=text)


def load_calibration_set(path: str | Path | None = None) -> CalibrationSet:
    """The calibration set in ``path`` (default: the shipped ``predictors/calibration_set.yaml``)."""
    path = Path(path) if path is not None else default_set_path()
    if not path.is_file():
        raise QnasError(f"calibration set {path} does not exist; omit it for the shipped set or "
                        f"give the {SET_FILE} that 'qnas predictor calibration-set' wrote")
    return parse_calibration_set(path.read_text(encoding="utf-8"), str(path))


# --- exporting it -------------------------------------------------------------------------------
@dataclass
class WrittenSet:
    """What :func:`write_calibration_set` wrote: ``table`` has one row per model (model, file,
    tflite_file, input_shape, onnx_mb, ort_max_abs_diff, seconds)."""

    folder: Path
    calibration_set: CalibrationSet
    table: object                      # pandas DataFrame
    tflite: str                        # "" when not converted, else the converter used
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def tflite_converter():
    """The optional LiteRT converter module (``litert-torch``), or None when not installed."""
    import importlib
    import importlib.util

    for name in ("litert_torch", "ai_edge_torch"):       # the latter: its former name
        if importlib.util.find_spec(name) is None:
            continue
        try:
            return importlib.import_module(name)
        except Exception:  # noqa: BLE001 -- a broken install counts as not installed
            return None
    return None


def export_onnx(module, input_shape: Sequence[int], opset: int) -> bytes:
    """``module`` as ONNX at a fixed ``input_shape`` (TorchScript exporter, checked)."""
    import onnx
    import torch

    buffer = io.BytesIO()
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(*input_shape),), buffer, dynamo=False,
                          opset_version=opset, input_names=[ONNX_INPUT],
                          output_names=[ONNX_OUTPUT])
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def check_with_onnxruntime(module, data: bytes, input_shape: Sequence[int]) -> float:
    """Run the ONNX model with onnxruntime and compare with PyTorch; returns max |difference|
    (QnasError when it is not within 1e-3 of the output's scale)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = module.eval()(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else math.inf
    if not diff <= 1e-3 * max(1.0, float(np.max(np.abs(want)))):
        raise QnasError(f"onnxruntime's output differs from PyTorch's by {diff:.3g} "
                        f"(shape {got.shape} vs {want.shape})")
    return diff


README = """\
qnas calibration set {label}: {count} models at input shape {shape} (float32)
============================================================================

Time each model on the device you want qnas to predict, write the milliseconds into
measurements.csv (column latency_ms), and fit a profile for the device:

    qnas predictor calibrate MYDEVICE --measurements {folder}/measurements.csv --like cortexA76

That prints the fit's leave-one-model-out table and registers MYDEVICE in qnas's user device
registry ($QNAS_HOME, default ~/.config/qnas/): 'qnas devices' lists it and every command takes
'--device MYDEVICE' (qnas search, qnas latency, qnas predictor lut). --like picks the shipped
profile whose kernel classes and priors the fit starts from: cortexA76 for CPUs, adreno640 for
mobile GPUs, myriadvpu for VPUs/NPUs.

Files
-----
models/<model>.onnx     ONNX opset {opset}, input '{input}' {shape}, output '{output}'; each checked
                        with onnxruntime against PyTorch when written
{tflite_line}
measurements.csv        model, file, input_shape, latency_ms (fill in latency_ms, in ms; delete the
                        rows of models you cannot run — at least {minimum} are needed)
calibration_set.yaml    the definition of the models (qnas rebuilds their kernels from it; keep it
                        next to measurements.csv)

How to time them (batch 1, the settings you will deploy with; report the median or mean per run)
---------------------------------------------------------------------------------------------------
* LiteRT/TFLite (phones, Arm CPUs, mobile GPUs):
    adb push models/<model>.tflite /data/local/tmp/
    adb shell /data/local/tmp/benchmark_model --graph=/data/local/tmp/<model>.tflite \\
        --num_threads=1 --warmup_runs=10 --num_runs=50 [--use_gpu=true]
  'avg=' in the 'Timings (microseconds)' line of the inference is in us: divide by 1000.
  Without .tflite files here, convert the ONNX files (e.g. onnx2tf) or install the converter
  ('pip install qnas[tflite]') and run 'qnas predictor calibration-set' again.
* OpenVINO (Intel CPUs, GPUs, NPUs, Myriad VPUs):
    benchmark_app -m models/<model>.onnx -d CPU -hint latency -niter 200 -nireq 1 -nstreams 1
  Use the 'Median:' latency (ms).
* TensorRT (NVIDIA GPUs):
    trtexec --onnx=models/<model>.onnx --warmUp=500 --iterations=200 [--fp16]
  Use the median of 'GPU Compute Time' (ms).
* onnxruntime (any CPU; this is what 'qnas bench calibrate-host' does on the machine it runs on):
    python -c "import onnxruntime as ort, numpy as np, time, statistics as st
    o = ort.SessionOptions(); o.intra_op_num_threads = 1
    s = ort.InferenceSession('models/<model>.onnx', o)
    x = {{'{input}': np.random.rand({shape_tuple}).astype(np.float32)}}
    [s.run(None, x) for _ in range(5)]
    t = []
    for _ in range(30): a = time.perf_counter(); s.run(None, x); t.append(time.perf_counter() - a)
    print(1000 * st.median(t))"

Time every model the same way (same runtime, threads, precision, delegate). The profile then
predicts that setting; a different setting is a different device name.
"""


def write_calibration_set(out: str | Path, set_path: str | Path | None = None, *,
                          tflite: bool = True, force: bool = False,
                          progress: Callable[[str], None] | None = None) -> WrittenSet:
    """Export the calibration set into the folder ``out`` (models/, measurements.csv,
    README.txt, calibration_set.yaml): ONNX always, LiteRT/TFLite as well when ``tflite`` and
    ``litert-torch`` is installed. ``out`` must not exist or be empty unless ``force`` (then it
    is replaced whole — a filled measurements.csv there would be lost)."""
    import pandas as pd

    from ..runtime.files import check_writable_folder, staged_folder
    from .kernels import parse_input_shape

    out = Path(out)
    check_writable_folder(out)
    if out.is_dir() and any(out.iterdir()) and not force:
        filled = " (it holds a measurements.csv)" if (out / CSV_FILE).exists() else ""
        raise QnasError(f"--out {out} is not empty{filled}; give a new folder, or --force to "
                        f"replace it")
    cset = load_calibration_set(set_path)
    shape = parse_input_shape(cset.input_shape)
    converter = tflite_converter() if tflite else None
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    rows, notes = [], []
    with staged_folder(out) as staging:
        (staging / MODELS_FOLDER).mkdir()
        for entry in cset.models:
            began = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = entry.build(num_classes=cset.num_classes).eval()
            try:
                data = export_onnx(module, shape, cset.onnx_opset)
                diff = check_with_onnxruntime(module, data, shape)
            except QnasError as err:
                raise QnasError(f"calibration model {entry.name}: {err}") from None
            except Exception as err:  # noqa: BLE001 -- the exporter's or onnxruntime's own
                raise QnasError(f"calibration model {entry.name} does not export to ONNX: "
                                f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
                                ) from None
            onnx_file = f"{MODELS_FOLDER}/{entry.name}.onnx"
            (staging / onnx_file).write_bytes(data)
            tflite_file = ""
            if converter is not None:
                tflite_file = _export_tflite(converter, module, shape, staging, entry.name, notes)
            rows.append({"model": entry.name, "file": onnx_file, "tflite_file": tflite_file,
                         "input_shape": "x".join(map(str, shape)),
                         "onnx_mb": round(len(data) / 2**20, 2), "ort_max_abs_diff": diff,
                         "seconds": round(time.perf_counter() - began, 2)})
            say(f"{entry.name}: {onnx_file}{' + ' + tflite_file if tflite_file else ''} "
                f"({rows[-1]['seconds']:.1f} s)")
        table = pd.DataFrame(rows)
        template = table[["model", "file", "input_shape"]].assign(latency_ms="")
        if converter is not None:
            template.insert(2, "tflite_file", table["tflite_file"])
        (staging / CSV_FILE).write_text(template.to_csv(index=False), encoding="utf-8")
        (staging / SET_FILE).write_text(cset.text, encoding="utf-8")
        (staging / README_FILE).write_text(README.format(
            label=cset.label, count=len(cset.models), shape="x".join(map(str, shape)),
            shape_tuple=", ".join(map(str, shape)), folder=out, opset=cset.onnx_opset,
            input=ONNX_INPUT, output=ONNX_OUTPUT, minimum=MIN_MEASURED,
            tflite_line=(f"models/<model>.tflite   LiteRT/TFLite flatbuffers (converted with "
                         f"{converter.__name__})" if converter is not None else
                         "(no .tflite files: the optional converter is not installed; "
                         "pip install qnas[tflite])")), encoding="utf-8")
    if tflite and converter is None:
        notes.append("no LiteRT/TFLite files: the optional converter is not installed "
                     "(pip install qnas[tflite]); ONNX only")
    return WrittenSet(out, cset, table, converter.__name__ if converter is not None else "",
                      notes, time.perf_counter() - started)


def _export_tflite(converter, module, shape, staging: Path, name: str, notes: list) -> str:
    import torch

    path = f"{MODELS_FOLDER}/{name}.tflite"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edge = converter.convert(module.eval(), (torch.zeros(*shape),))
            edge.export(str(staging / path))
    except Exception as err:  # noqa: BLE001 -- one model the converter cannot take
        notes.append(f"{name}: no .tflite ({type(err).__name__}: "
                     f"{' '.join(str(err).split())[:120]}); time its ONNX file instead")
        return ""
    return path


# --- reading the measurements back ---------------------------------------------------------------
@dataclass
class Measurements:
    """A filled measurements.csv: ``timed`` for the fit, ``table`` (model, file, input_shape,
    latency_ms, kernels_from: ``set`` or ``onnx``) as read, and the calibration set the model
    names refer to (a row's ``file`` is absolute where its kernels come from that ONNX graph)."""

    timed: list                        # list[TimedModel]
    table: object                      # pandas DataFrame
    calibration_set: CalibrationSet
    path: Path


def _latency(value: str) -> float:
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    from ..units import parse_latency

    try:
        return parse_latency(text)
    except QnasError:
        return math.nan


def set_for(csv_path: str | Path, set_path: str | Path | None = None) -> CalibrationSet:
    """The calibration set a measurements CSV refers to: ``set_path``, else the
    ``calibration_set.yaml`` beside the CSV, else the shipped set."""
    if set_path is None:
        beside = Path(csv_path).parent / SET_FILE
        set_path = beside if beside.is_file() else None
    return load_calibration_set(set_path)


def read_measurements(csv_path: str | Path, set_path: str | Path | None = None) -> Measurements:
    """The timed models of a filled measurements CSV (see the module doc), with one-line errors
    for a missing file or column, an unknown or repeated model, and missing or bad latencies."""
    import pandas as pd

    from .calibrate import TimedModel
    from .kernels import parse_input_shape

    path = Path(csv_path)
    if not path.is_file():
        raise QnasError(f"measurements file {path} does not exist; write the template with "
                        f"'qnas predictor calibration-set --out DIR' and fill in latency_ms")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise QnasError(f"{path} is not a readable CSV ({' '.join(str(err).split())[:120]}); "
                        f"expected the columns {', '.join(CSV_COLUMNS)}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in ("model", "latency_ms") if c not in frame.columns]
    if missing:
        raise QnasError(f"{path} lacks the column(s) {', '.join(missing)}; expected "
                        f"{', '.join(CSV_COLUMNS)} (as in the template 'qnas predictor "
                        f"calibration-set' writes)")
    cset = set_for(path, set_path)
    timed, rows, unfilled, seen = [], [], [], set()
    for number, row in enumerate(frame.to_dict(orient="records"), start=2):
        name = str(row.get("model", "")).strip()
        if not name and not any(str(v).strip() for v in row.values()):
            continue                                    # an empty line
        where = f"{path.name} line {number}"
        if not name:
            raise QnasError(f"{where}: no model name")
        if name in seen:
            raise QnasError(f"{where}: model '{name}' is listed twice; keep one row per model")
        seen.add(name)
        text = str(row.get("latency_ms", "")).strip()
        if not text:
            unfilled.append(name)
            continue
        latency = _latency(text)
        if not (math.isfinite(latency) and latency > 0):
            raise QnasError(f"{where}: latency_ms {text!r} of '{name}' is not a positive number "
                            f"of milliseconds (e.g. 12.5)")
        shape_text = str(row.get("input_shape", "")).strip()
        try:
            shape = parse_input_shape(shape_text) if shape_text else cset.input_shape
        except QnasError as err:
            raise QnasError(f"{where}: {err}") from None
        if cset.model(name) is not None:
            kernels, file = cset.kernels(name, shape), str(row.get("file", "")).strip()
        else:
            kernels, file = _extra_model(path, where, name, row, cset, shape)
        timed.append(TimedModel(name, tuple(kernels), latency))
        rows.append({"model": name, "file": file, "input_shape": "x".join(map(str, shape)),
                     "latency_ms": latency,
                     "kernels_from": "set" if cset.model(name) is not None else "onnx"})
    if unfilled:
        shown = ", ".join(unfilled[:5]) + (f" and {len(unfilled) - 5} more"
                                            if len(unfilled) > 5 else "")
        raise QnasError(f"{path}: no latency_ms for {len(unfilled)} model(s) ({shown}); fill "
                        f"them in, or delete the rows of models you did not time")
    if len(timed) < MIN_MEASURED:
        raise QnasError(f"{path}: {len(timed)} timed model(s); a fit needs at least "
                        f"{MIN_MEASURED} (the set has {len(cset.models)})")
    return Measurements(timed, pd.DataFrame(rows), cset, path)


def _extra_model(path: Path, where: str, name: str, row: dict, cset: CalibrationSet,
                 shape) -> tuple[tuple, str]:
    # -> (kernels, the absolute path of the graph)
    """Kernels of a row that is not in the set: its ``file`` must be an ONNX graph."""
    file = str(row.get("file", "")).strip()
    candidate = Path(file).expanduser() if file else None
    if candidate is not None and not candidate.is_absolute():
        candidate = path.parent / candidate
    if candidate is None or candidate.suffix.lower() != ".onnx" or not candidate.is_file():
        known = ", ".join(m.name for m in cset.models[:4])
        raise QnasError(f"{where}: model '{name}' is not in calibration set {cset.label} "
                        f"({known}, …) and its file {file or '(none)'} is not an existing "
                        f".onnx file; use the set's model names or give the ONNX file you timed")
    from .onnx_graph import onnx_kernels

    return tuple(onnx_kernels(candidate, shape)), str(candidate.resolve())
