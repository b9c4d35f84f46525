"""What a results folder holds and how its tables are made: the file names, the manifest, the
results row of one best.json, and the latency–accuracy front. Everything in
:mod:`qnas.experiments` that writes or reads results builds on this module (and nothing here
imports the rest of the package, so the modules above it form no cycle)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..deploy import count_macs
from ..errors import QnasError
from ..models.ops import without_identity
from ..nas.best import load_best

MANIFEST = "experiment.json"          # an experiment's provenance and status
MANIFEST_FORMAT = "qnas.experiment"
EFFECTIVE_YAML = "experiment.yaml"    # the experiment file as run
RESULTS = "results.csv"
BLOCKS_CSV = "blocks.csv"
PARETO_CSV = "pareto.csv"
PARETO_PNG = "pareto.png"
PARETO_JSON = "pareto.json"           # a Pareto search's provenance
PARETO_FORMAT = "qnas.pareto"
REPORT = "report.md"
SEARCH_FILES = ("search_log.csv", "alpha_history.json", "best.json")


def read_json(path: Path) -> dict | None:
    """A JSON file's object, or None when it is missing or unreadable (reports skip it)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None


def read_manifest(folder: str | Path) -> dict:
    """An experiment's ``experiment.json`` (one-line QnasError when missing or foreign)."""
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


def evaluate_best(best_path: Path, root: Path | None = None) -> dict:
    """A results row for one search: architecture, inherited top-1, MACs and parameters of the
    deployment network (the space's input shape and classes), predicted latency on every
    device, within-budget flag (the rule of :func:`qnas.nas.latency.within_budget`)."""
    best = load_best(best_path)
    record = best.record
    deploy = best.space.build_child(best.ops).eval()
    kept = [without_identity(stage) for stage in best.space.stage_ops(best.ops)]
    log_path = best_path.parent / "search_log.csv"
    seconds = float(pd.read_csv(log_path)["seconds"].sum()) if log_path.is_file() else math.nan
    row = {
        "status": "ok",
        "ops": " ".join(best.ops),
        "ops_by_stage": " | ".join(" ".join(stage) or "-" for stage in kept),
        "depths": "-".join(str(len(stage)) for stage in kept),
        "val_top1": best.val_top1 if best.val_top1 is not None else math.nan,
        "params_M": sum(p.numel() for p in deploy.parameters()) / 1e6,
        "macs_M": count_macs(deploy, best.input_shape) / 1e6,
        "predicted_ms": best.predicted_latency_ms,
        "lut_ms": record.lut_latency_ms if record.lut_latency_ms is not None else math.nan,
        "within_budget": bool(record.within_budget),
        "predictor": f"{record.predictor.get('source')} {record.predictor.get('version')}",
        "search_seconds": seconds,
        "best_json": str(best_path.relative_to(root)) if root is not None else str(best_path),
    }
    row[f"ms_{best.device}"] = best.predicted_latency_ms
    for device, value in record.other_devices.items():
        row[f"ms_{device}"] = value.get("latency_ms", math.nan)
    return row


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


def pareto_table(out: Path, paths: Sequence[Path]) -> pd.DataFrame:
    """One row per best.json: budget, predicted and table latency, top-1, MACs, on the front."""
    rows = []
    for path in paths:
        row = {"budget_ms": load_best(path).target_latency_ms}
        row.update(evaluate_best(Path(path), out))
        rows.append(row)
    frame = pd.DataFrame(rows)
    front = set(pareto_front(frame["predicted_ms"], frame["val_top1"]))
    frame["on_front"] = [i in front for i in range(len(frame))]
    return frame
