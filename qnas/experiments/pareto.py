"""Pareto search: the sweep of :mod:`qnas.nas.sweep` over several budgets on one device, then the
latency–accuracy front.

``qnas search --device cortexA76 --latency 300ms,200ms,120ms`` calls :func:`pareto_search`: one
warm-up (``out/warmup/``), one search per budget from it (``out/<budget>ms/``, each with its own
``best.json``), then ``out/pareto.csv`` (predicted latency, validation top-1 with inherited
weights, on the front or not), ``out/pareto.png``, ``out/pareto.json`` (provenance) and
``out/report.md``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ..errors import QnasError
from ..nas.config import SearchConfig
from ..nas.sweep import sweep
from ..runtime import distributed
from ..runtime.files import write_csv_atomic, write_json_atomic
from .provenance import provenance
from .report import write_report
from .results import (
    PARETO_CSV,
    PARETO_FORMAT,
    PARETO_JSON,
    PARETO_PNG,
    REPORT,
    pareto_table,
)
from .run_report import plot_pareto_folder


@dataclass
class ParetoResult:
    out: Path
    table: pd.DataFrame
    csv: Path
    png: Path
    report: Path | None
    best_paths: list[Path]


def pareto_search(config: SearchConfig, out: str | Path | None = None, resume: bool = False,
                  progress: bool = False, echo: Callable[[str], None] | None = None,
                  threads: int | None = None, command: str | None = None,
                  report: bool = True) -> ParetoResult:
    """Search ``config.device`` at each of ``config.budgets`` from ONE shared warm-up.

    ``out`` defaults to ``runs/<space>-<device>-pareto-s<seed>``; ``resume`` reuses finished
    parts and resumes the rest (see :func:`qnas.nas.sweep.sweep`)."""
    echo = echo or (lambda message: None)
    if config.device is None or not config.budgets:
        raise QnasError("a Pareto search needs a device and budgets, e.g. --device cortexA76 "
                        "--latency 300ms,200ms,120ms")
    started = time.perf_counter()
    out = Path(out) if out is not None else config.default_out()
    result = sweep(config, out=out, resume=resume, progress=progress, echo=echo, threads=threads)
    paths = result.best_paths
    table = pareto_table(out, paths)
    written = None
    if distributed.is_main():
        write_csv_atomic(table, out / PARETO_CSV)
        plot_pareto_folder(out)
        if not table.sort_values("budget_ms")["predicted_ms"].is_monotonic_increasing:
            echo("note: the predicted latencies are not ordered like the budgets (a looser "
                 "budget found a faster child: the accuracy term preferred it)")
        write_json_atomic(out / PARETO_JSON, {
            "format": PARETO_FORMAT, "format_version": 1, "device": config.device,
            "space": config.space, "budgets_ms": config.budgets, "config": config.as_dict(),
            **provenance(command), "status": "finished",
            "wall_seconds": time.perf_counter() - started})
        if report:
            written = write_report(out)
    distributed.barrier()
    return ParetoResult(out, table, out / PARETO_CSV, out / PARETO_PNG,
                        written if report else None, paths)


__all__ = ["pareto_search", "ParetoResult", "REPORT"]
