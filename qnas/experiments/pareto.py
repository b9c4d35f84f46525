"""Pareto search: one warm-up, one search per latency budget, and the latency–accuracy front.

``qnas search --device cortexA76 --latency 300ms,200ms,120ms`` calls :func:`pareto_search`:
the supernet is warmed up once (``out/warmup/``; the warm-up does not depend on the budget),
then one :func:`qnas.nas.search.search` per budget starts from it (``out/<budget>ms/``, each
with its own ``best.json``). ``out/pareto.csv`` lists the children (predicted latency,
validation top-1 with inherited weights, on the front or not) and ``out/pareto.png`` plots them.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import fields
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..errors import Interrupted, QnasError
from ..runtime.files import check_writable_folder, write_csv_atomic, write_text_atomic
from ..units import format_ms, parse_latency

PARETO_CSV = "pareto.csv"
PARETO_PNG = "pareto.png"
PARETO_JSON = "pareto.json"
PARETO_FORMAT = "qnas.pareto"


def parse_budgets(budgets: str | Sequence[str | float]) -> list[float]:
    """``"300ms,200ms,120ms"`` or a list → budgets in ms (each with a unit when a string;
    numbers are ms). Duplicates are refused."""
    items = budgets.split(",") if isinstance(budgets, str) else list(budgets)
    values = []
    for item in items:
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            value = parse_latency(f"{float(item)!r}ms")
        else:
            text = str(item).strip()
            if not text:
                raise QnasError(f"empty latency budget in {budgets!r}; write e.g. "
                                f"300ms,200ms,120ms")
            value = parse_latency(text)
        if value in values:
            raise QnasError(f"latency budget {format_ms(value)} is given twice in {budgets!r}")
        values.append(value)
    if not values:
        raise QnasError("no latency budgets given; write e.g. --latency 300ms,200ms,120ms")
    return values


def budget_folder(budget_ms: float) -> str:
    return f"{budget_ms:g}ms"


def default_out(config) -> Path:
    return Path("runs") / f"{Path(config.space).stem}-{config.device}-pareto-s{config.seed}"


def pareto_front(latency: Sequence[float], accuracy: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (lower-or-equal latency AND higher-or-equal
    accuracy, one of them strictly), sorted by latency."""
    points = [(float(x), float(y), i) for i, (x, y) in enumerate(zip(latency, accuracy))
              if math.isfinite(float(x)) and math.isfinite(float(y))]
    points.sort(key=lambda p: (p[0], -p[1]))
    front, best = [], -math.inf
    for x, y, i in points:
        if y > best:
            front.append(i)
            best = y
    return front


def _copy(config, **changes):
    from ..nas.search import SearchConfig

    values = {f.name: getattr(config, f.name) for f in fields(config)}
    values.update(changes)
    return SearchConfig(**values)


def pareto_search(config, budgets: str | Sequence[str | float], out: str | Path | None = None,
                  resume: bool = False, progress: bool = False,
                  echo: Callable[[str], None] | None = None, threads: int | None = None,
                  command: str | None = None, report: bool = True) -> list[Path]:
    """Search ``config.device`` at each budget from ONE shared warm-up; returns the best.json
    paths in the order of ``budgets``.

    ``config`` is a :class:`qnas.nas.search.SearchConfig` (its ``latency`` is ignored; its
    ``warmup_epochs`` size the shared warm-up; with ``supernet`` set no warm-up runs).
    ``out`` (default ``runs/<space>-<device>-pareto-s<seed>``) receives ``warmup/``,
    ``<budget>ms/`` per budget, ``pareto.csv``, ``pareto.png`` (and ``report.md`` with
    ``report``). Every budget is checked against the space's latency range on the device
    before anything is written; ``resume`` reuses finished parts and resumes the rest.
    """
    from ..nas.search import latency_table
    from ..space import load_space
    from ..predictors import get
    from .provenance import provenance

    echo = echo or (lambda message: None)
    if config.device is None:
        raise QnasError("a Pareto search needs a target device, e.g. --device cortexA76")
    values = parse_budgets(budgets)
    predictor = get(config.device)
    space = load_space(config.space)
    space.check_resolution(config.resolution)
    table = latency_table(space, predictor, config.lut_cache_dir)
    smallest, largest = table.min_ms(), table.max_ms()
    for value in values:
        if value < smallest:
            raise QnasError(f"latency budget {format_ms(value)} on {predictor.device} cannot be "
                            f"met by space '{space.name}': its smallest architecture takes "
                            f"{format_ms(smallest)}; use budgets of {smallest:.4g}ms or more")
    out = Path(out) if out is not None else default_out(config)
    if out.exists() and not out.is_dir():
        raise QnasError(f"--out {out} is a file; give a folder")
    identity = json.loads(json.dumps({k: v for k, v in config.as_dict().items()
                                      if k != "lut_cache_dir"}, default=str))
    if resume:
        if not (out / PARETO_JSON).is_file():
            raise QnasError(f"nothing to resume: {out} holds no {PARETO_JSON}; run without "
                            f"--resume")
        previous = json.loads((out / PARETO_JSON).read_text())
        recorded = {k: v for k, v in previous.get("config", {}).items() if k != "lut_cache_dir"}
        if previous.get("budgets_ms") != values or recorded != identity:
            raise QnasError(f"the Pareto search in {out} was made with other budgets or "
                            f"settings; resume with the same options or use a new --out")
    elif out.exists() and any(out.iterdir()):
        raise QnasError(f"--out {out} is not empty; pass --resume to continue the Pareto search "
                        f"in it or choose an empty folder")
    else:
        check_writable_folder(out)
    echo(f"{predictor.device}: children of '{space.name}' take {format_ms(smallest)} to "
         f"{format_ms(largest)}; budgets {', '.join(format_ms(v) for v in values)}")
    started = time.perf_counter()
    manifest = {"format": PARETO_FORMAT, "format_version": 1, "device": predictor.device,
                "space": space.name, "budgets_ms": values, "config": config.as_dict(),
                **provenance(command), "status": "running"}
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / PARETO_JSON, json.dumps(manifest, indent=2, default=str) + "\n")
    try:
        paths = _run_budgets(config, values, out, resume, progress, echo, threads)
    except Interrupted as err:      # the search's own resume hint names one budget's folder
        raise Interrupted(f"{str(err).split(';')[0]}; continue the Pareto search with the same "
                          f"command and --resume --out {out}", err.signum) from None
    frame = pareto_table(out, paths)
    write_csv_atomic(frame, out / PARETO_CSV)
    from .report import plot_pareto_folder

    plot_pareto_folder(out)
    ordered = frame.sort_values("budget_ms")["predicted_ms"].is_monotonic_increasing
    if not ordered:
        echo("note: the predicted latencies are not ordered like the budgets (a looser budget "
             "found a faster child: the accuracy term preferred it)")
    manifest.update(status="finished", wall_seconds=time.perf_counter() - started)
    write_text_atomic(out / PARETO_JSON, json.dumps(manifest, indent=2, default=str) + "\n")
    if report:
        from .report import write_report

        write_report(out)
    return paths


def _run_budgets(config, values: list[float], out: Path, resume: bool, progress: bool, echo,
                 threads: int | None) -> list[Path]:
    """The shared warm-up, then one search per budget (finished parts reused on resume)."""
    from ..runtime.checkpoints import CheckpointStore
    from ..nas.search import BEST, SUPERNET, search, train_supernet

    def has_checkpoint(folder: Path) -> bool:
        return folder.is_dir() and CheckpointStore(folder).exists()

    supernet = config.supernet
    if supernet is None and config.warmup_epochs > 0:
        warm = out / "warmup"
        if resume and (warm / SUPERNET).is_file():
            supernet = str(warm / SUPERNET)
            echo(f"warm-up: reusing {supernet}")
        else:
            echo(f"warm-up: {config.warmup_epochs} epochs, shared by {len(values)} searches")
            path = train_supernet(config, out=warm, resume=resume and has_checkpoint(warm),
                                  progress=progress, echo=echo, threads=threads)
            if path is None:
                raise QnasError("the warm-up stopped early; resume with --resume")
            supernet = str(path)
    paths = []
    for value in values:
        folder = out / budget_folder(value)
        if resume and (folder / BEST).is_file():
            echo(f"[{format_ms(value)}] reusing {folder / BEST}")
        else:
            echo(f"[{format_ms(value)}] search → {folder}")
            result = search(_copy(config, latency=value, supernet=supernet,
                                  warmup_epochs=0 if supernet else config.warmup_epochs),
                            out=folder, resume=resume and has_checkpoint(folder),
                            progress=progress, echo=lambda m, v=value: echo(f"[{format_ms(v)}] {m}"),
                            threads=threads)
            if not result.finished:
                raise QnasError(f"the search at {format_ms(value)} stopped early; resume with "
                                f"--resume")
        paths.append(folder / BEST)
    return paths


def pareto_table(out: Path, paths: Sequence[Path]) -> pd.DataFrame:
    """One row per best.json: budget, predicted and table latency, top-1, MACs, on the front."""
    from .runner import evaluate_best

    rows = []
    for path in paths:
        best = json.loads(Path(path).read_text())
        row = {"budget_ms": float(best["target_latency_ms"])}
        row.update(evaluate_best(Path(path), out))
        rows.append(row)
    frame = pd.DataFrame(rows)
    front = set(pareto_front(frame["predicted_ms"], frame["val_top1"]))
    frame["on_front"] = [i in front for i in range(len(frame))]
    return frame
