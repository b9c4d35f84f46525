"""Benchmark: predicted vs measured latency of random QuadraNet children on this host.

The "predicted" side is the nn-Meter path on the ``host-cpu`` predictor that
``qnas predictor build`` trains from this host's kernel timings (nn-Meter's IR prediction +
qnas's fitted costs for the ops nn-Meter ignores). The "measured" side times the whole child
with :class:`~qnas.predictors.measured.MeasuredPredictor` at the same thread count. Errors are
``predicted / measured - 1``; the goal is a median |error| within 25 %.

Timings on a shared machine are noisy: the measured column carries each measurement's IQR.
"""
from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..errors import QnasError
from ..models.ops import is_identity
from ..predictors.builder import build_host_predictor
from ..predictors.measured import MeasuredPredictor
from ..predictors.nnmeter_backend import NNMeterPredictor
from ..predictors.nnmeter_files import missing_message, nnmeter_files
from ..space import load_space

GOAL = 0.25


@dataclass
class ChildResult:
    index: int
    ops: list[str]
    predicted_ms: float
    nnmeter_ms: float
    extra_ms: float
    overhead_ms: float
    measured_ms: float
    measured_iqr: float
    measured_cpu_ms: float

    @property
    def error(self) -> float:
        return self.predicted_ms / self.measured_ms - 1.0

    @property
    def cpu_error(self) -> float:
        return self.predicted_ms / self.measured_cpu_ms - 1.0


@dataclass
class BenchResult:
    rows: list[ChildResult]
    input_shape: tuple[int, ...]
    predictor_version: str
    measured_version: str
    threads: int
    notes: list[str] = field(default_factory=list)

    @property
    def median_abs_error(self) -> float:
        return statistics.median(abs(r.error) for r in self.rows)

    @property
    def median_error(self) -> float:
        return statistics.median(r.error for r in self.rows)

    @property
    def median_abs_cpu_error(self) -> float:
        return statistics.median(abs(r.cpu_error) for r in self.rows)

    @property
    def within_goal(self) -> bool:
        return self.median_abs_error <= GOAL


def _short_ops(ops: Sequence[str]) -> str:
    return " ".join("-" if is_identity(op) else op for op in ops)


def bench_predictor(children: int = 5, input_shape: Sequence[int] | None = (1, 3, 64, 64),
                    space: str = "quadranet", seed: int = 0, samples: int = 100,
                    threads: int | None = None, build: bool = True, repeats: int = 21,
                    progress: Callable[[str], None] | None = None) -> BenchResult:
    """Compare the host-cpu nn-Meter predictor with measurements on ``children`` random children."""
    say = progress or (lambda _msg: None)
    spc = load_space(space)
    shape = tuple(input_shape or spc.input_shape)
    notes = []
    files = nnmeter_files("host-cpu")
    if not files.available:
        if not build:
            raise QnasError(missing_message("host-cpu", files))
        say(f"no usable host-cpu nn-Meter predictor ({files.problem}); building one with "
            f"{samples} samples per kernel type")
        build_host_predictor("host-cpu", samples, space=space, input_shape=shape,
                             threads=threads, progress=say)
        files = nnmeter_files("host-cpu")
    built_threads = int((files.info.get("qnas") or {}).get("threads", 1))
    if threads is None:
        threads = built_threads
    elif threads != built_threads:
        notes.append(f"timing with {threads} thread(s) but the predictor was built with "
                     f"{built_threads}")
    predictor = NNMeterPredictor("host-cpu")
    measured = MeasuredPredictor("host-cpu", threads=threads, repeats=repeats)
    rng = random.Random(seed)
    rows = []
    for index in range(children):
        ops = [rng.choice(spc.candidates) for _ in range(spc.num_layers)]
        child = spc.build_child(ops, num_classes=10).eval()
        say(f"child {index}: predicting and measuring ({_short_ops(ops)})")
        parts = predictor.predict_parts(child, shape)
        timing = measured.measure(child, shape)
        rows.append(ChildResult(index, ops, parts.total_ms, parts.nnmeter_ms, parts.extra_ms,
                                parts.overhead_ms, timing.median_ms, timing.spread, timing.cpu_median_ms))
    return BenchResult(rows, shape, predictor.version, measured.version, threads, notes)


def format_table(result: BenchResult) -> str:
    shape = "x".join(map(str, result.input_shape))
    lines = [
        f"predicted (nn-Meter host-cpu predictor) vs measured latency at {shape}, "
        f"{result.threads} thread(s)",
        f"  predicted: {result.predictor_version}",
        f"  measured:  {result.measured_version}",
        "",
        f"{'child':>5}  {'nn-Meter':>9}  {'+ignored':>9}  {'+overhead':>9}  {'predicted':>9}  "
        f"{'measured':>9}  "
        f"{'IQR':>5}  {'error':>7}  {'cpu-time':>9}  {'error':>7}  ops (per layer, - = identity)",
    ]
    for r in result.rows:
        lines.append(f"{r.index:>5}  {r.nnmeter_ms:>9.3f}  {r.extra_ms:>9.3f}  "
                     f"{r.overhead_ms:>9.3f}  {r.predicted_ms:>9.3f}  {r.measured_ms:>9.3f}  "
                     f"{100 * r.measured_iqr:>4.0f}%  {100 * r.error:>+6.1f}%  "
                     f"{r.measured_cpu_ms:>9.3f}  {100 * r.cpu_error:>+6.1f}%  {_short_ops(r.ops)}")
    verdict = "within" if result.within_goal else "OUTSIDE"
    lines += ["", f"median error {100 * result.median_error:+.1f}%, median |error| "
                  f"{100 * result.median_abs_error:.1f}% vs wall-clock ({verdict} the "
                  f"±{100 * GOAL:.0f}% goal); median |error| vs thread CPU time "
                  f"{100 * result.median_abs_cpu_error:.1f}%; times in ms",
              "nn-Meter = nn-Meter's IR prediction; +ignored = fitted costs of the ops nn-Meter "
              "skips; +overhead = fitted per-kernel framework overhead",
              "measured = wall-clock median (the latency); cpu-time = the timing thread's CPU "
              "time over the same rounds, which leaves out time other processes took on a "
              "shared machine"]
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)
