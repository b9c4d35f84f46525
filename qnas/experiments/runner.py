"""Run an experiment file into a results folder.

:func:`run_experiment` dispatches on the YAML's ``kind``:

``blocks``    Table II: :func:`qnas.bench.blocks.run_block_bench` (+ the QuadraConv2d part)
              → ``blocks.csv``, ``blocks_quadraconv.csv``.
``nas``       Table III: per space one warm-up (:func:`train_supernet`, into
              ``warmup/<space>/`` — the warm-up does not depend on the device), then per
              (device, budget) one :func:`search` from that supernet (``runs/<space>-<device>-
              <budget>ms/``), evaluated: top-1 of the child with inherited weights (best.json),
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
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import pandas as pd
import yaml

from ..errors import Interrupted, QnasError
from ..models.ops import IDENTITY, without_identity
from ..runtime.files import check_writable_folder, write_csv_atomic, write_text_atomic
from .config import (AblationSettings, BlocksSettings, Experiment, NasSettings, Target,
                     load_experiment)
from .provenance import provenance

MANIFEST = "experiment.json"
EFFECTIVE_YAML = "experiment.yaml"
RESULTS = "results.csv"
BLOCKS_CSV = "blocks.csv"
MANIFEST_FORMAT = "qnas.experiment"


def default_out(experiment: Experiment) -> Path:
    return Path("runs") / "experiments" / experiment.name


def _equivalent_command(experiment: Experiment, out: Path, resume: bool) -> str:
    import shlex

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
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise QnasError(f"{folder} holds no {MANIFEST}; it is not an experiment results "
                        f"folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise QnasError(f"{path} is corrupt (not JSON); run the experiment again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise QnasError(f"{path} is not a qnas experiment manifest")
    return manifest


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
        else:
            run_ablation(experiment, out, echo, resume, progress)
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
        from .report import write_report

        path = write_report(out)
        echo(f"report: {path}")
    return out


def resolved_settings(experiment: Experiment) -> dict:
    """The settings the runs will use, defaults filled in (recorded in experiment.json)."""
    from ..nas.search import SearchConfig
    from ..train import RetrainConfig

    s = experiment.settings
    if experiment.kind == "blocks":
        from ..bench.blocks import BlockBenchConfig

        config = asdict(BlockBenchConfig(**s.bench))
        return {"bench": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
                "quadraconv": s.quadraconv}
    if experiment.kind == "nas":
        first = s.targets[0]
        search = SearchConfig(**_search_settings(s, experiment.seed, space=s.spaces[0],
                                                 device=first.device,
                                                 latency=first.latency_ms)).as_dict()
        for key in ("device", "latency", "space", "supernet", "lut_cache_dir"):
            search.pop(key, None)
        out = {"search": search, "retrain_epochs": s.retrain_epochs}
        if s.retrain_epochs:
            out["retrain"] = RetrainConfig(epochs=s.retrain_epochs, data=s.data,
                                           seed=experiment.seed, resolution=s.resolution,
                                           **s.retrain).as_dict()
        return out
    return {"train": RetrainConfig(data=s.data, seed=s.seeds[0], resolution=s.resolution,
                                   **s.train).as_dict()}


# --- Table II -------------------------------------------------------------------------------------

def run_blocks(settings: BlocksSettings, out: Path, echo, progress: bool = False) -> None:
    from ..bench import blocks

    config = blocks.BlockBenchConfig(**settings.bench)
    echo(f"blocks: {', '.join(config.kinds)} at C={list(config.channels)}, {config.layers} "
         f"layers, batch {config.batch}, {config.resolution}², {config.threads} threads")
    table = blocks.run_block_bench(config, progress=progress)
    blocks.write_csv_atomic(table, out / BLOCKS_CSV)
    for line in blocks.goal_summary(table):
        echo(line)
    if settings.quadraconv:
        conv = blocks.run_quadraconv_bench(config, progress=progress)
        blocks.write_csv_atomic(conv, blocks.companion_path(out / BLOCKS_CSV))


# --- Table III ------------------------------------------------------------------------------------

def _search_settings(settings: NasSettings, seed: int, **changes) -> dict:
    search = dict(settings.search)
    search["optim"] = dict(search["optim"])
    return {"data": settings.data, "resolution": settings.resolution, "seed": seed,
            **search, **changes}


def _has_checkpoint(folder: Path) -> bool:
    from ..runtime.checkpoints import CheckpointStore

    return folder.is_dir() and CheckpointStore(folder).exists()


def _warmup(settings: NasSettings, seed: int, space: str, name: str, out: Path, echo,
            resume: bool, progress: bool) -> Path | None:
    """One warm-up per space (None: the YAML asks for none)."""
    from ..nas.search import SUPERNET, SearchConfig, train_supernet

    config = SearchConfig(**_search_settings(settings, seed, space=space))
    if config.warmup_epochs == 0:
        return None
    folder = out / "warmup" / name
    if resume and (folder / SUPERNET).is_file():
        echo(f"[{name}] warm-up: reusing {folder / SUPERNET}")
        return folder / SUPERNET
    echo(f"[{name}] warm-up: {config.warmup_epochs} epochs on {config.data} → {folder}")
    path = train_supernet(config, out=folder, resume=resume and _has_checkpoint(folder),
                          progress=progress, echo=lambda m: echo(f"[{name}] {m}"))
    if path is not None and settings.checkpoints == "last":
        _prune(folder, keep=None)           # supernet.pt holds the warmed-up weights
    return path


def _prune(folder: Path, keep: str | None) -> None:
    """Delete the search checkpoints in ``folder`` except the one named ``keep``."""
    from ..runtime.checkpoints import CheckpointStore, checksum_path

    for path in CheckpointStore(folder).paths():
        if path.name != keep:
            path.unlink(missing_ok=True)
            checksum_path(path).unlink(missing_ok=True)


def run_nas(experiment: Experiment, out: Path, echo, resume: bool = False,
            progress: bool = False) -> pd.DataFrame:
    """Table III (see the module doc); returns the results table (also ``results.csv``)."""
    from ..nas.search import latency_table
    from ..space import load_space
    from ..predictors import get

    settings: NasSettings = experiment.settings
    rows: list[dict] = []
    for spec, name in zip(settings.spaces, settings.space_names):
        space = load_space(spec)
        ranges = {}
        for target in settings.targets:
            table = latency_table(space, get(target.device))
            ranges[target] = (table.min_ms(), table.max_ms())
        feasible = [t for t in settings.targets if ranges[t][0] <= t.latency_ms]
        supernet = None
        if feasible:
            supernet = _warmup(settings, experiment.seed, spec, name, out, echo, resume,
                               progress)
        for target in settings.targets:
            smallest, largest = ranges[target]
            base = {"space": name, "macro": space.macro, "device": target.device,
                    "budget_ms": target.latency_ms, "smallest_ms": smallest,
                    "largest_ms": largest, "budget_binds": largest > target.latency_ms}
            if target not in feasible:
                echo(f"[{name} {target.label}] infeasible: the smallest child takes "
                     f"{smallest:.4g} ms")
                rows.append({**base, "status": f"infeasible (smallest {smallest:.4g} ms)",
                             "within_budget": False})
            else:
                rows.append({**base, **_search_one(settings, experiment.seed, spec, name,
                                                   target, supernet, out, echo, resume,
                                                   progress)})
            write_csv_atomic(pd.DataFrame(rows), out / RESULTS)
    return pd.DataFrame(rows)


def _search_one(settings: NasSettings, seed: int, spec: str, name: str, target: Target,
                supernet: Path | None, out: Path, echo, resume: bool, progress: bool) -> dict:
    from ..nas.search import BEST, SearchConfig, search

    folder = out / "runs" / f"{name}-{target.label}"
    tag = f"[{name} {target.label}]"
    if resume and (folder / BEST).is_file():
        echo(f"{tag} reusing {folder / BEST}")
    else:
        changes = {"space": spec, "device": target.device, "latency": target.latency_ms}
        if supernet is not None:
            changes.update(supernet=str(supernet), warmup_epochs=0)
        config = SearchConfig(**_search_settings(settings, seed, **changes))
        echo(f"{tag} search: {config.epochs} epochs → {folder}")
        result = search(config, out=folder, resume=resume and _has_checkpoint(folder),
                        progress=progress, echo=lambda m: echo(f"{tag} {m}"))
        if not result.finished:
            raise QnasError(f"{tag} the search stopped early; continue the experiment with "
                            f"--resume")
    row = evaluate_best(folder / BEST, out)
    if settings.retrain_epochs:
        row.update(_retrain_one(settings, seed, folder, tag, echo, resume, progress))
    if settings.checkpoints == "last":
        named = json.loads((folder / BEST).read_text()).get("supernet_checkpoint")
        _prune(folder, keep=Path(named).name if named else None)
    echo(f"{tag} {row['ops_by_stage']}: top-1 {row['val_top1']:.1f}% (inherited), "
         f"{row['predicted_ms']:.4g} ms predicted, {row['macs_M']:.1f} MMACs, "
         f"{'within' if row['within_budget'] else 'OVER'} budget")
    return row


def evaluate_best(best_path: Path, root: Path | None = None) -> dict:
    """A results row for one search: architecture, inherited top-1, MACs and parameters of the
    deployment network (the space's input shape and classes), predicted latency on every
    device, within-budget flag."""
    from ..deploy import count_macs
    from ..nas.best import load_best

    best = load_best(best_path)
    raw = best.raw
    deploy = best.space.build_child(best.ops).eval()
    kept = [without_identity(stage) for stage in best.space.stage_ops(best.ops)]
    log_path = best_path.parent / "search_log.csv"
    seconds = float(pd.read_csv(log_path)["seconds"].sum()) if log_path.is_file() else math.nan
    row = {
        "status": "ok",
        "ops": " ".join(best.ops),
        "ops_by_stage": " | ".join(" ".join(stage) or "-" for stage in kept),
        "depths": "-".join(str(len(stage)) for stage in kept),
        "val_top1": best.val_top1,
        "params_M": sum(p.numel() for p in deploy.parameters()) / 1e6,
        "macs_M": count_macs(deploy, best.input_shape) / 1e6,
        "predicted_ms": best.predicted_latency_ms,
        "lut_ms": float(raw.get("lut_latency_ms", math.nan)),
        "within_budget": bool(raw.get("within_budget", True)
                              and best.predicted_latency_ms <= best.target_latency_ms),
        "predictor": f"{raw['predictor'].get('source')} {raw['predictor'].get('version')}",
        "search_seconds": seconds,
        "best_json": str(best_path.relative_to(root)) if root is not None else str(best_path),
    }
    row[f"ms_{best.device}"] = best.predicted_latency_ms
    for device, value in raw["other_devices"].items():
        row[f"ms_{device}"] = value.get("latency_ms", math.nan)
    return row


def _retrain_started(folder: Path) -> bool:
    """Whether ``folder`` holds an interrupted ``qnas retrain`` run (its last*.pt)."""
    return folder.is_dir() and any(folder.glob("last*.pt"))


def _retrain_one(settings: NasSettings, seed: int, folder: Path, tag: str, echo,
                 resume: bool, progress: bool) -> dict:
    from ..train import RetrainConfig, retrain
    from ..train.retrain import SUMMARY

    train_out = folder / "retrain"
    if resume and (train_out / SUMMARY).is_file():
        summary = json.loads((train_out / SUMMARY).read_text())
        return {"retrain_top1": summary["val_top1"], "retrain_epochs": settings.retrain_epochs,
                "retrain_seconds": summary.get("train_seconds", math.nan)}
    config = RetrainConfig(epochs=settings.retrain_epochs, data=settings.data, seed=seed,
                           resolution=settings.resolution, **settings.retrain)
    echo(f"{tag} retrain: {config.epochs} epochs → {train_out}")
    result = retrain(folder / "best.json", config, out=train_out,
                     resume=resume and _retrain_started(train_out), progress=progress,
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
    from ..nas.best import write_best
    from ..space import load_space
    from ..predictors import get

    s: AblationSettings = experiment.settings
    raw = ablation_space(experiment, kernel)
    space_path = folder / "space.yaml"
    write_text_atomic(space_path, yaml.safe_dump(raw, sort_keys=False))
    space = load_space(str(space_path.resolve()))
    op = space.candidates[0]
    ops = [op] * space.num_layers
    deploy = space.build_child(ops).eval()
    predictions = {}
    for device in s.devices:
        p = get(device).predict(deploy, space.input_shape)
        predictions[device] = {"latency_ms": float(p.latency_ms), "source": p.source,
                               "version": p.version, "known_error": p.known_error}
    first = s.devices[0]
    record = {
        "space": {"name": space.name, "hash": space.hash, "source": str(space_path.resolve())},
        "ops": ops,
        "layers": [{"index": slot.index, "name": slot.name, "op": op} for slot in space.layers],
        "device": first,
        "input_shape": list(space.input_shape),
        "target_latency_ms": predictions[first]["latency_ms"],
        "predicted_latency_ms": predictions[first]["latency_ms"],
        "predictor": {k: predictions[first][k] for k in ("source", "version", "known_error")},
        "other_devices": {d: v for d, v in predictions.items() if d != first},
        # not searched: no supernet, no inherited weights (retrain from scratch only)
        "val_top1": 0.0,
        "evaluation": {"dataset": s.data, "resolution": s.resolution, "split": "validation",
                       "weights": "none: a fixed architecture of the kernel-size ablation; "
                                  "see retrain/retrain.json for its trained top-1"},
        "supernet_checkpoint": "",
        "seed": seed,
        "fixed_architecture": True,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return write_best(folder / "best.json", record)


def run_ablation(experiment: Experiment, out: Path, echo, resume: bool = False,
                 progress: bool = False) -> pd.DataFrame:
    """Table IV (see the module doc); returns the results table (also ``results.csv``)."""
    from ..deploy import count_macs
    from ..nas.best import load_best
    from ..train import RetrainConfig, retrain
    from ..train.retrain import SUMMARY

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
                config = RetrainConfig(data=s.data, seed=seed, resolution=s.resolution,
                                       **s.train)
                echo(f"{tag} training QuadraNet C={s.width} depths {s.depths}, all "
                     f"k{kernel}: {config.epochs} epochs → {train_out}")
                result = retrain(best_path, config, out=train_out,
                                 resume=resume and _retrain_started(train_out),
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
            for device, value in best.raw["other_devices"].items():
                row[f"ms_{device}"] = value["latency_ms"]
            echo(f"{tag} top-1 {top1:.1f}%, {row['params_M']:.2f} M params, "
                 f"{row['macs_M']:.0f} MMACs")
            rows.append(row)
            write_csv_atomic(pd.DataFrame(rows), out / RESULTS)
    return pd.DataFrame(rows)


__all__ = ["run_experiment", "run_blocks", "run_nas", "run_ablation", "evaluate_best",
           "read_manifest", "default_out", "ablation_space", "MANIFEST", "RESULTS", "BLOCKS_CSV"]
