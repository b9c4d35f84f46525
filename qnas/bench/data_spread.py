"""Does a dataset tell architectures apart? (``qnas bench data-spread``)

A search can only prefer one architecture over another when their accuracies differ on the
search's data. This benchmark trains, with ``qnas retrain``'s recipe and the same epochs:

- the **smallest** child of the space (every layer the identity) and the **largest** (every
  layer its slowest op on the device);
- a pair of children of **equal latency** on the device (within ``band``), drawn from the
  space: the one with the largest mean kernel size and the one with the smallest, among
  random children near the middle of the space's latency range;

and prints their validation top-1 (mean over seeds), the smallest-vs-largest spread and the
equal-latency pair's difference. Every child is written as a fixed-architecture best.json into
``out/<name>/`` and trained into ``out/<name>/retrain-s<seed>/`` (finished trainings are
reused when run again).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..models.ops import is_identity, kernel_and_expansion
from ..nas.best import BestRecord
from ..nas.latency import latency_table
from ..predictors.kernels import count_macs
from ..predictors.registry import get
from ..runtime.files import write_csv_atomic
from ..space import load_space
from ..train.config import RetrainConfig
from ..train.retraining import SUMMARY, has_checkpoint, retrain
from .config import DataSpreadConfig

CSV = "data_spread.csv"


def _mean_kernel(ops) -> float:
    kernels = [kernel_and_expansion(op)[0] for op in ops if not is_identity(op)]
    return float(np.mean(kernels)) if kernels else 0.0


def _mean_expansion(ops) -> float:
    values = [kernel_and_expansion(op)[1] for op in ops if not is_identity(op)]
    return float(np.mean(values)) if values else 0.0


def children(config: DataSpreadConfig, samples: int = 4000, seed: int = 0) -> dict[str, list]:
    """The four children (name → ops) the benchmark trains."""
    space = load_space(config.space)
    table = latency_table(space, get(config.device))
    ms = table.ms.numpy()
    allowed = table.mask.numpy()
    smallest = [next((op for op in slot.ops if is_identity(op)), slot.ops[0])
                for slot in space.layers]
    largest = [space.candidates[int(np.where(allowed[l], ms[l], -np.inf).argmax())]
               for l in range(space.num_layers)]
    # random children, uniform per layer; equal latency = within band of the middle latency
    rng = np.random.default_rng(seed)
    target = table.min_ms() + 0.5 * (table.max_ms() - table.min_ms())
    pool = []
    for _ in range(samples):
        ops = [slot.ops[int(rng.integers(len(slot.ops)))] for slot in space.layers]
        latency = table.latency_of(ops)
        if abs(latency - target) <= config.band * target:
            pool.append(ops)
    if len(pool) < 2:
        raise ValueError(f"fewer than two random children within {config.band:.0%} of "
                         f"{target:.4g} ms; widen --band")
    large_kernels = max(pool, key=lambda ops: (_mean_kernel(ops), -_mean_expansion(ops)))
    small_kernels = min(pool, key=lambda ops: (_mean_kernel(ops), -_mean_expansion(ops)))
    return {"smallest": smallest, "largest": largest, "equal-latency large kernels":
            large_kernels, "equal-latency small kernels": small_kernels}


def data_spread(config: DataSpreadConfig, out: str | Path,
                echo: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Train the four children; returns the table (also ``out/data_spread.csv``)."""
    echo = echo or (lambda message: None)
    out = Path(out)
    space = load_space(config.space)
    rows = []
    for name, ops in children(config).items():
        folder = out / name.replace(" ", "-")
        best_path = folder / "best.json"
        if not best_path.is_file():
            record = BestRecord.of_fixed_architecture(
                space, ops, config.device, dataset=config.data, seed=0,
                why=f"the {name} child of qnas bench data-spread")
            record.write(best_path)
        record = BestRecord.read(best_path)
        deploy = space.build_child(ops).eval()
        top1 = []
        for seed in range(config.seeds):
            train_out = folder / f"retrain-s{seed}"
            if (train_out / SUMMARY).is_file():
                top1.append(json.loads((train_out / SUMMARY).read_text())["val_top1"])
                continue
            echo(f"[{name}, seed {seed}] {config.epochs} epochs on {config.data} → {train_out}")
            result = retrain(best_path, RetrainConfig(epochs=config.epochs, data=config.data,
                                                      seed=seed, threads=config.threads),
                             out=train_out, resume=has_checkpoint(train_out),
                             echo=lambda m, n=name: echo(f"[{n}] {m}"))
            top1.append(result.top1)
        rows.append({"child": name, "latency_ms": record.predicted_latency_ms,
                     "params_M": sum(p.numel() for p in deploy.parameters()) / 1e6,
                     "macs_M": count_macs(deploy, space.input_shape) / 1e6,
                     "mean_kernel": _mean_kernel(ops), "mean_expansion": _mean_expansion(ops),
                     "blocks": sum(not is_identity(op) for op in ops),
                     "top1_mean": float(np.mean(top1)),
                     "top1_std": float(np.std(top1, ddof=1)) if len(top1) > 1 else float("nan"),
                     "seeds": len(top1), "top1": " ".join(f"{v:.1f}" for v in top1)})
    table = pd.DataFrame(rows)
    table.attrs.update(vars(config))
    write_csv_atomic(table, out / CSV)
    return table


def spread_summary(table: pd.DataFrame) -> list[str]:
    """The two numbers the benchmark is for, in words."""
    top1 = table.set_index("child")["top1_mean"]
    spread = top1["largest"] - top1["smallest"]
    pair = top1["equal-latency large kernels"] - top1["equal-latency small kernels"]
    return [f"smallest vs largest child: {top1['smallest']:.1f}% vs {top1['largest']:.1f}% top-1,"
            f" spread {spread:+.1f} points",
            f"equal latency, large vs small kernels: {top1['equal-latency large kernels']:.1f}% "
            f"vs {top1['equal-latency small kernels']:.1f}%, difference {pair:+.1f} points"]
