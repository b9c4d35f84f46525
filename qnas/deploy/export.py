"""``qnas export``: best.json → a plain child network, verified, as ``.pt``, ONNX and TorchScript.

The flow (ProxylessNAS's "convert to a normal net"):

1. read ``best.json`` (:func:`qnas.nas.best.load_best` refuses a corrupt file, a newer schema
   and another space) and the supernet checkpoint next to it;
2. build the child — identity layers removed — with the supernet's weights of the chosen ops
   (:meth:`Supernet.child`), for the data's number of classes;
3. verify BEFORE writing anything: the child's output equals the supernet's under that
   architecture (training resolution, batch 3); onnxruntime's output equals PyTorch's (batch 1
   and 3, and the deployment shape); the TorchScript module reloads and matches;
4. write ``child.pt`` (state dict + architecture, see :func:`load_child`), ``child.onnx``
   (opset ≥ 17, dynamic batch/height/width), ``child.torchscript.pt`` and ``MODEL_CARD.md`` —
   all into a temporary folder first, then moved into place; a refusal or a failed check
   writes nothing at all.

Children with BatchNorm (the ``mbconv`` space) get their running statistics re-estimated on the
search's training data after step 3's first check, exactly as the search did before measuring
``val_top1`` (a supernet's statistics mix every path).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd
import torch
from torch import nn

from .. import __version__
from ..errors import QnasError
from ..nas.best import BestArch, load_best
from ..space import SearchSpace, space_from_dict

CHILD_FORMAT = "qnas-child"
CHILD_FORMAT_VERSION = 1
FORMATS = ("pt", "onnx", "torchscript")
FILE_NAMES = {"pt": "child.pt", "onnx": "child.onnx", "torchscript": "child.torchscript.pt"}
CARD_NAME = "MODEL_CARD.md"
DEFAULT_OPSET = 20           # LayerNormalization (17) and Gelu (20) stay single nodes
MIN_OPSET = 17
CHILD_ATOL = 1e-5            # child vs supernet: the same ops on the same weights
RUNTIME_ATOL = 1e-4          # onnxruntime / TorchScript vs PyTorch: other kernels, fp32
RUNTIME_RTOL = 1e-4
VERIFY_BATCHES = (1, 3)
ONNX_INPUT, ONNX_OUTPUT = "input", "logits"
# kernel types whose FLOPs are multiply-adds (see qnas.predictors.kernels)
MAC_KERNELS = ("conv", "pwconv", "dwconv", "gconv", "linear", "matmul")
MACS_RULE = ("conv, linear and matmul kernels of qnas's kernel decomposition "
             "(qnas.predictors.kernels.decompose), MACs = FLOPs / 2")


def _max_opset() -> int:
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError):
        return DEFAULT_OPSET


@dataclass
class ExportResult:
    """What :func:`export_child` did.

    files: written paths by kind (``pt``, ``onnx``, ``torchscript``, ``card``).
    verification: one row per check — check, input shape, max |diff|, tolerance, passed.
    macs: forward MACs at ``macs_shape`` (the best.json's deployment input shape).
    """

    out: Path
    files: dict[str, Path]
    ops: list[str]
    num_classes: int
    resolution: int
    params: int
    macs: int
    macs_shape: tuple[int, ...]
    verification: pd.DataFrame
    layers: pd.DataFrame
    batchnorm: str | None = None
    card: str = field(default="", repr=False)

    def describe(self) -> str:
        return (f"{len(self.layers)} layers, {self.params:,} parameters, {self.macs:,} MACs at "
                f"{'x'.join(map(str, self.macs_shape))}, {self.num_classes} classes")


# --- inputs -----------------------------------------------------------------------------------

def parse_formats(formats: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"pt,onnx"`` / ``["pt", "onnx"]`` / ``"all"`` → the formats in canonical order."""
    if formats is None:
        return FORMATS
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    if names == ["all"]:
        return FORMATS
    aliases = {"ts": "torchscript", "jit": "torchscript", "pytorch": "pt", "torch": "pt"}
    names = [aliases.get(name, name) for name in names]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise QnasError(f"unknown export format{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown)) or '(none given)'}; use any of "
                        f"{','.join(FORMATS)} (comma-separated) or 'all'")
    return tuple(name for name in FORMATS if name in names)


def _check_opset(opset: int) -> int:
    top = _max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise QnasError(f"ONNX opset must be an integer from {MIN_OPSET} to {top} (this "
                        f"torch's exporter), got {opset!r}")
    return opset


def _as_best(best: str | os.PathLike | BestArch,
             space: SearchSpace | str | os.PathLike | None = None) -> BestArch:
    return best if isinstance(best, BestArch) else load_best(best, space=space)


def _resolution(best: BestArch) -> int:
    evaluation = best.raw.get("evaluation")
    value = evaluation.get("resolution") if isinstance(evaluation, dict) else None
    if value is None:
        return int(best.input_shape[-1])
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise QnasError(f"{best.path} is corrupt: evaluation.resolution must be a positive "
                        f"integer, got {value!r}")
    return value


def _load_supernet(best: BestArch):
    from ..nas.search import load_supernet

    path = best.supernet_checkpoint
    if not path.is_file():
        raise QnasError(f"the supernet checkpoint {path} named in {best.path} does not exist; "
                        f"export needs the search's run folder (best.json with its "
                        f"{Path(best.raw['supernet_checkpoint']).name}) — copy it back or "
                        f"search again")
    supernet = load_supernet(path, space=best.space)
    evaluation = best.raw.get("evaluation")
    recorded = evaluation.get("num_classes") if isinstance(evaluation, dict) else None
    if recorded is not None and recorded != supernet.num_classes:
        raise QnasError(f"{best.path} records {recorded} classes but its supernet checkpoint "
                        f"{path} has {supernet.num_classes}; the run folder is inconsistent — "
                        f"search again")
    return supernet


def inherited_child(best: str | os.PathLike | BestArch,
                    space: SearchSpace | str | os.PathLike | None = None) -> nn.Module:
    """The child of ``best`` (identity layers removed) with the supernet's weights of the
    chosen ops, for the data's number of classes; eval mode, CPU. BatchNorm statistics are the
    supernet's (see :func:`export_child` for the re-estimated ones)."""
    best = _as_best(best, space)
    return _load_supernet(best).child(best.ops).eval()


# --- counting ---------------------------------------------------------------------------------

def count_macs(module: nn.Module, input_shape: str | Sequence[int]) -> int:
    """Forward multiply-accumulates of ``module`` at ``input_shape`` (see :data:`MACS_RULE`)."""
    from ..predictors.kernels import decompose

    return int(round(sum(k.flops for k in decompose(module, input_shape)
                         if k.op in MAC_KERNELS) / 2))


def _layer_table(best: BestArch, child: nn.Module, shape: Sequence[int]) -> tuple[pd.DataFrame,
                                                                                   int]:
    from ..predictors.kernels import decompose

    kernels = decompose(child, shape)
    total = sum(k.flops for k in kernels if k.op in MAC_KERNELS) / 2
    paths = best.space.child_layer_paths(best.ops)
    rows = []
    for slot, op, path in zip(best.space.layers, best.ops, paths):
        if path is None:
            rows.append({"layer": slot.name, "op": op, "module": "(removed)", "params": 0,
                         "macs": 0})
            continue
        params = sum(p.numel() for p in child.get_submodule(path).parameters())
        macs = sum(k.flops for k in kernels if k.op in MAC_KERNELS
                   and (k.name == path or k.name.startswith(path + "."))) / 2
        rows.append({"layer": slot.name, "op": op, "module": path, "params": int(params),
                     "macs": int(round(macs))})
    return pd.DataFrame(rows, columns=["layer", "op", "module", "params", "macs"]), \
        int(round(total))


# --- converting -------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet():
    """Silence the exporters' deprecation notes and the tracer's note about QuadraConv2d's
    input check (a shape test, not data flow); the outputs are verified instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def onnx_bytes(child: nn.Module, sample: torch.Tensor, opset: int = DEFAULT_OPSET,
               metadata: dict[str, str] | None = None) -> bytes:
    """The child as an ONNX model (TorchScript-based exporter, dynamic batch/height/width)."""
    import onnx

    buffer = io.BytesIO()
    with _quiet(), torch.no_grad():
        torch.onnx.export(child, (sample,), buffer, dynamo=False, opset_version=opset,
                          input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                          dynamic_axes={ONNX_INPUT: {0: "batch", 2: "height", 3: "width"},
                                        ONNX_OUTPUT: {0: "batch"}})
    model = onnx.load_from_string(buffer.getvalue())
    model.producer_name, model.producer_version = "qnas", __version__
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_session(model: bytes | str | os.PathLike, threads: int = 1):
    """An onnxruntime CPU session with a fixed intra-op thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def torchscript_bytes(child: nn.Module, sample: torch.Tensor,
                      extra_files: dict[str, str] | None = None) -> bytes:
    """The child traced to TorchScript (``torch.jit.trace``), serialised."""
    buffer = io.BytesIO()
    with _quiet():
        with torch.no_grad():
            traced = torch.jit.trace(child, sample, check_trace=False)
        torch.jit.save(traced, buffer, _extra_files=extra_files or {})
    return buffer.getvalue()


def _load_torchscript(data: bytes):
    with _quiet():
        return torch.jit.load(io.BytesIO(data), map_location="cpu")


# --- verification -----------------------------------------------------------------------------

def _diff(a, b, rtol: float) -> tuple[float, float]:
    """(max |a − b|, max of |a − b| − rtol·|b|): the second is ≤ atol when allclose."""
    a = torch.as_tensor(a, dtype=torch.float32)
    b = torch.as_tensor(b, dtype=torch.float32)
    if a.shape != b.shape:
        return math.inf, math.inf
    delta = (a - b).abs()
    return float(delta.max()), float((delta - rtol * b.abs()).max())


def _check(rows: list[dict], name: str, shape, got, want, atol: float, rtol: float) -> None:
    worst, excess = _diff(got, want, rtol)
    passed = math.isfinite(worst) and excess <= atol
    rows.append({"check": name, "input": "x".join(map(str, shape)), "max_abs_diff": worst,
                 "atol": atol, "rtol": rtol, "passed": passed})
    if not passed:
        raise QnasError(f"verification failed, nothing written: {name} differs by max "
                        f"|diff| {worst:.3g} at input {'x'.join(map(str, shape))} (tolerance "
                        f"atol {atol:g}, rtol {rtol:g}); this is a bug — please report it with "
                        f"the output of 'qnas --debug export ...'")


def _inputs(in_chans: int, resolution: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(max(VERIFY_BATCHES), in_chans, resolution, resolution,
                       generator=generator)


# --- BatchNorm --------------------------------------------------------------------------------

def _recalibrate(child: nn.Module, best: BestArch, echo: Callable[[str], None]) -> str | None:
    """Re-estimate BatchNorm statistics as the search did before measuring val_top1."""
    from ..nas.evaluator import epoch_loader, has_batchnorm, recalibrate_batchnorm, search_data
    from ..nas.search import WEIGHT_DATA, read_checkpoint

    if not has_batchnorm(child):
        return None
    config = read_checkpoint(best.supernet_checkpoint).get("config", {})
    try:
        data = search_data(config["data"], int(config["resolution"]), int(config["seed"]),
                           float(config["arch_fraction"]))
        loader = epoch_loader(data.weight_train, int(config["batch_size"]), int(config["seed"]),
                              0, WEIGHT_DATA)
    except (QnasError, KeyError, OSError, ValueError) as err:
        note = (f"the supernet's (shared by every path): re-estimating them on the search's "
                f"data failed ({' '.join(str(err).split())}); accuracy may be below val_top1")
        echo(f"warning: BatchNorm statistics are {note}")
        return note
    with torch.random.fork_rng():
        recalibrate_batchnorm(child, loader)
    child.eval()
    return (f"re-estimated on the search's training data ({config['data']}, "
            f"{config['resolution']}×{config['resolution']}, up to 20 batches of "
            f"{config['batch_size']}), as the search did before measuring val_top1")


# --- writing ----------------------------------------------------------------------------------

def _check_out(out: Path) -> None:
    """Refuse an --out that cannot be written, before any work (nothing is created here)."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is a file" if probe == out else f"lies under the file {probe}"
        raise QnasError(f"cannot export to {out}: it {what}, not a folder; choose another --out")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise QnasError(f"cannot export to {out}: {probe} is not writable; choose a writable "
                        f"--out")


def _commit(out: Path, contents: dict[str, bytes]) -> dict[str, Path]:
    """Write ``contents`` (file name → bytes) into ``out`` via a temporary folder: a new
    ``out`` appears complete in one rename; in an existing one each file is replaced
    atomically."""
    staging = None
    try:
        fresh = not out.exists()
        if fresh:
            out.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        else:
            staging = Path(tempfile.mkdtemp(prefix=".qnas-export.tmp-", dir=out))
        for name, data in contents.items():
            target = staging / name
            with open(target, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(target, 0o644)
        if fresh:
            os.chmod(staging, 0o755)
            try:
                os.rename(staging, out)
                staging = None
            except OSError:
                if not out.is_dir():        # not a concurrent mkdir: a real failure
                    raise
        if staging is not None:
            for name in contents:
                os.replace(staging / name, out / name)
            staging.rmdir()
            staging = None
    except OSError as err:
        raise QnasError(f"cannot write the export to {out} ({type(err).__name__}: "
                        f"{err.strerror or err}); choose a writable --out") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return {name: out / name for name in contents}


# --- the .pt ----------------------------------------------------------------------------------

def _child_record(best: BestArch, child: nn.Module, num_classes: int, resolution: int,
                  batchnorm: str | None) -> dict:
    return {
        "format": CHILD_FORMAT, "format_version": CHILD_FORMAT_VERSION,
        "qnas_version": __version__,
        "state_dict": {k: v.detach().clone() for k, v in child.state_dict().items()},
        "ops": list(best.ops),
        "layers": [{"index": slot.index, "name": slot.name, "op": op}
                   for slot, op in zip(best.space.layers, best.ops)],
        "space": {"name": best.space.name, "hash": best.space.hash,
                  "definition": best.space.raw},
        "num_classes": int(num_classes),
        "input_shape": [int(v) for v in best.input_shape],
        "resolution": int(resolution),
        "batchnorm": batchnorm,
        "best": {"path": str(best.path), "device": best.device,
                 "target_latency_ms": best.target_latency_ms,
                 "predicted_latency_ms": best.predicted_latency_ms,
                 "val_top1": best.val_top1, "seed": best.seed},
    }


def read_child(path: str | os.PathLike) -> dict:
    """The record of a ``child.pt`` written by :func:`export_child` (validated)."""
    path = Path(path)
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise QnasError(f"{path} does not exist; export a child with 'qnas export "
                        f"runs/<name>/best.json'") from None
    except Exception as err:  # noqa: BLE001 -- truncated, foreign or not a torch file
        raise QnasError(f"{path} is not a readable qnas child ({type(err).__name__}); "
                        f"export it again with 'qnas export'") from None
    if not isinstance(record, dict) or record.get("format") != CHILD_FORMAT:
        raise QnasError(f"{path} is not a qnas child (no \"format\": \"{CHILD_FORMAT}\"); "
                        f"export one with 'qnas export'")
    version = record.get("format_version")
    if not isinstance(version, int) or version > CHILD_FORMAT_VERSION:
        raise QnasError(f"{path} has child format version {version!r}, newer than this qnas "
                        f"({__version__}) reads ({CHILD_FORMAT_VERSION}); upgrade qnas")
    for key, kind in (("state_dict", dict), ("ops", list), ("space", dict),
                      ("num_classes", int)):
        if not isinstance(record.get(key), kind):
            raise QnasError(f"{path} is corrupt: field {key!r} is missing or has the wrong type")
    return record


def load_child(path: str | os.PathLike, **build_kwargs) -> nn.Module:
    """Rebuild the child network of a ``child.pt`` (eval mode, CPU), weights loaded.

    The space's definition travels inside the file, so no YAML is needed. ``build_kwargs``
    (e.g. ``drop_path_rate=0.1`` for retraining) go to :meth:`SearchSpace.build_child`.
    """
    record = read_child(path)
    space_info = record["space"]
    try:
        space = space_from_dict(space_info["definition"], source=f"{path} (embedded space)")
    except (KeyError, TypeError) as err:
        raise QnasError(f"{path} is corrupt: its space definition is unusable "
                        f"({type(err).__name__})") from None
    if space.hash != space_info.get("hash"):
        raise QnasError(f"{path} is corrupt: its embedded space hashes to {space.hash}, not "
                        f"the recorded {space_info.get('hash')}")
    child = space.build_child(record["ops"], num_classes=record["num_classes"], **build_kwargs)
    try:
        child.load_state_dict(record["state_dict"], strict=True)
    except RuntimeError as err:
        raise QnasError(f"{path} is corrupt: its weights do not fit its architecture "
                        f"({str(err).splitlines()[0]})") from None
    return child.eval()


# --- the model card ---------------------------------------------------------------------------

def _cell(value) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")


def _shape(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape))


def _fmt_ms(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and math.isfinite(value) else "—"


def model_card(best: BestArch, result: ExportResult, opset: int | None) -> str:
    """``MODEL_CARD.md``: architecture, size, accuracy, predicted latency, verification."""
    raw, space = best.raw, best.space
    evaluation = raw.get("evaluation") if isinstance(raw.get("evaluation"), dict) else {}
    lines = [
        f"# {space.name} child for {best.device} (budget {best.target_latency_ms:g} ms)",
        "",
        f"Exported by qnas {__version__} on {time.strftime('%Y-%m-%d %H:%M:%S %z')} from "
        f"`{best.path}` (written by qnas {raw.get('qnas_version', '?')}"
        + (f" on {raw['created']}" if raw.get("created") else "") + ").",
        f"Search space `{space.name}` (hash `{space.hash}`, macro `{space.macro}`), seed "
        f"{best.seed}. Weights: inherited from the supernet checkpoint "
        f"`{raw['supernet_checkpoint']}` — not retrained.",
        "",
        "## Architecture",
        "",
        "| layer | op | module | params | MACs |",
        "|---|---|---|---:|---:|",
    ]
    for row in result.layers.itertuples():
        lines.append(f"| {row.layer} | {row.op} | {row.module} | {row.params:,} | "
                     f"{row.macs:,} |")
    searched = int(result.layers["params"].sum())
    lines += [
        "",
        f"- Parameters: **{result.params:,}** ({searched:,} in the searched layers, the rest "
        f"in stem, downsampling and head).",
        f"- MACs: **{result.macs:,}** at {_shape(result.macs_shape)} ({MACS_RULE}).",
        f"- Classes: {result.num_classes} (the search data's); input channels "
        f"{space.input_shape[1]}; searched at {result.resolution}×{result.resolution}, "
        f"deployment shape {_shape(best.input_shape)}.",
    ]
    if result.batchnorm:
        lines.append(f"- BatchNorm statistics: {result.batchnorm}.")
    lines += [
        "",
        "## Accuracy",
        "",
        f"Validation top-1 with weights inherited from the supernet: **{best.val_top1:.2f} %** "
        f"({evaluation.get('dataset', '?')}, {evaluation.get('resolution', '?')}×"
        f"{evaluation.get('resolution', '?')}, {evaluation.get('split', 'validation')} split; "
        f"from best.json, before any retraining).",
        "",
        "## Latency (predictions from best.json)",
        "",
        f"Predicted at search time for this architecture at {_shape(best.input_shape)} with the "
        f"space's {space.num_classes}-class head. These are PREDICTIONS, not measurements on "
        f"the devices; a row whose source is `measured` was timed on the machine that ran the "
        f"search. `qnas latency {best.path} --measure` times this child here.",
        "",
        "| device | latency (ms) | source | version | known error |",
        "|---|---:|---|---|---|",
    ]
    predictor = raw.get("predictor") if isinstance(raw.get("predictor"), dict) else {}
    lines.append(f"| {_cell(best.device)} (target) | {_fmt_ms(best.predicted_latency_ms)} | "
                 f"{_cell(predictor.get('source', '?'))} | {_cell(predictor.get('version', ''))} "
                 f"| {_cell(predictor.get('known_error', ''))} |")
    for device, info in raw.get("other_devices", {}).items():
        if not isinstance(info, dict):
            continue
        if "latency_ms" not in info:
            lines.append(f"| {_cell(device)} | — | unavailable | | "
                         f"{_cell(info.get('error', 'no prediction'))} |")
            continue
        lines.append(f"| {_cell(device)} | {_fmt_ms(info.get('latency_ms'))} | "
                     f"{_cell(info.get('source', '?'))} | {_cell(info.get('version', ''))} | "
                     f"{_cell(info.get('known_error', ''))} |")
    budget = f"Budget {best.target_latency_ms:g} ms on {best.device}"
    if isinstance(raw.get("lut_latency_ms"), (int, float)):
        budget += (f"; latency-table sum F + Σ LUT = {raw['lut_latency_ms']:.4g} ms "
                   f"({'within' if raw.get('within_budget', True) else 'over'} budget)")
    lines += ["", budget + ".", "", "## Verification", "",
              "Checked before any file was written (random inputs, seed 0):", "",
              "| check | input | max \\|diff\\| | tolerance |", "|---|---|---:|---|"]
    for row in result.verification.itertuples():
        tolerance = f"atol {row.atol:g}" + (f", rtol {row.rtol:g}" if row.rtol else "")
        lines.append(f"| {row.check} | {row.input} | {row.max_abs_diff:.3g} | {tolerance} |")
    if result.verification.empty:
        lines.append("| (verification skipped) | | | |")
    lines += ["", "## Files", "", "| file | what | load with |", "|---|---|---|"]
    if "pt" in result.files:
        lines.append(f"| `{FILE_NAMES['pt']}` | state dict + architecture (ops, space "
                     f"definition, classes) | `qnas.deploy.load_child(\"{FILE_NAMES['pt']}\")` |")
    if "onnx" in result.files:
        lines.append(f"| `{FILE_NAMES['onnx']}` | ONNX opset {opset}, input `{ONNX_INPUT}` "
                     f"[batch, {space.input_shape[1]}, height, width] float32, output "
                     f"`{ONNX_OUTPUT}` [batch, {result.num_classes}] | "
                     f"`onnxruntime.InferenceSession(\"{FILE_NAMES['onnx']}\")` |")
    if "torchscript" in result.files:
        lines.append(f"| `{FILE_NAMES['torchscript']}` | TorchScript (traced) | "
                     f"`torch.jit.load(\"{FILE_NAMES['torchscript']}\")` |")
    lines += ["", "Inputs are normalised as the search's data loader does "
              f"(`{evaluation.get('dataset', '?')}`, see `qnas.data`).", ""]
    return "\n".join(lines)


# --- the export -------------------------------------------------------------------------------

def export_child(best_path: str | os.PathLike | BestArch, out: str | os.PathLike | None = None,
                 formats: str | Iterable[str] = FORMATS, verify: bool = True,
                 opset: int = DEFAULT_OPSET,
                 space: SearchSpace | str | os.PathLike | None = None,
                 echo: Callable[[str], None] | None = None) -> ExportResult:
    """Export the child of a ``best.json``: verify, then write the files into ``out``.

    Args:
        best_path: the best.json of a finished search (its supernet checkpoint next to it).
        out: output folder (default ``<best.json folder>/export``); created if needed.
        formats: any of ``pt``, ``onnx``, ``torchscript`` (``MODEL_CARD.md`` always).
        verify: compare child vs supernet and every runtime vs PyTorch first (a failure raises
            :class:`QnasError` and writes nothing).
        opset: ONNX opset (17–20).
        space: the space's YAML, when best.json's recorded space is not found.
        echo: receives progress lines.

    Raises QnasError (one line) for a corrupt/newer/other-space best.json, a missing
    checkpoint, an unwritable ``out`` or a failed check — in every case nothing is written.
    """
    echo = echo or (lambda message: None)
    formats = parse_formats(formats)
    opset = _check_opset(opset)
    best = _as_best(best_path, space)
    out = Path(out) if out is not None else best.path.parent / "export"
    _check_out(out)

    supernet = _load_supernet(best)
    num_classes = supernet.num_classes
    resolution = _resolution(best)
    in_chans = best.space.input_shape[1]
    child = supernet.child(best.ops).eval()
    echo(f"child of {best.path}: {best.space.describe_ops(best.ops)} ({num_classes} classes)")
    x = _inputs(in_chans, resolution)
    checks: list[dict] = []
    with torch.no_grad():
        if verify:
            supernet.set_ops(best.ops)
            _check(checks, "child vs supernet (same ops)", x.shape, child(x), supernet(x),
                   CHILD_ATOL, 0.0)
        supernet.clear_paths()
    del supernet
    batchnorm = _recalibrate(child, best, echo)

    deploy_shape = (1, in_chans, *best.input_shape[2:])
    with torch.no_grad():
        references = {n: child(x[:n]) for n in VERIFY_BATCHES}
    contents: dict[str, bytes] = {}
    arch_json = json.dumps({"qnas_version": __version__, "space": best.space.name,
                            "space_hash": best.space.hash, "ops": best.ops,
                            "num_classes": num_classes, "resolution": resolution,
                            "input_shape": list(best.input_shape)})
    sample = x[:2]                     # batch 2: nothing specialises on a batch of one
    if "onnx" in formats:
        data = onnx_bytes(child, sample, opset, metadata={"qnas": arch_json})
        if verify:
            session = onnx_session(data)
            for n in VERIFY_BATCHES:
                got = session.run(None, {ONNX_INPUT: x[:n].numpy()})[0]
                _check(checks, f"onnxruntime vs PyTorch (batch {n})", x[:n].shape, got,
                       references[n], RUNTIME_ATOL, RUNTIME_RTOL)
            if tuple(deploy_shape) != tuple(x[:1].shape):
                generator = torch.Generator().manual_seed(1)
                big = torch.randn(*deploy_shape, generator=generator)
                with torch.no_grad():
                    want = child(big)
                got = session.run(None, {ONNX_INPUT: big.numpy()})[0]
                _check(checks, "onnxruntime vs PyTorch (deployment shape)", big.shape, got,
                       want, RUNTIME_ATOL, RUNTIME_RTOL)
            del session
        contents[FILE_NAMES["onnx"]] = data
        echo(f"ONNX opset {opset}: {len(data) / 1e6:.2f} MB")
    if "torchscript" in formats:
        data = torchscript_bytes(child, sample, extra_files={"qnas.json": arch_json})
        if verify:
            loaded = _load_torchscript(data)
            with torch.no_grad():
                for n in VERIFY_BATCHES:
                    _check(checks, f"TorchScript vs PyTorch (batch {n})", x[:n].shape,
                           loaded(x[:n]), references[n], RUNTIME_ATOL, RUNTIME_RTOL)
            del loaded
        contents[FILE_NAMES["torchscript"]] = data
        echo(f"TorchScript: {len(data) / 1e6:.2f} MB")
    if "pt" in formats:
        buffer = io.BytesIO()
        torch.save(_child_record(best, child, num_classes, resolution, batchnorm), buffer)
        contents[FILE_NAMES["pt"]] = buffer.getvalue()

    layers, macs = _layer_table(best, child, best.input_shape)
    result = ExportResult(
        out=out, files={kind: out / FILE_NAMES[kind] for kind in formats},
        ops=list(best.ops), num_classes=num_classes, resolution=resolution,
        params=sum(p.numel() for p in child.parameters()), macs=macs,
        macs_shape=tuple(best.input_shape),
        verification=pd.DataFrame(checks, columns=["check", "input", "max_abs_diff", "atol",
                                                   "rtol", "passed"]),
        layers=layers, batchnorm=batchnorm)
    result.card = model_card(best, result, opset if "onnx" in formats else None)
    contents[CARD_NAME] = result.card.encode("utf-8")
    _commit(out, contents)
    result.files["card"] = out / CARD_NAME
    echo(f"wrote {', '.join(contents)} to {out}")
    return result
