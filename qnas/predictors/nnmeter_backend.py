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
  ``qnas predictor build``, with the per-op models fitted on that host. The reported latency is
  nn-Meter's IR prediction + those extra costs (+ for a qnas-built host predictor, its fitted
  in-network framework overhead); the breakdown keeps the parts apart (column ``backend``).
* **Old pickles**: nn-Meter's kernel predictors are scikit-learn 0.23 pickles; nn-Meter's loader
  is patched to read them through :mod:`qnas.predictors.sklearn_compat`.
* **No downloads, ever**: a device's nn-Meter predictor is used only when its files are already
  on disk (``qnas predictor install-nnmeter PATH`` puts them there from a local zip or folder),
  and nn-Meter's downloader is replaced by one that refuses.

Where nn-Meter keeps things (nn-Meter 2.0, ``nn_meter/predictor/utils.py``):
``~/.nn_meter/config/predictors.yaml`` lists predictors (copied from the package on first use;
``nn-meter register --predictor meta.yaml`` appends an entry). A *built-in* entry (it has a
``download`` URL) is read from ``<data_folder>/predictor/<name>/`` (``data_folder`` from
``~/.nn_meter/config/settings.yaml``, default ``~/.nn_meter/data``) and must hold one
``<kernel>.pkl`` per listed kernel predictor plus ``fusion_rules.json``; a *registered* entry is
read from its ``package_location``.

qnas device → nn-Meter predictor: the four published devices map through
``predictors/devices.yaml`` (cortexA76 → cortexA76cpu_tflite21, …); ``host-cpu``/``host-cuda``
map to the predictors ``qnas predictor build`` registers (``qnas_host_cpu``/``qnas_host_cuda``),
which count only on the CPU (GPU) they were measured on; any registered nn-Meter predictor can
also be named directly.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import shutil
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import yaml

from ..errors import QnasError
from ..runtime.files import replace_folder
from .base import Kernel, Prediction

ONNX_OPSET = 20

# fallback when predictors/devices.yaml is not there: qnas device -> nn-Meter predictor
_PUBLISHED_DEVICES = {
    "cortexA76": "cortexA76cpu_tflite21",
    "adreno640": "adreno640gpu_tflite21",
    "adreno630": "adreno630gpu_tflite21",
    "myriadvpu": "myriadvpu_openvino2019r2",
}
# predictors built and registered by `qnas predictor build` for the host devices
HOST_PREDICTOR_NAMES = {"host-cpu": "qnas_host_cpu", "host-cuda": "qnas_host_cuda"}
NNMETER_RELEASE_URL = "https://github.com/microsoft/nn-Meter/releases/tag/v1.0-data"

NNMETER_KNOWN_ERROR = ("nn-Meter: ±10% for ~99% of models on CPU/Adreno, ~83% on Myriad VPU "
                       "(nn-Meter paper, its own benchmark set)")
HOST_KNOWN_ERROR = ("nn-Meter-format random forests trained on this host's PyTorch kernel "
                    "timings by 'qnas predictor build'; see its meta.yaml for the hold-out error")

LOGGER_NAME = "nn-Meter"

# IR op types whose kernel features nn-Meter reads from a 4-D (N×H×W×C) input
_NEEDS_4D_INPUT = {"Conv", "Split", "Slice", "Add", "MaxPool", "AveragePool", "Concat"}

# which nn-Meter kernel tokens (IR types after nn-Meter's aliasing) cost a qnas kernel type
_COVERING_TOKENS = {
    "conv": {"conv"}, "pwconv": {"conv"}, "gconv": {"conv"}, "dwconv": {"dwconv"},
    "linear": {"fc"}, "batchnorm": {"bn"}, "relu": {"relu"}, "hswish": {"hswish"},
    "add": {"add"},
}


# --- where nn-Meter keeps its files ------------------------------------------------------------
def _nn_meter_package_dir() -> Path | None:
    spec = importlib.util.find_spec("nn_meter")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def user_config_folder() -> Path:
    """``~/.nn_meter/config`` — the one nn-Meter uses (fixed when nn_meter is imported)."""
    module = sys.modules.get("nn_meter.predictor.utils")
    if module is not None:
        return Path(module.__user_config_folder__)
    return Path(os.path.expanduser("~/.nn_meter/config"))


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        return None
    except yaml.YAMLError as err:
        raise QnasError(f"nn-Meter config {path} is not valid YAML ({str(err).splitlines()[0]}); "
                        f"fix or delete it (nn-Meter recreates it)") from None


def predictor_configs() -> list[dict]:
    """nn-Meter's predictor list: the user's copy, or the package's before first use."""
    configs = _read_yaml(user_config_folder() / "predictors.yaml")
    if configs is None:
        package = _nn_meter_package_dir()
        configs = _read_yaml(package / "configs" / "predictors.yaml") if package else None
    return [c for c in (configs or []) if isinstance(c, dict) and "name" in c]


def data_folder() -> Path:
    """nn-Meter's data folder (``settings.yaml``; default ``~/.nn_meter/data``)."""
    settings = _read_yaml(user_config_folder() / "settings.yaml")
    if isinstance(settings, dict) and settings.get("data_folder"):
        return Path(settings["data_folder"])
    return user_config_folder().parent / "data"


def builtin_predictor_folder(name: str) -> Path:
    """Where nn-Meter looks for the files of built-in predictor ``name``."""
    return data_folder() / "predictor" / name


def _version_key(value: Any):
    from packaging import version

    try:
        return version.parse(str(value))
    except version.InvalidVersion:
        return version.parse("0")


# --- device -> nn-Meter predictor --------------------------------------------------------------
def device_map() -> dict[str, str]:
    """qnas device → nn-Meter predictor name, from ``predictors/devices.yaml`` when present."""
    mapping = dict(_PUBLISHED_DEVICES)
    try:
        from ..resources import data_dir

        raw = _read_yaml(data_dir("predictors") / "devices.yaml")
    except FileNotFoundError:
        raw = None
    entries = raw.get("devices") if isinstance(raw, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        # - name: cortexA76 ... nnmeter_predictor: cortexA76cpu_tflite21
        if isinstance(entry, dict) and entry.get("name") and entry.get("nnmeter_predictor"):
            mapping[str(entry["name"])] = str(entry["nnmeter_predictor"])
    return mapping


def nnmeter_predictor_name(device: str) -> str | None:
    """The nn-Meter predictor that serves qnas ``device`` (None: nn-Meter has none)."""
    if device in HOST_PREDICTOR_NAMES:
        return HOST_PREDICTOR_NAMES[device]
    mapping = device_map()
    if device in mapping:
        return mapping[device]
    if any(c["name"] == device for c in predictor_configs()):
        return device
    return None


def host_fingerprint(device: str) -> str:
    """What a host predictor must match to count on this machine: the CPU (or GPU) model."""
    from .measured import cpu_model

    if device == "host-cuda":
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU"
    return cpu_model()


@dataclass
class NNMeterFiles:
    """What is on disk for one device's nn-Meter predictor."""

    device: str
    name: str | None
    version: Any = None
    folder: Path | None = None
    kernel_predictors: list[str] = field(default_factory=list)
    builtin: bool = False
    info: dict = field(default_factory=dict)
    problem: str = ""              # empty when usable

    @property
    def available(self) -> bool:
        return not self.problem


def nnmeter_files(device: str) -> NNMeterFiles:
    """Find ``device``'s nn-Meter predictor files without importing nn-Meter or downloading."""
    name = nnmeter_predictor_name(device)
    if name is None:
        return NNMeterFiles(device, None, problem="nn-Meter has no predictor for this device")
    entries = [c for c in predictor_configs() if c["name"] == name]
    if not entries:
        how = ("it is not registered" if device in HOST_PREDICTOR_NAMES
               else "nn-Meter's predictors.yaml does not list it")
        return NNMeterFiles(device, name, problem=how)
    info = max(entries, key=lambda c: _version_key(c.get("version")))
    kernels = [str(k) for k in info.get("kernel_predictors") or []]
    builtin = "download" in info
    folder = builtin_predictor_folder(name) if builtin else Path(info.get("package_location", ""))
    files = NNMeterFiles(device, name, info.get("version"), folder, kernels, builtin, info)
    missing = [f"{k}.pkl" for k in kernels if not (folder / f"{k}.pkl").is_file()]
    if not (folder / "fusion_rules.json").is_file():
        missing.append("fusion_rules.json")
    if not folder.is_dir():
        files.problem = f"its folder {folder} does not exist"
    elif missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        files.problem = f"{folder} lacks {shown}"
    elif device in HOST_PREDICTOR_NAMES:
        built_on = (info.get("qnas") or {}).get("host")
        here = host_fingerprint(device)
        if built_on != here:
            files.problem = f"it was built on '{built_on}', this host is '{here}'"
    return files


def nnmeter_available(device: str) -> bool:
    """True when ``device``'s nn-Meter predictor files are on disk (nothing is imported)."""
    try:
        return nnmeter_files(device).available
    except QnasError:
        return False


def fallback_backend(device: str) -> str:
    if device in HOST_PREDICTOR_NAMES:
        return f"qnas measures on this host instead (MeasuredPredictor('{device}'))"
    return f"qnas uses its calibrated profile for {device} instead (source 'profile')"


def missing_message(device: str, files: NNMeterFiles | None = None) -> str:
    """One line: what is missing, how to install it, which backend is used meanwhile."""
    files = files or nnmeter_files(device)
    if files.name is None:
        known = ", ".join(sorted({*device_map(), *HOST_PREDICTOR_NAMES}))
        return (f"nn-Meter has no predictor for device '{device}' (devices with one: {known}; "
                f"or build one for this host with 'qnas predictor build --device host-cpu'); "
                f"{fallback_backend(device)}")
    if device in HOST_PREDICTOR_NAMES:
        how = (f"build it with 'qnas predictor build --device {device}' (or install a copy with "
               f"'qnas predictor install-nnmeter PATH')")
    else:
        how = (f"install its files with 'qnas predictor install-nnmeter PATH', PATH being "
               f"{files.name}.zip from {NNMETER_RELEASE_URL} or its unpacked folder (qnas never "
               f"downloads)")
    return (f"nn-Meter predictor '{files.name}' for {device} is not usable: {files.problem}; "
            f"{how}; {fallback_backend(device)}")


# --- installing published predictor files ------------------------------------------------------
def _looks_like_predictor(folder: Path) -> bool:
    return folder.is_dir() and (folder / "fusion_rules.json").is_file() \
        and any(folder.glob("*.pkl"))


def _find_predictor_folders(root: Path, default_name: str) -> dict[str, Path]:
    """Predictor folders under ``root``: ``root`` itself or its sub-folders (as in the zips)."""
    if _looks_like_predictor(root):
        return {default_name: root}
    found = {}
    for sub in sorted(p for p in root.rglob("*") if p.is_dir()):
        if _looks_like_predictor(sub) and not sub.name.startswith((".", "__MACOSX")):
            found.setdefault(sub.name, sub)
    return found


def install_nnmeter_predictors(path: str | Path, name: str | None = None) -> list[Path]:
    """Install nn-Meter predictor files from a local zip or folder (no download).

    ``path`` is a zip from nn-Meter's release page (``cortexA76cpu_tflite21.zip`` holds the
    folder ``cortexA76cpu_tflite21/``) or a folder holding such predictor folders, or one
    predictor folder itself (``*.pkl`` + ``fusion_rules.json``; its name, or ``name``, says
    which predictor it is). Each predictor goes to ``<data_folder>/predictor/<name>/``, where
    nn-Meter looks for it, replacing an earlier copy atomically. Returns the installed folders.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise QnasError(f"{source} does not exist; pass a predictor zip such as "
                        f"cortexA76cpu_tflite21.zip or a folder holding *.pkl + fusion_rules.json")
    known = {c["name"]: c for c in predictor_configs()}
    with tempfile.TemporaryDirectory(prefix="qnas-nnmeter-") as scratch:
        if source.is_file():
            if not zipfile.is_zipfile(source):
                raise QnasError(f"{source} is not a zip file; pass nn-Meter's predictor zip or "
                                f"a folder holding *.pkl + fusion_rules.json")
            with zipfile.ZipFile(source) as archive:
                root = Path(scratch) / "unpacked"
                for member in archive.namelist():
                    target = (root / member).resolve()
                    if not str(target).startswith(str(root.resolve())):
                        raise QnasError(f"{source} holds an unsafe path {member!r}; refusing it")
                archive.extractall(root)
            default = name or source.stem
        else:
            root = source
            default = name or source.name
        folders = _find_predictor_folders(root, default)
        if not folders:
            raise QnasError(f"no nn-Meter predictor found in {source}: expected a folder with "
                            f"*.pkl kernel predictors and fusion_rules.json")
        if name is not None and len(folders) == 1:
            folders = {name: next(iter(folders.values()))}
        installed = []
        for pred_name, folder in folders.items():
            installed.append(_install_one(pred_name, folder, known))
    return installed


def _install_one(pred_name: str, folder: Path, known: dict[str, dict]) -> Path:
    info = known.get(pred_name)
    if info is None or "download" not in info:
        builtins = ", ".join(n for n, c in known.items() if "download" in c)
        raise QnasError(f"'{pred_name}' is not one of nn-Meter's published predictors "
                        f"({builtins}); name the folder or zip after one, or register your own "
                        f"with 'nn-meter register --predictor meta.yaml'")
    missing = [k for k in info.get("kernel_predictors") or []
               if not (folder / f"{k}.pkl").is_file()]
    if missing:
        raise QnasError(f"{folder} lacks kernel predictors {', '.join(missing)} that nn-Meter "
                        f"needs for {pred_name}; use the complete {pred_name}.zip")
    target = builtin_predictor_folder(pred_name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{pred_name}.", dir=target.parent))
    try:
        for item in folder.iterdir():
            if item.is_file():
                shutil.copy2(item, staging / item.name)
        replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


# --- nn-Meter itself: lazy, quiet, never downloading -------------------------------------------
def _refuse_download(url, *_args, **_kwargs):
    raise QnasError(f"nn-Meter tried to download {url}; qnas never downloads — install the "
                    f"files with 'qnas predictor install-nnmeter PATH'")


def import_nn_meter():
    """Import nn_meter quietly and make its predictor loader offline and scikit-learn-1.x safe."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import nn_meter
        import nn_meter.predictor.utils as loader_utils

    # nn-Meter attaches a stdout handler at INFO; qnas reports what matters itself
    logging.getLogger(LOGGER_NAME).setLevel(logging.ERROR)
    from . import sklearn_compat

    loader_utils.pickle = sklearn_compat.PICKLE_SHIM
    loader_utils.download_from_url = _refuse_download
    dataset = sys.modules.get("nn_meter.dataset.bench_dataset")
    if dataset is not None:
        dataset.download_from_url = _refuse_download
    return nn_meter


def nnmeter_version() -> str:
    try:
        from importlib.metadata import version

        return version("nn-meter")
    except Exception:  # noqa: BLE001
        return "unknown"


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


# --- module -> ONNX -> nn-Meter IR -------------------------------------------------------------
def export_onnx(module, input_shape: Sequence[int]):
    """The simplified ONNX model of ``module`` at ``input_shape`` (legacy exporter, opset 20)."""
    import onnx
    import onnxsim
    import torch

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


# --- costing -----------------------------------------------------------------------------------
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
    from .kernels import decompose, parse_input_shape

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
            from .builder import HostOpCosts

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
        from .kernels import parse_input_shape
        from .measured import module_signature

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
