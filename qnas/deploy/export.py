"""``qnas export``: best.json → a plain child network, verified, as ``.pt``, ONNX and TorchScript.

The flow (ProxylessNAS's "convert to a normal net"):

1. read ``best.json`` (:func:`qnas.nas.best.load_best` refuses a corrupt file, a newer schema
   and another space) and the child's inherited weights next to it: ``child.pt``, written by
   the search (checked against best.json's checksum) — or, for a best.json of qnas < 0.2 or
   when child.pt was not copied along, the supernet checkpoint;
2. build the child — identity layers removed — with those weights (from a supernet:
   :meth:`Supernet.child`), for the data's number of classes;
3. verify BEFORE writing anything: from a supernet, the child's output equals the supernet's
   under that architecture (training resolution, batch 3); onnxruntime's output equals
   PyTorch's (batch 1 and 3, and the deployment shape); the TorchScript module reloads and
   matches;
4. write ``child.pt`` (state dict + architecture, see :func:`load_child`), ``child.onnx``
   (opset ≥ 17, dynamic batch/height/width), ``child.torchscript.pt`` and ``MODEL_CARD.md`` —
   all into a temporary folder first, then moved into place; a refusal or a failed check
   writes nothing at all.

Children with BatchNorm (the ``mbconv`` space) need running statistics of their own (a
supernet's mix every path): a search's child.pt holds them, re-estimated on the search's
training data before it measured ``val_top1``; from a supernet checkpoint they are re-estimated
the same way after step 3's first check.
"""
from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd
import torch
from torch import nn

from .. import __version__
from ..errors import QnasError
from ..nas.best import BestArch
from ..nas.evaluator import (
    epoch_loader,
    has_batchnorm,
    recalibrate_batchnorm,
    search_data,
)
from ..nas.search import WEIGHT_DATA
from ..nas.supernet import read_supernet_checkpoint
from ..predictors.kernels import MACS_RULE, decompose, macs_of
from ..runtime.files import check_writable_folder, staged_folder, write_bytes_atomic
from ..space import SearchSpace
from .child import (
    CARD_NAME,
    FILE_NAMES,
    FORMATS,
    as_best,
    best_resolution,
    best_supernet,
    child_record,
)
from .convert import (
    CHILD_ATOL,
    DEFAULT_OPSET,
    ONNX_INPUT,
    ONNX_OUTPUT,
    RUNTIME_ATOL,
    RUNTIME_RTOL,
    VERIFY_BATCHES,
    check_close,
    check_opset,
    load_torchscript,
    onnx_bytes,
    onnx_session,
    torchscript_bytes,
    verify_inputs,
)


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
    weights: str = ""                      # where the inherited weights were read from
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


# --- counting ---------------------------------------------------------------------------------

def _layer_table(best: BestArch, child: nn.Module, shape: Sequence[int]) -> tuple[pd.DataFrame,
                                                                                   int]:
    """One row per searchable layer (its op, module path, parameters and MACs at ``shape``)
    and the child's total MACs (:data:`~qnas.predictors.kernels.MACS_RULE`)."""
    kernels = decompose(child, shape)
    paths = best.space.child_layer_paths(best.ops)
    rows = []
    for slot, op, path in zip(best.space.layers, best.ops, paths):
        if path is None:
            rows.append({"layer": slot.name, "op": op, "module": "(removed)", "params": 0,
                         "macs": 0})
            continue
        params = sum(p.numel() for p in child.get_submodule(path).parameters())
        rows.append({"layer": slot.name, "op": op, "module": path, "params": int(params),
                     "macs": macs_of(kernels, under=path)})
    return pd.DataFrame(rows, columns=["layer", "op", "module", "params", "macs"]), \
        macs_of(kernels)


# --- BatchNorm --------------------------------------------------------------------------------

def _recalibrate(child: nn.Module, best: BestArch, echo: Callable[[str], None]) -> str | None:
    """Re-estimate BatchNorm statistics as the search did before measuring val_top1."""
    if not has_batchnorm(child):
        return None
    config = read_supernet_checkpoint(best.supernet_checkpoint).get("config", {})
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
    try:
        check_writable_folder(out)
    except QnasError as err:
        raise QnasError(f"cannot export: {err}") from None


def _commit(out: Path, contents: dict[str, bytes]) -> dict[str, Path]:
    """Write ``contents`` (file name → bytes) into ``out``: a new ``out`` appears complete in
    one rename (:func:`staged_folder`); in an existing one each file is replaced atomically."""
    try:
        if out.exists():
            for name, data in contents.items():
                write_bytes_atomic(out / name, data)
        else:
            with staged_folder(out) as staging:
                for name, data in contents.items():
                    write_bytes_atomic(staging / name, data)
    except OSError as err:
        raise QnasError(f"cannot write the export to {out} ({type(err).__name__}: "
                        f"{err.strerror or err}); choose a writable --out") from None
    return {name: out / name for name in contents}


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
        f"{best.seed}. Weights: inherited from the supernet (read from "
        f"`{Path(result.weights).name if result.weights else raw['supernet_checkpoint']}`) — "
        f"not retrained.",
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
    opset = check_opset(opset)
    best = as_best(best_path, space)
    out = Path(out) if out is not None else best.path.parent / "export"
    _check_out(out)

    resolution = best_resolution(best)
    in_chans = best.space.input_shape[1]
    x = verify_inputs(in_chans, resolution)
    checks: list[dict] = []
    child_file = best.child_file
    if child_file is not None and child_file.is_file():
        state, num_classes, source = best.inherited_state(echo)
        child = best.build_child(num_classes=num_classes)
        child.load_state_dict(state, strict=True)
        child.eval()
        batchnorm = (best.record.child_weights or {}).get("batchnorm")
        echo(f"child of {best.path}: {best.space.describe_ops(best.ops)} ({num_classes} "
             f"classes), weights from {source} (checksum verified)")
    else:
        if child_file is not None:
            echo(f"note: {child_file} is missing; taking the child's weights from the "
                 f"supernet checkpoint {best.supernet_checkpoint}")
        supernet = best_supernet(best)
        num_classes = supernet.num_classes
        source = str(best.supernet_checkpoint)
        child = supernet.child(best.ops).eval()
        echo(f"child of {best.path}: {best.space.describe_ops(best.ops)} ({num_classes} "
             f"classes), weights from the supernet checkpoint {source}")
        with torch.no_grad():
            if verify:
                supernet.set_ops(best.ops)
                check_close(checks, "child vs supernet (same ops)", x.shape, child(x),
                            supernet(x), CHILD_ATOL, 0.0)
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
                check_close(checks, f"onnxruntime vs PyTorch (batch {n})", x[:n].shape, got,
                            references[n], RUNTIME_ATOL, RUNTIME_RTOL)
            if tuple(deploy_shape) != tuple(x[:1].shape):
                generator = torch.Generator().manual_seed(1)
                big = torch.randn(*deploy_shape, generator=generator)
                with torch.no_grad():
                    want = child(big)
                got = session.run(None, {ONNX_INPUT: big.numpy()})[0]
                check_close(checks, "onnxruntime vs PyTorch (deployment shape)", big.shape,
                            got, want, RUNTIME_ATOL, RUNTIME_RTOL)
            del session
        contents[FILE_NAMES["onnx"]] = data
        echo(f"ONNX opset {opset}: {len(data) / 1e6:.2f} MB")
    if "torchscript" in formats:
        data = torchscript_bytes(child, sample, extra_files={"qnas.json": arch_json})
        if verify:
            loaded = load_torchscript(data)
            with torch.no_grad():
                for n in VERIFY_BATCHES:
                    check_close(checks, f"TorchScript vs PyTorch (batch {n})", x[:n].shape,
                                loaded(x[:n]), references[n], RUNTIME_ATOL, RUNTIME_RTOL)
            del loaded
        contents[FILE_NAMES["torchscript"]] = data
        echo(f"TorchScript: {len(data) / 1e6:.2f} MB")
    if "pt" in formats:
        buffer = io.BytesIO()
        torch.save(child_record(best, child, num_classes, resolution, batchnorm), buffer)
        contents[FILE_NAMES["pt"]] = buffer.getvalue()

    layers, macs = _layer_table(best, child, best.input_shape)
    result = ExportResult(
        out=out, files={kind: out / FILE_NAMES[kind] for kind in formats},
        ops=list(best.ops), num_classes=num_classes, resolution=resolution,
        params=sum(p.numel() for p in child.parameters()), macs=macs,
        macs_shape=tuple(best.input_shape),
        verification=pd.DataFrame(checks, columns=["check", "input", "max_abs_diff", "atol",
                                                   "rtol", "passed"]),
        layers=layers, batchnorm=batchnorm, weights=source)
    result.card = model_card(best, result, opset if "onnx" in formats else None)
    contents[CARD_NAME] = result.card.encode("utf-8")
    _commit(out, contents)
    result.files["card"] = out / CARD_NAME
    echo(f"wrote {', '.join(contents)} to {out}")
    return result
