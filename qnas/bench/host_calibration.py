"""Benchmark: the calibrate-your-own-device workflow, proven on this host.

1. export the calibration set (:mod:`qnas.predictors.calibration_set`) as ONNX, as a user would;
2. time each file with onnxruntime (CPU, ``threads`` intra-op threads, sequential execution):
   warm-up calls, then the median of ``repeats`` timed calls;
3. fit and register a user device (default ``host-ort``) from those numbers alone, in a
   temporary ``$QNAS_HOME`` (or a given one: never the package, never the user's own unless
   asked);
4. predict QuadraNet children of the ``quadranet`` space that are NOT in the set — drawn at
   random, like the ones a search meets — through that device's registry entry (``get(NAME)``,
   from each child's PyTorch module, as a search does), time their ONNX exports the same way and
   compare: ``rel_error = predicted / measured - 1``. Goal: median |rel. error| ≤ 15 %.

The clock: ``cpu`` (default) is the CPU time of the one thread that runs the model — with one
intra-op thread onnxruntime computes on the calling thread, so on an idle machine it equals the
wall-clock latency, and on a shared machine it leaves out the time the scheduler gave to other
processes. ``wall`` uses the wall clock; both medians are reported.
"""
from __future__ import annotations

import platform
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import QnasError
from ..models.ops import is_identity
from ..predictors.calibration_set import (
    CSV_FILE,
    export_onnx,
    load_calibration_set,
    write_calibration_set,
)
from ..predictors.devices import using_home
from ..predictors.measured import cpu_model
from ..runtime.files import write_csv_atomic, write_text_atomic

GOAL = 0.15
CLOCKS = ("cpu", "wall")
DEFAULT_DEVICE = "host-ort"
# per-stage block counts of the unseen children (the space allows up to 4, 4, 48, 4): deep
# enough to resemble searched children, shallow enough to time in seconds
CHILD_DEPTHS = (3, 3, 12, 3)


@dataclass
class HostCalibration:
    """``table``: one row per model — role (``calibration``/``unseen``), model, ops (children),
    measured_ms (the clock's median), wall_ms, cpu_ms, spread (IQR / median of the wall clock),
    predicted_ms (the fitted device; LOMO prediction for calibration models), rel_error."""

    device: str
    table: pd.DataFrame
    lomo: pd.DataFrame
    profile: dict
    median_abs_rel_error: float          # on the unseen children
    lomo_median_abs_rel_error: float
    settings: dict
    home: Path
    notes: list[str] = field(default_factory=list)

    @property
    def unseen(self) -> pd.DataFrame:
        return self.table[self.table["role"] == "unseen"]

    @property
    def met_goal(self) -> bool:
        return self.median_abs_rel_error <= GOAL


def _ort_session(data_or_path, threads: int):
    from ..deploy.convert import onnx_session

    return onnx_session(data_or_path if isinstance(data_or_path, bytes) else str(data_or_path),
                        threads=threads)


def time_onnx(data_or_path, input_shape, *, threads: int = 1, warmup: int = 3,
              repeats: int = 15) -> dict:
    """Median latency of an ONNX model with onnxruntime: ``{wall_ms, cpu_ms, spread}``."""
    import numpy as np
    import torch

    from ..predictors.measured import time_callable

    session = _ort_session(data_or_path, threads)
    feed = {session.get_inputs()[0].name:
            np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)}
    timing = time_callable(lambda: session.run(None, feed), torch.device("cpu"),
                           threads=threads, warmup=warmup, repeats=repeats, min_round_s=0.0)
    return {"wall_ms": timing.median_ms, "cpu_ms": timing.cpu_median_ms,
            "spread": timing.spread}


def unseen_children(count: int, seed: int, exclude: list[list[str]], space_name: str = "quadranet",
                    depths: tuple[int, ...] = CHILD_DEPTHS) -> list[list[str]]:
    """``count`` random children of the space (1..depths[s] blocks in stage s, each a random
    non-identity candidate), none equal to one in ``exclude``."""
    from ..space import load_space

    space = load_space(space_name)
    rng = random.Random(seed)
    blocks = [op for op in space.candidates if not is_identity(op)]
    seen = {tuple(ops) for ops in exclude}
    children = []
    while len(children) < count:
        ops = []
        for depth, cap in zip(space.depths, depths):
            n = rng.randint(1, min(depth, cap))
            ops += [rng.choice(blocks) for _ in range(n)] + ["identity"] * (depth - n)
        if tuple(ops) not in seen:
            seen.add(tuple(ops))
            children.append(ops)
    return children


def _short_ops(space, ops: list[str]) -> str:
    """``k3e2 k5e4 / k7e2 / … `` : the blocks of each stage (identity left out)."""
    return " / ".join(" ".join(stage) or "-" for stage in
                      [[op for op in stage if not is_identity(op)]
                       for stage in space.stage_ops(ops)])


def calibrate_host(out: str | Path | None = None, *, device: str = DEFAULT_DEVICE,
                   home: str | Path | None = None, set_path: str | Path | None = None,
                   children: int = 6, seed: int = 0, threads: int = 1, warmup: int = 3,
                   repeats: int = 15, clock: str = "cpu", like: str = "cortexA76",
                   progress: Callable[[str], None] | None = None) -> HostCalibration:
    """Run the benchmark (see the module doc); with ``out``, write ``host_calibration.csv``,
    ``lomo.csv``, the fitted profile and ``report.md`` there."""
    import onnxruntime
    import torch

    from ..predictors.registry import get
    from ..predictors.user_devices import calibrate_user_device
    from ..space import load_space

    if clock not in CLOCKS:
        raise QnasError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    if children < 5:
        raise QnasError(f"children must be at least 5 (the benchmark's claim rests on them), "
                        f"got {children}")
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    cset = load_calibration_set(set_path)
    shape = tuple(cset.input_shape)
    column = f"{clock}_ms"
    with tempfile.TemporaryDirectory(prefix="qnas-host-calibration-") as scratch, \
            using_home(home if home is not None else Path(scratch) / "qnas_home") as qnas_home:
        folder = Path(scratch) / "calibration_set"
        say(f"exporting calibration set {cset.label} ({len(cset.models)} models) to ONNX")
        written = write_calibration_set(folder, set_path, tflite=False, progress=say)
        rows = []
        for entry in written.table.itertuples():
            timing = time_onnx(folder / entry.file, shape, threads=threads, warmup=warmup,
                               repeats=repeats)
            rows.append({"role": "calibration", "model": entry.model, "ops": "", **timing})
            say(f"timed {entry.model}: {timing[column]:.3f} ms ({clock})")
        measured = pd.DataFrame(rows)
        template = pd.read_csv(folder / CSV_FILE, dtype=str, keep_default_na=False)
        template["latency_ms"] = [f"{v:.5g}" for v in measured[column]]
        write_text_atomic(folder / CSV_FILE, template.to_csv(index=False))

        say(f"fitting {device} like {like} into {qnas_home}")
        fitted = calibrate_user_device(
            device, folder / CSV_FILE, like=like,
            description=(f"this host's CPU ({cpu_model()}) with onnxruntime "
                         f"{onnxruntime.__version__}, {threads} intra-op thread(s), float32, "
                         f"{clock} clock"))
        lomo = fitted.result.lomo
        predictor = get(device)

        space = load_space("quadranet")
        in_set = [m.ops() for m in cset.models if m.space == "quadranet"]
        for index, ops in enumerate(unseen_children(children, seed, in_set)):
            child = space.build_child(ops).eval()
            predicted = float(predictor.predict(child, shape).latency_ms)
            timing = time_onnx(export_onnx(child, shape, cset.onnx_opset), shape,
                               threads=threads, warmup=warmup, repeats=repeats)
            rows.append({"role": "unseen", "model": f"child{index}",
                         "ops": _short_ops(space, ops), **timing, "predicted_ms": predicted})
            say(f"child{index}: measured {timing[column]:.3f} ms, predicted {predicted:.3f} ms")
        profile = dict(fitted.result.profile)

    table = pd.DataFrame(rows)
    table["measured_ms"] = table[column]
    lomo_pred = dict(zip(lomo["model"], lomo["predicted_ms"]))
    calibration = table["role"] == "calibration"
    table.loc[calibration, "predicted_ms"] = table.loc[calibration, "model"].map(lomo_pred)
    table["rel_error"] = table["predicted_ms"] / table["measured_ms"] - 1
    table = table[["role", "model", "ops", "measured_ms", "wall_ms", "cpu_ms", "spread",
                   "predicted_ms", "rel_error"]]
    unseen = table[table["role"] == "unseen"]
    settings = {
        "device": device, "like": like, "calibration_set": cset.label,
        "input_shape": "x".join(map(str, shape)), "clock": clock, "threads": threads,
        "warmup": warmup, "repeats": repeats, "children": children, "seed": seed,
        "child_depth_caps": list(CHILD_DEPTHS), "cpu": cpu_model(),
        "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__, "profile_version": profile.get("version", ""),
        "seconds": round(time.perf_counter() - started, 1),
    }
    result = HostCalibration(
        device=device, table=table, lomo=lomo, profile=profile,
        median_abs_rel_error=float(unseen["rel_error"].abs().median()),
        lomo_median_abs_rel_error=float(fitted.result.median_abs_rel_error),
        settings=settings, home=Path(home) if home is not None else Path("(temporary)"))
    if home is None:
        result.notes.append(f"{device} was registered in a temporary QNAS_HOME, removed "
                            f"afterwards (give --home to keep it)")
    if out is not None:
        write_report(result, out)
    return result


def format_table(result: HostCalibration) -> pd.DataFrame:
    shown = result.table.copy()
    for name in ("measured_ms", "wall_ms", "cpu_ms", "predicted_ms"):
        shown[name] = shown[name].map(lambda v: f"{v:.3f}")
    shown["spread"] = shown["spread"].map(lambda v: f"{v:.0%}")
    shown["rel_error"] = shown["rel_error"].map(lambda v: f"{v:+.1%}")
    return shown


def summary_lines(result: HostCalibration) -> list[str]:
    s = result.settings
    verdict = "meets" if result.met_goal else "MISSES"
    return [
        (f"{result.device}: onnxruntime {s['onnxruntime']} on {s['cpu']}, {s['threads']} "
         f"thread(s), {s['clock']} clock, median of {s['repeats']} after {s['warmup']} warm-up"),
        (f"fit: {len(result.lomo)} models of {s['calibration_set']} like {s['like']}, "
         f"leave-one-model-out median |rel. error| {result.lomo_median_abs_rel_error:.1%}"),
        (f"unseen QuadraNet children ({len(result.unseen)}): median |rel. error| "
         f"{result.median_abs_rel_error:.1%} — {verdict} the goal of ≤ {GOAL:.0%}"),
    ]


def write_report(result: HostCalibration, out: str | Path) -> dict[str, Path]:
    """``host_calibration.csv``, ``lomo.csv``, ``<device>.yaml`` and ``report.md`` in ``out``."""
    import yaml

    out = Path(out)
    paths = {
        "csv": write_csv_atomic(result.table.round(4), out / "host_calibration.csv"),
        "lomo": write_csv_atomic(result.lomo, out / "lomo.csv"),
        "profile": write_text_atomic(out / f"{result.device}.yaml", yaml.safe_dump(
            result.profile, sort_keys=False, allow_unicode=True, width=100)),
    }
    shown = format_table(result)
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    settings = "\n".join(f"| {k} | {v} |" for k, v in result.settings.items())
    text = "\n".join([
        f"# Calibrating a device from measurements: `{result.device}` on this host",
        "",
        ("Produced by `qnas bench calibrate-host` (qnas/bench/host_calibration.py): the "
         "calibration set (`predictors/calibration_set.yaml`) exported to ONNX and timed with "
         "onnxruntime, a user device fitted from those timings alone with "
         "`qnas.predictors.user_devices.calibrate_user_device` (what `qnas predictor calibrate "
         "NAME --measurements FILE.csv` runs), then QuadraNet children that are not in the set "
         "predicted through the registered device (`get(NAME)`, from each child's PyTorch "
         "module, as a search does) and timed the same way."),
        "",
        *[f"- {line}" for line in summary_lines(result)],
        *[f"- note: {note}" for note in result.notes],
        "",
        ("Calibration rows: `predicted_ms` is the leave-one-model-out prediction (fit on the "
         "other models). Unseen rows: the fit on all calibration models. `spread`: "
         "inter-quartile range of the wall-clock samples / their median (a shared machine "
         "shows here). `measured_ms` is the chosen clock's median."),
        "",
        header, rule, *body,
        "",
        "## Settings",
        "",
        "| setting | value |",
        "|---|---|",
        settings,
        "",
        f"Fitted profile: `{result.device}.yaml` (version {result.profile.get('version', '')}).",
        "",
    ])
    paths["report"] = write_text_atomic(out / "report.md", text)
    return paths

