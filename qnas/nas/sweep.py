"""A sweep: ONE warm-up, then one search per (device, budget) target from it.

The warm-up trains the supernet's weights with uniform paths and does not depend on the device
or the budget, so several searches can share it. ``qnas search --latency 300ms,200ms,120ms``
(a Pareto search, :mod:`qnas.experiments.pareto`) and the Table III experiment
(:mod:`qnas.experiments.runner`) both call :func:`sweep`.

Layout (default; both folders can be chosen by the caller): ``<out>/warmup/`` (train-supernet's
run, ``supernet.pt``), ``<out>/<budget>ms/`` per budget (or ``<out>/<device>-<budget>ms/`` when
the targets span devices), each a search run folder with its own ``best.json``; ``<out>/sweep.json``
records the targets and settings so that ``resume`` can check it continues the same sweep;
``<out>/run.log`` holds every message of the sweep and of its runs (each run folder has its
own ``run.log`` too).
Every target is checked against the space's latency range on its device before anything is
written; an infeasible budget is an error, or (``skip_infeasible``) a row of the result.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import Interrupted, QnasError
from ..runtime import distributed
from ..runtime.checkpoints import CheckpointStore
from ..runtime.files import check_writable_folder, write_json_atomic
from ..runtime.log import logged, run_log, start_run_log
from ..space import load_space
from ..units import budget_label, format_ms
from .best import FILE_NAME as BEST
from .config import SearchConfig
from .latency import latency_table
from .search import SUPERNET, search, train_supernet

MANIFEST = "sweep.json"
MANIFEST_FORMAT = "qnas.sweep"


@dataclass
class SweepTarget:
    """One (device, budget) of a sweep and what became of it."""

    device: str
    budget_ms: float
    folder: Path | None = None
    smallest_ms: float = float("nan")      # the space's latency range on the device
    largest_ms: float = float("nan")
    best_path: Path | None = None          # None: infeasible (or not run)

    @property
    def label(self) -> str:
        return f"{self.device}-{budget_label(self.budget_ms)}"

    @property
    def feasible(self) -> bool:
        return self.smallest_ms <= self.budget_ms

    @property
    def binds(self) -> bool:
        return self.largest_ms > self.budget_ms


@dataclass
class SweepResult:
    out: Path
    targets: list[SweepTarget]
    supernet: Path | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def best_paths(self) -> list[Path]:
        return [t.best_path for t in self.targets if t.best_path is not None]


def has_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds a search (or warm-up) checkpoint to resume."""
    return CheckpointStore(folder).exists()


def sweep(config: SearchConfig, out: str | Path | None = None,
          targets: Sequence[tuple[str, float]] | None = None, resume: bool = False,
          progress: bool = False, echo: Callable[[str], None] | None = None,
          threads: int | None = None, warmup_folder: Path | None = None,
          folder_for: Callable[[SweepTarget], Path] | None = None,
          skip_infeasible: bool = False) -> SweepResult:
    """Warm up once, then search each target; returns where every best.json went.

    Args:
        config: the search settings; ``targets`` default to ``config.device`` at each of
            ``config.budgets``. ``config.warmup_epochs`` size the shared warm-up; with
            ``config.supernet`` set no warm-up runs.
        out: the sweep's folder (default ``config.default_out()``).
        resume: reuse finished parts (``supernet.pt``, ``best.json``) and resume the rest.
        warmup_folder / folder_for: where the warm-up and each search go (see module doc).
        skip_infeasible: a budget below the space's smallest child becomes a target without a
            best.json instead of an error.
    """
    echo = echo or (lambda message: None)
    if not distributed.is_main():
        echo = lambda message: None  # noqa: E731 -- only rank 0 reports
    out = Path(out) if out is not None else config.default_out()
    with run_log(out):
        return _sweep(config, out, targets, resume, progress, echo, threads, warmup_folder,
                      folder_for, skip_infeasible)


def _sweep(config, out: Path, targets, resume, progress, echo, threads, warmup_folder,
           folder_for, skip_infeasible) -> SweepResult:
    runs_echo, echo = echo, logged(echo)      # the runs log their own messages
    started = time.perf_counter()
    if targets is None:
        if config.device is None:
            raise QnasError("a sweep needs a target device, e.g. --device cortexA76")
        targets = [(config.device, budget) for budget in config.budgets]
    if not targets:
        raise QnasError("a sweep needs at least one (device, budget) target")
    devices = {device for device, _ in targets}
    if folder_for is None:
        folder_for = (lambda t: out / budget_label(t.budget_ms)) if len(devices) == 1 \
            else (lambda t: out / t.label)
    warmup_folder = Path(warmup_folder) if warmup_folder is not None else out / "warmup"

    # every target checked before anything is written
    space = load_space(config.space)
    space.check_resolution(config.resolution)
    from ..predictors import get

    plan = []
    for device, budget in targets:
        predictor = get(device)
        table = latency_table(space, predictor, config.lut_cache_dir)
        target = SweepTarget(predictor.device, float(budget), smallest_ms=table.min_ms(),
                             largest_ms=table.max_ms())
        if not target.feasible and not skip_infeasible:
            raise QnasError(f"latency budget {format_ms(target.budget_ms)} on {target.device} "
                            f"cannot be met by space '{space.name}': its smallest architecture "
                            f"takes {format_ms(target.smallest_ms)}; use budgets of "
                            f"{target.smallest_ms:.4g}ms or more")
        target.folder = folder_for(target)
        plan.append(target)
    identity = {"targets": [[t.device, t.budget_ms] for t in plan],
                "config": config.warmup_only().identity()}
    _open(out, resume, identity)
    if distributed.is_main():
        start_run_log(out)
    for target in plan:
        echo(f"{target.device}: children of '{space.name}' take {format_ms(target.smallest_ms)} "
             f"to {format_ms(target.largest_ms)}; budget {format_ms(target.budget_ms)}"
             + ("" if target.feasible else " — infeasible, skipped"))

    manifest = {"format": MANIFEST_FORMAT, "format_version": 1, **identity,
                "status": "running"}
    if distributed.is_main():
        write_json_atomic(out / MANIFEST, manifest)
    feasible = [t for t in plan if t.feasible]
    supernet = config.supernet
    try:
        if feasible and supernet is None and config.warmup_epochs > 0:
            supernet = str(_warm_up(config, warmup_folder, len(feasible), resume, progress,
                                    echo, runs_echo, threads))
        for target in feasible:
            target.best_path = _search_one(config, target, supernet, resume, progress, echo,
                                           runs_echo, threads)
    except Interrupted as err:      # the search's own hint names one folder: name the sweep's
        raise Interrupted(f"{str(err).split(';')[0]}; continue the sweep with the same command "
                          f"and --resume --out {out}", err.signum) from None
    manifest.update(status="finished", wall_seconds=time.perf_counter() - started)
    if distributed.is_main():
        write_json_atomic(out / MANIFEST, manifest)
    return SweepResult(out, plan, Path(supernet) if supernet else None,
                       time.perf_counter() - started)


def _open(out: Path, resume: bool, identity: dict) -> None:
    """Refuse a folder holding something else; on resume, another sweep's settings."""
    if resume:
        path = out / MANIFEST
        if not path.is_file():
            raise QnasError(f"nothing to resume: {out} holds no {MANIFEST}; run without --resume")
        try:
            previous = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise QnasError(f"{path} is corrupt (not JSON); start the sweep again in a new "
                            f"--out") from None
        recorded = {k: previous.get(k) for k in identity}
        if json.loads(json.dumps(recorded)) != json.loads(json.dumps(identity)):
            raise QnasError(f"the sweep in {out} was made with other budgets or settings; "
                            f"resume with the same options or use a new --out")
        return
    if out.exists() and not out.is_dir():
        raise QnasError(f"--out {out} is a file; give a folder")
    if out.exists() and any(out.iterdir()):
        raise QnasError(f"--out {out} is not empty; pass --resume to continue the sweep in it "
                        f"or choose an empty folder")
    check_writable_folder(out)


def _warm_up(config: SearchConfig, folder: Path, searches: int, resume: bool, progress: bool,
             echo, runs_echo, threads) -> Path:
    if resume and (folder / SUPERNET).is_file():
        echo(f"warm-up: reusing {folder / SUPERNET}")
        return folder / SUPERNET
    echo(f"warm-up: {config.warmup_epochs} epochs on {config.data}, shared by {searches} "
         f"search(es) → {folder}")
    path = train_supernet(config, out=folder, resume=resume and has_checkpoint(folder),
                          progress=progress, echo=runs_echo, threads=threads)
    if path is None:
        raise QnasError("the warm-up stopped early; continue with --resume")
    return path


def _search_one(config: SearchConfig, target: SweepTarget, supernet: str | None, resume: bool,
                progress: bool, echo, runs_echo, threads) -> Path:
    folder, tag = target.folder, f"[{target.device} {format_ms(target.budget_ms)}]"
    if resume and (folder / BEST).is_file():
        echo(f"{tag} reusing {folder / BEST}")
        return folder / BEST
    changes = {"device": target.device}
    if supernet is not None:
        changes.update(supernet=str(supernet), warmup_epochs=0)
    child_config = config.for_budget(target.budget_ms, **changes)
    echo(f"{tag} search: {child_config.epochs} epochs → {folder}")
    result = search(child_config, out=folder, resume=resume and has_checkpoint(folder),
                    progress=progress, echo=lambda message: runs_echo(f"{tag} {message}"),
                    threads=threads)
    if not result.finished:
        raise QnasError(f"{tag} the search stopped early; continue with --resume")
    return result.best_path
