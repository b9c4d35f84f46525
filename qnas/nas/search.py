"""The search, end to end, in the order the data flows:

space (YAML) → supernet → latency table from the device's predictor → search loop (weight
steps, arch steps, loss with E[LAT]) → checkpoint every epoch → derive under the hard
constraint → evaluate the child with inherited weights → ``best.json``.

Everything is a function a notebook can call (:func:`search`, :func:`train_supernet`); the CLI
only parses and reports. A run directory holds ``checkpoint.pt`` (rewritten atomically after
every epoch: supernet with α, both optimisers, schedulers, RNG states, epoch/step counters and
the log), ``search_log.csv`` (one row per epoch), ``config.json`` and, at the end, ``best.json``.
``resume=True`` continues from the checkpoint and ends exactly where an uninterrupted run would
(same seed, same machine, CPU): batches and sampled paths are pure functions of (seed, epoch,
step).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from timm.scheduler import CosineLRScheduler
from tqdm.auto import tqdm

from .. import __version__
from ..errors import QnasError
from .best import write_best
from .derive import Derived, argmax_choice, derive_architecture
from .evaluator import (SearchData, epoch_loader, evaluate_top1, has_batchnorm,
                        recalibrate_batchnorm, search_data)
from .files import save_torch_atomic, write_csv_atomic, write_text_atomic
from .latency import (LatencyLoss, TableView, entropy, expected_latency_ms, format_ms,
                      parse_latency, table_view)
from .proxyless import ProxylessConfig, ProxylessStrategy
from .space import SearchSpace, load_space
from .supernet import Supernet

# Defaults for the embedded digits data: the whole search (LUT, warm-up, search, derivation,
# every device's prediction) fits in 10 minutes on 2 CPU cores.
DEFAULT_WARMUP_EPOCHS = 6
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 64
DEFAULT_LOSS = "mul-log"

CHECKPOINT = "checkpoint.pt"
LOG = "search_log.csv"
BEST = "best.json"
SUPERNET = "supernet.pt"
CHECKPOINT_FORMAT = "qnas-search-checkpoint"
SUPERNET_FORMAT = "qnas-supernet"
WEIGHT_DATA, ARCH_DATA, VAL_DATA = 0, 1, 2


@dataclass
class SearchConfig:
    """Everything that defines a search (and a warm-up-only run, with ``device=None``)."""

    device: str | None = None                 # target device (predictor name)
    latency: float | str | None = None        # budget: ms, or "300ms" / "0.3s" / "300000us"
    space: str = "quadranet"                  # space name or YAML path
    data: str = "digits"
    resolution: int = 32                      # training resolution (latency: space's shape)
    epochs: int = DEFAULT_EPOCHS              # search epochs (after the warm-up)
    warmup_epochs: int | None = None          # None: DEFAULT_WARMUP_EPOCHS, 0 with a supernet
    batch_size: int = DEFAULT_BATCH_SIZE
    loss: str = DEFAULT_LOSS                  # add-linear | mul-log | hinge
    lam: float = 0.1                          # λ of add-linear / hinge
    beta: float = 0.6                         # β of mul-log
    seed: int = 0
    arch_fraction: float = 0.2                # of the training split, for α
    supernet: str | None = None               # a warmed-up supernet (train-supernet output)
    lut_cache_dir: str | None = None
    optim: ProxylessConfig = field(default_factory=ProxylessConfig)

    def __post_init__(self):
        if isinstance(self.optim, dict):
            self.optim = ProxylessConfig(**{k: tuple(v) if k == "arch_betas" else v
                                            for k, v in self.optim.items()})
        if self.latency is not None and not isinstance(self.latency, (int, float)):
            self.latency = parse_latency(self.latency)
        elif self.latency is not None:
            self.latency = parse_latency(f"{float(self.latency)!r}ms")
        for name in ("epochs", "batch_size", "resolution"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "epochs" else 1):
                raise QnasError(f"{name} must be a {'non-negative' if name == 'epochs' else 'positive'}"
                                f" integer, got {value!r}")
        if self.warmup_epochs is None:
            self.warmup_epochs = 0 if self.supernet else DEFAULT_WARMUP_EPOCHS
        if not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise QnasError(f"warmup epochs must be a non-negative integer, got "
                            f"{self.warmup_epochs!r}")
        if not 0 < self.arch_fraction < 1:
            raise QnasError(f"arch_fraction must be between 0 and 1, got {self.arch_fraction}")
        if self.optim.arch_every < 1:
            raise QnasError("arch_every must be ≥ 1 (one arch step per that many weight steps)")
        if self.device is not None and self.latency is None:
            raise QnasError("a search needs a latency budget, e.g. --latency 300ms")
        if self.device is not None:
            LatencyLoss(self.loss, self.latency, self.lam, self.beta)   # validates the form

    def as_dict(self) -> dict:
        out = asdict(self)
        out["optim"] = self.optim.as_dict()
        out["optim"]["arch_betas"] = list(self.optim.arch_betas)
        return out

    def identity(self) -> dict:
        """What must match for ``resume`` (the cache folder may move)."""
        out = self.as_dict()
        out.pop("lut_cache_dir")
        return out


@dataclass
class SearchResult:
    """What :func:`search` returns. ``finished`` is False when it stopped early on request."""

    out: Path
    finished: bool
    log: pd.DataFrame
    best_path: Path | None = None
    best: dict | None = None
    derived: Derived | None = None
    table: TableView | None = None
    seconds: float = 0.0

    def layer_table(self) -> pd.DataFrame:
        """The chosen op per layer, its latency on the target device and its probability."""
        if self.best is None:
            raise QnasError("the search has not finished: resume it to get an architecture")
        rows = []
        for layer in self.best["layers"]:
            rows.append({"layer": layer["name"], "op": layer["op"],
                         "ms": layer.get("ms"), "p": layer.get("p")})
        return pd.DataFrame(rows)


def default_out(config: SearchConfig) -> Path:
    space = Path(config.space).stem
    if config.device is None:
        return Path("runs") / f"supernet-{space}-s{config.seed}"
    return Path("runs") / f"{space}-{config.device}-{config.latency:g}ms-s{config.seed}"


# --- the run ----------------------------------------------------------------------------------

class _Run:
    """One search (or warm-up-only) run: state, the epoch loop, checkpoints."""

    def __init__(self, config: SearchConfig, out: Path, echo: Callable[[str], None]):
        self.config, self.out, self.echo = config, Path(out), echo
        c = config
        # 1. space
        self.space: SearchSpace = load_space(c.space)
        # the device's predictor first: an unknown device fails before any work
        self.predictor = None
        if c.device is not None:
            from ..predictors import get

            self.predictor = get(c.device)
        # 2. data and supernet
        self.data: SearchData = search_data(c.data, c.resolution, c.seed, c.arch_fraction)
        torch.manual_seed(c.seed)
        self.supernet = Supernet(self.space, self.data.num_classes, c.optim.alpha_init_std)
        if c.supernet:
            load_supernet_weights(self.supernet, c.supernet)
        # 3. latency table at the deployment shape
        self.table: TableView | None = None
        self.latency_loss: LatencyLoss | None = None
        if self.predictor is not None:
            self.table = latency_table(self.space, self.predictor, c.lut_cache_dir)
            check_budget(self.table, c.latency, self.space, echo)
            self.latency_loss = LatencyLoss(c.loss, c.latency, c.lam, c.beta)
        # 4. the strategy
        self.strategy = ProxylessStrategy(self.supernet, c.optim, c.seed, self.table,
                                          self.latency_loss)
        self.total_epochs = c.warmup_epochs + (c.epochs if self.table is not None else 0)
        self.steps_per_epoch = len(epoch_loader(self.data.weight_train, c.batch_size, c.seed,
                                                0, WEIGHT_DATA))
        self.epoch = 0
        self.weight_steps = 0
        self.arch_steps = 0
        self.rows: list[dict] = []
        self.scheduler = None
        self.scheduler_phase = None

    # --- schedules ------------------------------------------------------------------------
    def _phase(self, epoch: int) -> tuple[str, int, int]:
        """(name, first epoch, number of epochs) of the phase ``epoch`` belongs to."""
        warm = self.config.warmup_epochs
        if epoch < warm:
            return "warmup", 0, warm
        return "search", warm, self.total_epochs - warm

    def _set_lr(self, epoch: int, step_in_epoch: int) -> float:
        name, first, length = self._phase(epoch)
        if self.scheduler_phase != name:
            # a fresh cosine per phase (ProxylessNAS restarts it after the warm-up)
            self.scheduler = CosineLRScheduler(
                self.strategy.weight_optimizer, t_initial=max(1, length * self.steps_per_epoch),
                lr_min=0.0, t_in_epochs=False)
            self.scheduler_phase = name
        self.scheduler.step_update((epoch - first) * self.steps_per_epoch + step_in_epoch)
        return self.strategy.weight_optimizer.param_groups[0]["lr"]

    # --- one epoch ------------------------------------------------------------------------
    def run_epoch(self, bar) -> dict:
        c, epoch = self.config, self.epoch
        phase, _, _ = self._phase(epoch)
        started = time.perf_counter()
        loader = epoch_loader(self.data.weight_train, c.batch_size, c.seed, epoch, WEIGHT_DATA)
        arch_batches = self._arch_batches(epoch) if phase == "search" else None
        sums = {"loss": 0.0, "correct": 0, "count": 0, "arch_ce": 0.0, "arch_loss": 0.0,
                "arch_n": 0}
        for i, (images, labels) in enumerate(loader):
            lr = self._set_lr(epoch, i)
            stats = self.strategy.weight_step(images, labels, self.weight_steps,
                                              uniform=phase == "warmup")
            self.weight_steps += 1
            sums["loss"] += stats["loss"] * stats["count"]
            sums["correct"] += stats["correct"]
            sums["count"] += stats["count"]
            if arch_batches is not None and (i + 1) % c.optim.arch_every == 0:
                arch_images, arch_labels = next(arch_batches)
                arch = self.strategy.arch_step(arch_images, arch_labels, self.arch_steps)
                self.arch_steps += 1
                sums["arch_ce"] += arch["ce"]
                sums["arch_loss"] += arch["loss"]
                sums["arch_n"] += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{phase} ep {epoch + 1}/{self.total_epochs} "
                                    f"loss {stats['loss']:.3f}", refresh=False)
        row = {"epoch": epoch + 1, "phase": phase, "lr": lr,
               "train_loss": sums["loss"] / max(sums["count"], 1),
               "train_top1": 100.0 * sums["correct"] / max(sums["count"], 1),
               "arch_ce": sums["arch_ce"] / sums["arch_n"] if sums["arch_n"] else float("nan"),
               "arch_loss": sums["arch_loss"] / sums["arch_n"] if sums["arch_n"] else float("nan"),
               "arch_steps": sums["arch_n"]}
        row.update(self.measure_alpha())
        row["val_top1_argmax"] = self.validate_argmax()
        row["seconds"] = time.perf_counter() - started
        self.epoch += 1
        self.rows.append(row)
        return row

    def _arch_batches(self, epoch: int):
        cycle = 0
        while True:
            loader = epoch_loader(self.data.arch_train, self.config.batch_size, self.config.seed,
                                  epoch * 1000 + cycle, ARCH_DATA)
            yield from loader
            cycle += 1

    def measure_alpha(self) -> dict:
        net = self.supernet
        out = {"entropy": entropy(net.alpha, net.mask)}
        if self.table is not None:
            with torch.no_grad():
                out["expected_ms"] = float(expected_latency_ms(net.alpha, self.table))
            out["argmax_ms"] = self.table.latency_of(argmax_choice(net.alpha, net.mask))
        return out

    def validate_argmax(self) -> float:
        net = self.supernet
        net.set_paths(argmax_choice(net.alpha, net.mask))
        loader = epoch_loader(self.data.val, 256, self.config.seed, 0, VAL_DATA, shuffle=False)
        top1 = evaluate_top1(net, loader)
        net.clear_paths()
        return top1

    # --- checkpoints ----------------------------------------------------------------------
    def checkpoint(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT, "format_version": 1, "qnas_version": __version__,
            "config": self.config.identity(), "space": self.space.name,
            "space_hash": self.space.hash, "num_classes": self.data.num_classes,
            "epoch": self.epoch, "weight_steps": self.weight_steps,
            "arch_steps": self.arch_steps, "total_epochs": self.total_epochs,
            "supernet": self.supernet.state_dict(), "strategy": self.strategy.state_dict(),
            "scheduler": {"phase": self.scheduler_phase,
                          "state": self.scheduler.state_dict() if self.scheduler else None},
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate()},
            "rows": self.rows,
        }

    def save(self) -> None:
        save_torch_atomic(self.checkpoint(), self.out / CHECKPOINT)
        if self.rows:
            write_csv_atomic(pd.DataFrame(self.rows), self.out / LOG)

    def restore(self, path: Path) -> None:
        state = read_checkpoint(path)
        if state["config"] != self.config.identity():
            changed = sorted(k for k in set(state["config"]) | set(self.config.identity())
                             if state["config"].get(k) != self.config.identity().get(k))
            raise QnasError(f"the checkpoint in {self.out} was made with other settings "
                            f"({', '.join(changed)}); resume with the same options or use a "
                            f"new --out")
        self.supernet.load_state_dict(state["supernet"])
        self.strategy.load_state_dict(state["strategy"])
        self.epoch, self.weight_steps = state["epoch"], state["weight_steps"]
        self.arch_steps, self.rows = state["arch_steps"], list(state["rows"])
        # the cosine schedules are functions of the step: the next _set_lr rebuilds the phase's
        self.scheduler, self.scheduler_phase = None, None
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise QnasError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # noqa: BLE001 -- a truncated or foreign file
        raise QnasError(f"{path} is not a readable qnas checkpoint ({type(err).__name__})") \
            from None
    if not isinstance(state, dict) or state.get("format") not in (CHECKPOINT_FORMAT,
                                                                  SUPERNET_FORMAT):
        raise QnasError(f"{path} is not a qnas search or supernet checkpoint")
    return state


def load_supernet_weights(supernet: Supernet, path: str | Path) -> None:
    """Load a warmed-up supernet's weights (train-supernet's supernet.pt or a search
    checkpoint) into ``supernet``; α stays as it is. Refuses another space or class count."""
    state = read_checkpoint(path)
    if state["space_hash"] != supernet.space.hash:
        raise QnasError(f"supernet {path} was trained for space '{state['space']}' (hash "
                        f"{state['space_hash']}), not '{supernet.space.name}' (hash "
                        f"{supernet.space.hash}); train one with 'qnas train-supernet'")
    if state["num_classes"] != supernet.num_classes:
        raise QnasError(f"supernet {path} has {state['num_classes']} classes, the data has "
                        f"{supernet.num_classes}; train it on the same data")
    weights = state["supernet"]
    weights = {k: v for k, v in weights.items() if k != "alpha"}
    supernet.load_state_dict({**weights, "alpha": supernet.alpha.detach()}, strict=True)


def latency_table(space: SearchSpace, predictor, cache_dir=None) -> TableView:
    """The space's latency table on ``predictor``'s device at the space's deployment shape."""
    from ..predictors.lut import build_lut

    lut = build_lut(space, predictor, input_shape=space.input_shape, cache_dir=cache_dir)
    if list(lut.candidates) != list(space.candidates):
        raise QnasError(f"latency table candidates {lut.candidates} differ from the space's "
                        f"{space.candidates}; rebuild the table")
    return table_view(lut, space.allowed_mask())


def check_budget(table: TableView, target_ms: float, space: SearchSpace,
                 echo: Callable[[str], None]) -> None:
    """Fail fast on a budget nothing meets; say so when the budget does not bind."""
    smallest, largest = table.min_ms(), table.max_ms()
    if target_ms < smallest:
        raise QnasError(f"latency budget {format_ms(target_ms)} on {table.device} cannot be met "
                        f"by space '{space.name}': its smallest architecture takes "
                        f"{format_ms(smallest)}; use --latency {smallest:.4g}ms or more")
    echo(f"{table.device}: children of '{space.name}' take {format_ms(smallest)} to "
         f"{format_ms(largest)} at {'x'.join(map(str, space.input_shape))} "
         f"[{table.source} {table.version}]; budget {format_ms(target_ms)}")
    if target_ms >= largest:
        echo(f"note: the budget does not bind — even the largest child "
             f"({format_ms(largest)}) fits")


def _prepare_out(out: Path, resume: bool) -> Path | None:
    checkpoint = out / CHECKPOINT
    if resume:
        if not checkpoint.exists():
            raise QnasError(f"nothing to resume: {checkpoint} does not exist; run without "
                            f"--resume to start")
        return checkpoint
    if checkpoint.exists():
        raise QnasError(f"{out} already holds a run ({CHECKPOINT}); pass --resume to continue "
                        f"it or choose another --out")
    return None


def training_threads(threads: int | None = None) -> int:
    """Intra-op threads for training: ``threads``, else all cores but one (at least one) —
    on a small shared machine two OpenMP threads stall each other whenever one is
    descheduled (steps 10–50× slower), one thread per free core does not."""
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise QnasError(f"threads must be a positive integer, got {threads!r}")
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(torch.get_num_threads(), (cores or 1) - 1))


@contextlib.contextmanager
def _threads(threads: int | None):
    previous = torch.get_num_threads()
    torch.set_num_threads(training_threads(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _loop(run: _Run, stop_after_epochs: int | None, progress: bool) -> bool:
    """Run epochs until done (True) or ``stop_after_epochs`` in this call (False)."""
    remaining = run.total_epochs - run.epoch
    if stop_after_epochs is not None:
        remaining = min(remaining, stop_after_epochs)
    bar = tqdm(total=run.total_epochs * run.steps_per_epoch,
               initial=run.epoch * run.steps_per_epoch, unit="step", desc="search",
               disable=not progress, dynamic_ncols=True, leave=False)
    try:
        for _ in range(remaining):
            row = run.run_epoch(bar)
            run.save()
            run.echo(_row_text(row))
    finally:
        bar.close()
    return run.epoch >= run.total_epochs


def _row_text(row: dict) -> str:
    text = (f"epoch {row['epoch']:3d} {row['phase']:6s} loss {row['train_loss']:.3f} "
            f"train {row['train_top1']:5.1f}% val(argmax) {row['val_top1_argmax']:5.1f}% "
            f"H(α) {row['entropy']:.3f}")
    if "expected_ms" in row:
        text += f" E[LAT] {format_ms(row['expected_ms'])} argmax {format_ms(row['argmax_ms'])}"
    return text + f" ({row['seconds']:.0f}s)"


def search(config: SearchConfig, out: str | Path | None = None, resume: bool = False,
           stop_after_epochs: int | None = None, progress: bool = False,
           echo: Callable[[str], None] | None = None,
           threads: int | None = None) -> SearchResult:
    """Run a hardware-aware search and write ``best.json`` into ``out``.

    Args:
        config: what to search (device and latency are required).
        out: run folder (default ``runs/<space>-<device>-<budget>-s<seed>``).
        resume: continue the run in ``out`` from its last checkpoint.
        stop_after_epochs: run at most this many epochs in this call, then return with
            ``finished=False`` (resume later).
        progress: show a tqdm bar; ``echo`` receives one line per epoch and messages.
        threads: torch intra-op threads while training (default: all cores but one). Results
            are bit-identical only for the same thread count.
    """
    if config.device is None:
        raise QnasError("a search needs a target device, e.g. --device cortexA76")
    from ..predictors import get

    get(config.device)                       # an unknown device fails before anything else
    started = time.perf_counter()
    echo = echo or (lambda message: None)
    out = Path(out) if out is not None else default_out(config)
    checkpoint = _prepare_out(out, resume)
    run = _Run(config, out, echo)
    if checkpoint is not None:
        run.restore(checkpoint)
        echo(f"resumed from {checkpoint} after epoch {run.epoch}")
    else:
        write_text_atomic(out / "config.json", json.dumps(config.as_dict(), indent=2) + "\n")
    with _threads(threads):
        done = _loop(run, stop_after_epochs, progress)
        if not done:
            return SearchResult(out, False, pd.DataFrame(run.rows),
                                seconds=time.perf_counter() - started)
        derived, best = finish(run)
    best_path = write_best(out / BEST, best)
    return SearchResult(out, True, pd.DataFrame(run.rows), best_path, best | {}, derived,
                        run.table, time.perf_counter() - started)


def finish(run: _Run) -> tuple[Derived, dict]:
    """Derive under the budget, evaluate the child with inherited weights, predict it on every
    device; returns the derivation and the best.json record."""
    c, space, table, net = run.config, run.space, run.table, run.supernet
    derived = derive_architecture(net.alpha, table, c.latency)
    run.echo(f"derived: {space.describe_ops(derived.ops)} — {format_ms(derived.latency_ms)} "
             f"(budget {format_ms(c.latency)}, log p {derived.log_prob:.3f})")
    # evaluate the child with inherited weights
    child = net.child(derived.ops)
    if has_batchnorm(child):
        recalibrate_batchnorm(child, epoch_loader(run.data.weight_train, c.batch_size, c.seed,
                                                  0, WEIGHT_DATA))
    val_top1 = evaluate_top1(child, epoch_loader(run.data.val, 256, c.seed, 0, VAL_DATA,
                                                 shuffle=False))
    # predictions at the deployment shape, on the target and every other device
    deploy = space.build_child(derived.ops).eval()
    target_prediction = run.predictor.predict(deploy, space.input_shape)
    others = predict_everywhere(deploy, space.input_shape, skip=run.predictor.device)
    probs = net.probs().detach()
    layers = [{"index": slot.index, "name": slot.name, "op": op,
               "ms": float(table.ms[slot.index, k]), "p": float(probs[slot.index, k])}
              for slot, op, k in zip(space.layers, derived.ops, derived.choice)]
    record = {
        "space": {"name": space.name, "hash": space.hash, "source": space.source},
        "ops": derived.ops,
        "layers": layers,
        "device": run.predictor.device,
        "input_shape": list(space.input_shape),
        "target_latency_ms": c.latency,
        "predicted_latency_ms": float(target_prediction.latency_ms),
        "lut_latency_ms": derived.latency_ms,
        "within_budget": derived.latency_ms <= c.latency,
        "predictor": {"source": target_prediction.source, "version": target_prediction.version,
                      "known_error": target_prediction.known_error},
        "other_devices": others,
        "val_top1": val_top1,
        "evaluation": {"dataset": run.data.name, "resolution": run.data.resolution,
                       "num_classes": run.data.num_classes, "split": "validation",
                       "weights": "inherited from the supernet"},
        "supernet_checkpoint": CHECKPOINT,
        "seed": c.seed,
        "search": {"loss": c.loss, "lam": c.lam, "beta": c.beta, "epochs": c.epochs,
                   "warmup_epochs": c.warmup_epochs, "batch_size": c.batch_size,
                   "data": c.data, "supernet": c.supernet, "optim": c.optim.as_dict()},
        "derivation": {"method": derived.method, "log_prob": derived.log_prob,
                       "argmax_ms": table.latency_of(argmax_choice(net.alpha, net.mask)),
                       "smallest_ms": table.min_ms(), "largest_ms": table.max_ms()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if target_prediction.latency_ms > c.latency:
        run.echo(f"warning: the whole-network prediction {format_ms(target_prediction.latency_ms)}"
                 f" exceeds the budget although the table sum {format_ms(derived.latency_ms)} "
                 f"fits (the predictor is not additive over layers)")
    return derived, record


def predict_everywhere(module, input_shape, skip: str | None = None) -> dict:
    """``{device: {latency_ms, source, version, known_error}}`` for every device usable here
    (host-cuda only with a GPU); a device that fails gets ``{error}``."""
    from ..predictors import get, list_devices

    out = {}
    for device in list_devices():
        if device == skip:
            continue
        try:
            prediction = get(device).predict(module, input_shape)
        except QnasError as err:
            out[device] = {"error": str(err)}
            continue
        out[device] = {"latency_ms": float(prediction.latency_ms), "source": prediction.source,
                       "version": prediction.version, "known_error": prediction.known_error}
    return out


# --- warm-up only -------------------------------------------------------------------------------

def train_supernet(config: SearchConfig, out: str | Path | None = None, resume: bool = False,
                   stop_after_epochs: int | None = None, progress: bool = False,
                   echo: Callable[[str], None] | None = None,
                   threads: int | None = None) -> Path | None:
    """Warm up a supernet (uniform path sampling, weights only) and write ``supernet.pt``;
    returns its path (None when stopped early). ``search(..., supernet=path)`` starts from it."""
    if config.device is not None:
        config = SearchConfig(**{f.name: getattr(config, f.name) for f in fields(config)
                                 if f.name not in ("device", "latency")})
    echo = echo or (lambda message: None)
    out = Path(out) if out is not None else default_out(config)
    checkpoint = _prepare_out(out, resume)
    run = _Run(config, out, echo)
    if checkpoint is not None:
        run.restore(checkpoint)
    else:
        write_text_atomic(out / "config.json", json.dumps(config.as_dict(), indent=2) + "\n")
    with _threads(threads):
        if not _loop(run, stop_after_epochs, progress):
            return None
    state = {"format": SUPERNET_FORMAT, "format_version": 1, "qnas_version": __version__,
             "space": run.space.name, "space_hash": run.space.hash,
             "num_classes": run.data.num_classes, "epochs": run.epoch,
             "config": config.identity(), "supernet": run.supernet.state_dict()}
    path = save_torch_atomic(state, out / SUPERNET)
    echo(f"supernet written to {path}")
    return path


def summarize_log(log: pd.DataFrame) -> str:
    """The per-epoch log as a small table for people."""
    columns = [c for c in ("epoch", "phase", "train_loss", "val_top1_argmax", "expected_ms",
                           "argmax_ms", "entropy") if c in log.columns]
    return log[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"
                                  if math.isfinite(v) else "-")
