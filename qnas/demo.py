"""The whole story on the embedded data, as ``make demo`` runs it:

search (cortexA76, 300 ms, digits) → export (verified .pt / ONNX / TorchScript + model card) →
a short retrain → latency report (predicted on every device, measured on this host).

Every step writes into one folder (default ``runs/demo``) and is skipped when its result is
already there; an interrupted step continues from its checkpoint — running the demo again
finishes what a previous run left. :func:`run_demo` is what the ``qnas demo`` command calls.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .deploy import export_child, measure_best
from .nas.best import load_best
from .nas.config import SearchConfig
from .nas.search import search
from .nas.sweep import has_checkpoint
from .train.config import RetrainConfig
from .train.retraining import SUMMARY, retrain
from .train.retraining import has_checkpoint as retrain_has_checkpoint

DEFAULT_OUT = Path("runs") / "demo"
DEVICE, BUDGET = "cortexA76", "300ms"


def artefact_sizes(folder: Path) -> dict[str, int]:
    """Bytes of a search folder's artefacts: best.json, child.pt, each supernet checkpoint."""
    from .runtime.checkpoints import CheckpointStore

    sizes = {name: (folder / name).stat().st_size for name in ("best.json", "child.pt")
             if (folder / name).is_file()}
    for path in CheckpointStore(folder).paths():
        sizes[path.name] = path.stat().st_size
    return sizes


@dataclass
class DemoResult:
    out: Path
    best_path: Path
    export_dir: Path
    retrain_dir: Path
    seconds: dict = field(default_factory=dict)       # per step
    facts: dict = field(default_factory=dict)         # the numbers worth printing


def run_demo(out: str | Path = DEFAULT_OUT, progress: bool = True,
             echo: Callable[[str], None] | None = None, search_config=None,
             retrain_config=None, measure_shape=None) -> DemoResult:
    """Run (or finish) the demo in ``out``; returns where everything went and the numbers.

    ``search_config`` / ``retrain_config`` / ``measure_shape`` replace the defaults (the search
    of ``qnas search --device cortexA76 --latency 300ms``, ``qnas retrain``'s recipe, best.json's
    deployment shape) — for tests and other data."""
    echo = echo or print
    out = Path(out)
    search_dir, result = out / "search", DemoResult(out, out / "search" / "best.json",
                                                    out / "search" / "export",
                                                    out / "search" / "retrain")

    def step(name: str, done: bool, work: Callable[[], None]) -> None:
        if done:
            echo(f"[{name}] already done in {out}: skipped")
            return
        echo(f"[{name}]")
        started = time.perf_counter()
        work()
        result.seconds[name] = time.perf_counter() - started
        echo(f"[{name}] {result.seconds[name]:.0f} s")

    # 1. search
    step("search", result.best_path.exists(), lambda: search(
        search_config or SearchConfig(device=DEVICE, latency=BUDGET), out=search_dir,
        resume=has_checkpoint(search_dir), progress=progress, echo=echo))
    best = load_best(result.best_path)
    result.facts["sizes"] = artefact_sizes(search_dir)
    result.facts.update(ops=best.space.describe_ops(best.ops),
                        predicted_ms=best.predicted_latency_ms, budget_ms=best.target_latency_ms,
                        inherited_top1=best.val_top1, predictor=best.raw["predictor"])

    # 2. export (verified before anything is written)
    step("export", (result.export_dir / "MODEL_CARD.md").exists(),
         lambda: export_child(result.best_path, out=result.export_dir, echo=echo))

    # 3. a short retrain (the defaults of 'qnas retrain')
    step("retrain", (result.retrain_dir / SUMMARY).exists(), lambda: retrain(
        result.best_path, retrain_config or RetrainConfig(), out=result.retrain_dir,
        resume=retrain_has_checkpoint(result.retrain_dir), progress=progress,
        echo=echo))
    summary = json.loads((result.retrain_dir / SUMMARY).read_text())
    result.facts.update(retrained_top1=summary["val_top1"], retrain_epochs=summary["config"]
                        ["epochs"])

    # 4. latency: measured here beside the host-cpu prediction (the others are in best.json)
    def measure():
        measurement = measure_best(result.best_path, measure_shape, echo=echo)
        result.facts.update(measured_pytorch_ms=measurement.pytorch_ms,
                            measured_onnxruntime_ms=measurement.onnxruntime_ms,
                            table_sum_error=measurement.prediction_error(),
                            measurement=measurement)

    step("latency", False, measure)
    return result
