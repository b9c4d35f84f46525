"""``qnas latency best.json --measure``: the exported child timed on this host.

The child is timed with PyTorch (eval mode, ``no_grad``) and with onnxruntime, both on the CPU
with the same fixed thread count, after a warm-up, as the median of repeated rounds (each round
averages enough calls to last ≥ 2 ms; see :func:`qnas.predictors.measured.time_callable`).
Beside them: what the ``host-cpu`` predictor says for the same module at the same shape, and —
at the best.json's own input shape — the ``host-cpu`` number best.json recorded at search time
(for the space's deployment head). Each row says where its number comes from.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from ..errors import QnasError
from ..nas.best import BestArch
from ..predictors.kernels import parse_input_shape
from ..predictors.lut import build_lut
from ..predictors.measured import time_callable, time_module
from ..predictors.nnmeter_files import nnmeter_available
from ..predictors.registry import get
from ..runtime.threads import MEASURING, resolve_threads
from ..space import SearchSpace
from .child import FILE_NAMES, as_best, inherited_child, load_child, read_child
from .convert import DEFAULT_OPSET, ONNX_INPUT, onnx_bytes, onnx_session

DEFAULT_REPEATS = 20
DEFAULT_WARMUP = 5
SOURCE_TORCH = "measured (PyTorch)"
SOURCE_ORT = "measured (onnxruntime)"
COLUMNS = ["what", "latency_ms", "source", "version", "repeats", "calls_per_round", "threads",
           "rel_to_pytorch"]


@dataclass
class Measurement:
    """The timings of one child at one input shape.

    table: one row per number — ``what`` (PyTorch, onnxruntime, host-cpu table sum, …),
        ``latency_ms`` (median), ``source``, ``version``, ``repeats``, ``calls_per_round``,
        ``threads`` and ``rel_to_pytorch`` ((x − PyTorch) / PyTorch: the relative error of a
        prediction, the speed difference of onnxruntime).
    child: where the timed child came from.
    """

    table: pd.DataFrame
    input_shape: tuple[int, ...]
    threads: int
    child: str
    notes: list[str] = field(default_factory=list)

    @property
    def pytorch_ms(self) -> float:
        return float(self.table.loc[self.table["source"] == SOURCE_TORCH, "latency_ms"].iloc[0])

    @property
    def onnxruntime_ms(self) -> float:
        return float(self.table.loc[self.table["source"] == SOURCE_ORT, "latency_ms"].iloc[0])

    def prediction_error(self, what: str = "host-cpu table sum") -> float:
        """Relative error of a prediction row (default: the layer-wise host-cpu table sum, what
        a host-cpu search adds up) vs measured PyTorch."""
        rows = self.table[self.table["what"] == what]
        return float(rows["rel_to_pytorch"].iloc[0]) if len(rows) else float("nan")


def _positive(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise QnasError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return value


def measure_child(child: nn.Module, input_shape: Sequence[int], onnx_model=None, *,
                  repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP,
                  threads: int | None = None, opset: int = DEFAULT_OPSET,
                  predict: bool = True) -> pd.DataFrame:
    """Time ``child`` at ``input_shape`` with PyTorch and onnxruntime (``onnx_model``: bytes or
    a path; exported in memory when None) and, with ``predict``, ask the ``host-cpu``
    predictor about the same module. Returns the table described in :class:`Measurement`."""
    shape = parse_input_shape(input_shape)
    repeats, warmup = _positive("repeats", repeats), _positive("warmup", warmup, 0)
    threads = resolve_threads(threads, MEASURING)
    child = child.eval()
    cpu = torch.device("cpu")
    torch_timing = time_module(child, shape, cpu, threads=threads, warmup=warmup,
                               repeats=repeats)
    if onnx_model is None:
        sample = torch.randn(max(2, shape[0]), *shape[1:])
        onnx_model = onnx_bytes(child, sample, opset)
    try:
        session = onnx_session(onnx_model, threads=threads)
        feed = {ONNX_INPUT: torch.randn(*shape).numpy()}
        ort_timing = time_callable(lambda: session.run(None, feed), cpu, threads=threads,
                                   warmup=warmup, repeats=repeats)
    except QnasError:
        raise
    except Exception as err:  # noqa: BLE001 -- onnxruntime's own errors: one line
        raise QnasError(f"onnxruntime cannot run the child at {'x'.join(map(str, shape))}: "
                        f"{' '.join(str(err).split())[:200]}") from None
    import onnxruntime

    base = torch_timing.median_ms
    rows = [
        {"what": "PyTorch", "latency_ms": base, "source": SOURCE_TORCH,
         "version": f"torch {torch.__version__}, eval, no_grad",
         "repeats": len(torch_timing.samples_ms), "calls_per_round": torch_timing.number,
         "threads": threads, "rel_to_pytorch": float("nan")},
        {"what": "onnxruntime", "latency_ms": ort_timing.median_ms, "source": SOURCE_ORT,
         "version": f"onnxruntime {onnxruntime.__version__}, CPUExecutionProvider",
         "repeats": len(ort_timing.samples_ms), "calls_per_round": ort_timing.number,
         "threads": threads, "rel_to_pytorch": ort_timing.median_ms / base - 1},
    ]
    if predict:
        rows.extend(_host_predictions(child, shape, base))
    return pd.DataFrame(rows, columns=COLUMNS)


def _host_predictions(child: nn.Module, shape: tuple, base_ms: float) -> list[dict]:
    """Whole-child predictions of a host-cpu kernel predictor (nn-Meter format, built by
    'qnas predictor build'), when one is registered here."""
    if not nnmeter_available("host-cpu"):
        return []
    prediction = get("host-cpu", backend="nn-meter").predict(child, shape)
    return [{"what": "host-cpu kernel predictor", "latency_ms": prediction.latency_ms,
             "source": prediction.source, "version": prediction.version, "repeats": None,
             "calls_per_round": None, "threads": None,
             "rel_to_pytorch": prediction.latency_ms / base_ms - 1}]


def _table_sum_row(best: BestArch, shape: tuple, base_ms: float) -> dict:
    """The layer-wise prediction a host-cpu search adds up: F + Σ_l LUT[l, op_l], every block
    timed alone at its layer's shape (F: stem, downsamples and the space's deployment head)."""
    table = build_lut(best.space, "host-cpu", input_shape=shape)
    predicted = table.latency_of(best.ops)
    return {"what": "host-cpu table sum", "latency_ms": predicted,
            "source": f"{table.source} per block (LUT)",
            "version": f"{table.version}; F + Σ blocks timed alone",
            "repeats": None, "calls_per_round": None, "threads": None,
            "rel_to_pytorch": predicted / base_ms - 1}


def _exported(best: BestArch, export_dir: Path) -> tuple[nn.Module, Path | None] | None:
    """The child in ``export_dir`` when it was exported from this best.json's architecture."""
    path = export_dir / FILE_NAMES["pt"]
    if not path.is_file():
        return None
    try:
        record = read_child(path)
    except QnasError:
        return None
    if record["ops"] != list(best.ops) or record["space"].get("hash") != best.space.hash:
        return None
    onnx_path = export_dir / FILE_NAMES["onnx"]
    return load_child(path), (onnx_path if onnx_path.is_file() else None)


def measure_best(best_path: str | os.PathLike | BestArch,
                 input_shape: str | Sequence[int] | None = None, *,
                 repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP,
                 threads: int | None = None, export_dir: str | os.PathLike | None = None,
                 space: SearchSpace | str | os.PathLike | None = None,
                 echo: Callable[[str], None] | None = None) -> Measurement:
    """Time the exported child of a best.json on this host (PyTorch, onnxruntime) beside the
    ``host-cpu`` prediction.

    The child is ``export_dir/child.pt`` (+ ``child.onnx``) when that folder (default
    ``<best.json folder>/export``) holds an export of this architecture; otherwise it is built
    from its inherited weights (``child.pt`` next to best.json, else the supernet checkpoint)
    exactly as ``qnas export`` builds it, and exported to ONNX in
    memory. ``input_shape`` defaults to the best.json's deployment shape.
    """
    echo = echo or (lambda message: None)
    best = as_best(best_path, space)
    shape = parse_input_shape(input_shape) if input_shape is not None else best.input_shape
    if shape[1] != best.space.input_shape[1]:
        raise QnasError(f"input shape {'x'.join(map(str, shape))} has {shape[1]} channels; the "
                        f"child takes {best.space.input_shape[1]} (e.g. "
                        f"{'x'.join(map(str, best.input_shape))})")
    export_dir = Path(export_dir) if export_dir is not None else best.path.parent / "export"
    found = _exported(best, export_dir)
    if found is not None:
        child, onnx_model = found
        origin = f"exported child {export_dir / FILE_NAMES['pt']}" + (
            f" and {onnx_model}" if onnx_model is not None else " (ONNX exported in memory)")
    else:
        child, onnx_model = inherited_child(best), None
        source = (best.child_file if best.child_file is not None and best.child_file.is_file()
                  else f"the supernet checkpoint {best.supernet_checkpoint}")
        origin = (f"child built from {source} as 'qnas export' builds it (no export in "
                  f"{export_dir}); ONNX exported in memory")
    echo(f"timing {origin} at {'x'.join(map(str, shape))}")
    table = measure_child(child, shape, onnx_model, repeats=repeats, warmup=warmup,
                          threads=threads)
    base = float(table["latency_ms"].iloc[0])
    table = pd.concat([table, pd.DataFrame([_table_sum_row(best, tuple(shape), base)],
                                           columns=COLUMNS)], ignore_index=True)
    notes = []
    if tuple(shape) == tuple(best.input_shape):
        recorded = None
        if best.device == "host-cpu":
            recorded = {"latency_ms": best.predicted_latency_ms, **best.raw.get("predictor", {})}
        elif isinstance(best.raw.get("other_devices", {}).get("host-cpu"), dict):
            recorded = best.raw["other_devices"]["host-cpu"]
        if recorded is not None and isinstance(recorded.get("latency_ms"), (int, float)):
            base = table["latency_ms"].iloc[0]
            row = {"what": "host-cpu in best.json", "latency_ms": float(recorded["latency_ms"]),
                   "source": recorded.get("source", "?"),
                   "version": f"{recorded.get('version', '')} (search time, "
                              f"{best.space.num_classes}-class head)",
                   "repeats": None, "calls_per_round": None, "threads": None,
                   "rel_to_pytorch": float(recorded["latency_ms"]) / base - 1}
            table = pd.concat([table, pd.DataFrame([row], columns=COLUMNS)], ignore_index=True)
    notes.append("host-cpu table sum: the blocks timed one by one and added up, as a "
                 "host-cpu search predicts a child; its error is what that additive model "
                 "misses (framework overhead between blocks, cache effects)")
    return Measurement(table=table, input_shape=tuple(shape), threads=int(table["threads"].iloc[0]),
                       child=origin, notes=notes)
