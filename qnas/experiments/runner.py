"""Run an experiment file into a results folder.

:func:`run_experiment` dispatches on the YAML's ``kind``:

``blocks``    Table II: :func:`qnas.bench.blocks.run_block_bench` (+ the QuadraConv2d part)
              → ``blocks.csv``, ``blocks_quadraconv.csv``.
``nas``       Table III: per space one sweep (:func:`qnas.nas.sweep.sweep`: one warm-up in
              ``<space>/warmup/`` — the warm-up does not depend on the device — then per
              (device, budget) one search from that supernet, ``<space>/<device>-<budget>ms/``),
              each evaluated: top-1 of the child with inherited weights (best.json),
              optionally after a short retraining, MACs and parameters of the deployment network,
              predicted latency on every device, within-budget flag → ``results.csv``. A budget
              the space cannot meet is a row ``infeasible (smallest X ms)``, not a crash.
``ablation``  Table IV: QuadraNet of the YAML's width/depths with every block at kernel k,
              trained with :func:`qnas.train.retrain` (a one-architecture best.json per k)
              → ``results.csv`` (params, MACs, top-1, predicted latency per device).

Every results folder gets ``experiment.yaml`` (the file as run, overrides applied),
``experiment.json`` (command, qnas version, git commit, machine, wall time, status) and, at the
end, ``report.md`` with its plots (:func:`qnas.experiments.report.write_report`).
``resume=True`` continues an interrupted run: finished parts are reused, interrupted searches
and trainings resume from their checkpoints.
"""
from __future__ import annotations

import json
import math
import shlex
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pandas as pd
import yaml

from ..bench import blocks
from ..deploy import count_macs
from ..errors import Interrupted, QnasError
from ..models.ops import IDENTITY
from ..nas.best import BestRecord, load_best
from ..nas.sweep import SweepTarget, sweep
from ..runtime.checkpoints import CheckpointStore, checksum_path
from ..runtime.files import (
    check_writable_folder,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)
from ..space import load_space
from ..train.retraining import SUMMARY, retrain
from ..train.retraining import has_checkpoint as retrain_has_checkpoint
from . import search_vs_random
from .config import (
    AblationSettings,
    BlocksSettings,
    Experiment,
    NasSettings,
    load_experiment,
)
from .provenance import provenance
from .report import write_report
from .results import (
    BLOCKS_CSV,
    EFFECTIVE_YAML,
    MANIFEST,
    MANIFEST_FORMAT,
    RESULTS,
    evaluate_best,
    read_manifest,
)


def default_out(experiment: Experiment) -> Path:
    return Path("runs") / "experiments" / experiment.name


def _equivalent_command(experiment: Experiment, out: Path, resume: bool) -> str:
    argv = ["qnas", "experiment", "run", str(experiment.path), "--out", str(out)]
    for key, value in experiment.overrides.items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    if resume:
        argv.append("--resume")
    return shlex.join(argv)


def _prepare_out(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise QnasError(f"--out {out} is a file; give a folder")
    if resume:
        if not (out / MANIFEST).is_file():
            raise QnasError(f"nothing to resume: {out} holds no {MANIFEST}; run without --resume")
        return
    if out.exists() and any(out.iterdir()):
        held = "an experiment" if (out / MANIFEST).exists() else "files"
        raise QnasError(f"--out {out} already holds {held}; pass --resume to continue it or "
                        f"choose an empty folder")
    check_writable_folder(out)


def _write_manifest(out: Path, manifest: dict) -> None:
    write_json_atomic(out / MANIFEST, manifest)


def run_experiment(path: str | Path, out: str | Path | None = None,
                   overrides: dict | None = None, echo: Callable[[str], None] | None = None,
                   resume: bool = False, progress: bool = False, command: str | None = None,
                   report: bool = True) -> Path:
    """Run the experiment file ``path`` (a YAML or a shipped name such as ``table3``) into
    ``out`` (default ``runs/experiments/<name>``); returns the results folder.

    ``overrides``: ``data``, ``epochs``, ``warmup_epochs``, ``retrain_epochs`` (None values
    ignored). ``command`` is recorded as the command line (default: the equivalent ``qnas
    experiment run ...``). ``report`` writes ``report.md`` and the plots at the end.
    Everything that can be refused is checked before anything is written.
    """
    echo = echo or (lambda message: None)
    experiment = load_experiment(path, overrides)
    out = Path(out) if out is not None else default_out(experiment)
    _prepare_out(out, resume)
    if resume:
        previous = read_manifest(out)
        if previous.get("name") != experiment.name or previous.get("config") != experiment.raw:
            raise QnasError(f"{out} holds experiment '{previous.get('name')}' run with other "
                            f"settings; resume it with the same file and options or use a new "
                            f"--out")
    started = time.perf_counter()
    manifest = {
        "format": MANIFEST_FORMAT, "format_version": 1, "name": experiment.name,
        "kind": experiment.kind, "description": experiment.description,
        "file": str(experiment.path), "overrides": experiment.overrides,
        "config": experiment.raw, "resolved": resolved_settings(experiment),
        **provenance(command or _equivalent_command(experiment, out, resume)),
        "status": "running", "wall_seconds": None,
    }
    if resume:
        manifest["resumed_from"] = {k: previous.get(k) for k in ("started", "wall_seconds",
                                                                  "status")}
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / EFFECTIVE_YAML,
                      f"# {experiment.path} as run (overrides: {experiment.overrides or 'none'})\n"
                      + yaml.safe_dump(experiment.raw, sort_keys=False))
    _write_manifest(out, manifest)
    echo(f"experiment {experiment.name} ({experiment.kind}) → {out}")
    try:
        if experiment.kind == "blocks":
            run_blocks(experiment.settings, out, echo, progress)
        elif experiment.kind == "nas":
            run_nas(experiment, out, echo, resume, progress)
        elif experiment.kind == "ablation":
            run_ablation(experiment, out, echo, resume, progress)
        else:
            search_vs_random.run(experiment, out, echo, resume, progress)
    except BaseException as err:
        manifest["status"] = f"failed: {type(err).__name__}: {' '.join(str(err).split())}"
        manifest["wall_seconds"] = time.perf_counter() - started
        _write_manifest(out, manifest)
        if isinstance(err, Interrupted):     # the search's own resume hint names its folder
            raise Interrupted(f"{str(err).split(';')[0]}; continue the experiment with: "
                              f"{_equivalent_command(experiment, out, True)}",
                              err.signum) from None
        raise
    manifest["status"] = "finished"
    manifest["wall_seconds"] = time.perf_counter() - started
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write_manifest(out, manifest)
    echo(f"finished in {manifest['wall_seconds'] / 60:.1f} min")
    if report:
        path = write_report(out)
        echo(f"report: {path}")
    return out


def resolved_settings(experiment: Experiment) -> dict:
    """The settings the runs will use, defaults filled in (recorded in experiment.json)."""
    s = experiment.settings
    if experiment.kind == "blocks":
        config = blocks.BlockBenchConfig(**s.bench).__dict__
        return {"bench": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
                "quadraconv": s.quadraconv}
    if experiment.kind == "nas":
        search = s.search.as_dict()
        for key in ("device", "latency", "space", "supernet", "lut_cache_dir"):
            search.pop(key, None)
        out = {"search": search, "retrain_epochs": s.retrain_epochs}
        if s.retrain is not None:
            out["retrain"] = s.retrain.as_dict()
        return out
    if experiment.kind == "search_vs_random":
        return {"search": s.search.as_dict(), "retrain": s.retrain.as_dict(), "seeds": s.seeds,
                "search_seeds": s.search_seeds, "random_children": s.random_children,
                "band": s.band}
    return {"train": s.train.as_dict()}


# --- Table II -------------------------------------------------------------------------------------

def run_blocks(settings: BlocksSettings, out: Path, echo, progress: bool = False) -> None:
    config = blocks.BlockBenchConfig(**settings.bench)
    echo(f"blocks: {', '.join(config.kinds)} at C={list(config.channels)}, {config.layers} "
         f"layers, batch {config.batch}, {config.resolution}², {config.threads} threads")
    table = blocks.run_block_bench(config, progress=progress)
    write_csv_atomic(table, out / BLOCKS_CSV)
    for line in blocks.goal_summary(table):
        echo(line)
    if settings.quadraconv:
        conv = blocks.run_quadraconv_bench(config, progress=progress)
        write_csv_atomic(conv, blocks.companion_path(out / BLOCKS_CSV))


# --- Table III ------------------------------------------------------------------------------------

def _prune(folder: Path, keep: str | None) -> None:
    """Delete the search checkpoints in ``folder`` except the one named ``keep``."""
    for path in CheckpointStore(folder).paths():
        if path.name != keep:
            path.unlink(missing_ok=True)
            checksum_path(path).unlink(missing_ok=True)


def run_nas(experiment: Experiment, out: Path, echo, resume: bool = False,
            progress: bool = False) -> pd.DataFrame:
    """Table III (see the module doc): one sweep per space; returns the results table (also
    ``results.csv``)."""
    settings: NasSettings = experiment.settings
    rows: list[dict] = []
    for spec, name in zip(settings.spaces, settings.space_names):
        config = replace(settings.search, space=spec)
        folder = out / name
        result = sweep(config, out=folder, resume=resume and (folder / "sweep.json").is_file(),
                       targets=[(t.device, t.latency_ms) for t in settings.targets],
                       progress=progress, echo=lambda m, n=name: echo(f"[{n}] {m}"),
                       skip_infeasible=True)
        if settings.checkpoints == "last" and result.supernet is not None:
            _prune(result.supernet.parent, keep=None)     # supernet.pt holds the weights
        for target in result.targets:
            rows.append(_nas_row(settings, name, load_space(spec).macro, target, out, echo,
                                 resume, progress))
            write_csv_atomic(pd.DataFrame(rows), out / RESULTS)
    return pd.DataFrame(rows)


def _nas_row(settings: NasSettings, name: str, macro: str, target: SweepTarget, out: Path,
             echo, resume: bool, progress: bool) -> dict:
    """The results row of one (space, device, budget): the search's, or 'infeasible'."""
    tag = f"[{name} {target.label}]"
    row = {"space": name, "macro": macro, "device": target.device,
           "budget_ms": target.budget_ms, "smallest_ms": target.smallest_ms,
           "largest_ms": target.largest_ms, "budget_binds": target.binds}
    if target.best_path is None:
        echo(f"{tag} infeasible: the smallest child takes {target.smallest_ms:.4g} ms")
        return {**row, "status": f"infeasible (smallest {target.smallest_ms:.4g} ms)",
                "within_budget": False}
    row.update(evaluate_best(target.best_path, out))
    if settings.retrain is not None:
        row.update(_retrain_one(settings, target.folder, tag, echo, resume, progress))
    if settings.checkpoints == "last":
        named = load_best(target.best_path).record.supernet_checkpoint
        _prune(target.folder, keep=Path(named).name if named else None)
    echo(f"{tag} {row['ops_by_stage']}: top-1 {row['val_top1']:.1f}% (inherited), "
         f"{row['predicted_ms']:.4g} ms predicted, {row['macs_M']:.1f} MMACs, "
         f"{'within' if row['within_budget'] else 'OVER'} budget")
    return row


def _retrain_one(settings: NasSettings, folder: Path, tag: str, echo, resume: bool,
                 progress: bool) -> dict:
    train_out = folder / "retrain"
    if resume and (train_out / SUMMARY).is_file():
        summary = json.loads((train_out / SUMMARY).read_text())
        return {"retrain_top1": summary["val_top1"], "retrain_epochs": settings.retrain_epochs,
                "retrain_seconds": summary.get("train_seconds", math.nan)}
    echo(f"{tag} retrain: {settings.retrain.epochs} epochs → {train_out}")
    result = retrain(folder / "best.json", settings.retrain, out=train_out,
                     resume=resume and retrain_has_checkpoint(train_out), progress=progress,
                     echo=lambda m: echo(f"{tag} {m}"))
    if not result.finished:
        raise QnasError(f"{tag} the retraining stopped early; continue the experiment with "
                        f"--resume")
    return {"retrain_top1": result.top1, "retrain_epochs": settings.retrain_epochs,
            "retrain_seconds": float(result.log["seconds"].sum())}


# --- Table IV -------------------------------------------------------------------------------------

def ablation_space(experiment: Experiment, kernel: int) -> dict:
    """The one-architecture QuadraNet space of kernel ``kernel`` (identity is listed only
    because a space needs two candidates per layer; it is never chosen)."""
    s: AblationSettings = experiment.settings
    e = s.expansion
    return {"name": f"{experiment.name}-k{kernel}",
            "description": f"{experiment.name}: QuadraNet, every block QuadraBlock k{kernel} e{e}",
            "macro": "quadranet", "width": s.width, "depths": list(s.depths),
            "candidates": [f"k{kernel}e{e:g}", IDENTITY], "input_shape": list(s.input_shape)}


def _fixed_best(experiment: Experiment, kernel: int, seed: int, folder: Path) -> Path:
    """A best.json for the fixed architecture (every layer k``kernel``), so that
    :func:`qnas.train.retrain` can train it; latencies are the devices' predictions."""
    s: AblationSettings = experiment.settings
    space_path = folder / "space.yaml"
    write_text_atomic(space_path, yaml.safe_dump(ablation_space(experiment, kernel),
                                                 sort_keys=False))
    space = load_space(str(space_path.resolve()))
    record = BestRecord.of_fixed_architecture(
        space, [space.candidates[0]] * space.num_layers, s.devices[0], s.devices[1:],
        dataset=s.data, resolution=s.resolution, seed=seed,
        why="a fixed architecture of the kernel-size ablation")
    return record.write(folder / "best.json")


def run_ablation(experiment: Experiment, out: Path, echo, resume: bool = False,
                 progress: bool = False) -> pd.DataFrame:
    """Table IV (see the module doc); returns the results table (also ``results.csv``)."""
    s: AblationSettings = experiment.settings
    rows = []
    for kernel in s.kernels:
        for seed in s.seeds:
            folder = out / "runs" / f"k{kernel}-s{seed}"
            tag = f"[k{kernel} seed {seed}]"
            best_path = folder / "best.json"
            if not (resume and best_path.is_file()):
                folder.mkdir(parents=True, exist_ok=True)
                _fixed_best(experiment, kernel, seed, folder)
            best = load_best(best_path)
            train_out = folder / "retrain"
            if resume and (train_out / SUMMARY).is_file():
                echo(f"{tag} reusing {train_out / SUMMARY}")
                summary = json.loads((train_out / SUMMARY).read_text())
                log = pd.read_csv(train_out / "retrain_log.csv")
                top1, best_top1 = summary["val_top1"], summary["best_top1"]
                seconds = float(log["seconds"].sum())
            else:
                config = replace(s.train, seed=seed)
                echo(f"{tag} training QuadraNet C={s.width} depths {s.depths}, all "
                     f"k{kernel}: {config.epochs} epochs → {train_out}")
                result = retrain(best_path, config, out=train_out,
                                 resume=resume and retrain_has_checkpoint(train_out),
                                 progress=progress, echo=lambda m: echo(f"{tag} {m}"))
                if not result.finished:
                    raise QnasError(f"{tag} the training stopped early; continue the "
                                    f"experiment with --resume")
                top1, best_top1 = result.top1, result.best_top1
                seconds = float(result.log["seconds"].sum())
            deploy = best.build_child().eval()
            row = {"kernel": kernel, "seed": seed, "expansion": s.expansion, "width": s.width,
                   "depths": "-".join(map(str, s.depths)),
                   "params_M": sum(p.numel() for p in deploy.parameters()) / 1e6,
                   "macs_M": count_macs(deploy, best.input_shape) / 1e6,
                   "top1": top1, "best_top1": best_top1, "train_seconds": seconds,
                   "run": str(folder.relative_to(out))}
            row[f"ms_{best.device}"] = best.predicted_latency_ms
            for device, value in best.record.other_devices.items():
                row[f"ms_{device}"] = value.get("latency_ms", math.nan)
            echo(f"{tag} top-1 {top1:.1f}%, {row['params_M']:.2f} M params, "
                 f"{row['macs_M']:.0f} MMACs")
            rows.append(row)
            write_csv_atomic(pd.DataFrame(rows), out / RESULTS)
    return pd.DataFrame(rows)


__all__ = ["run_experiment", "run_blocks", "run_nas", "run_ablation", "evaluate_best",
           "read_manifest", "default_out", "ablation_space"]
