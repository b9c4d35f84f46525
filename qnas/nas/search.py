"""The search, end to end, in the order the data flows:

space (YAML) → supernet → latency table from the device's predictor → search loop (weight
steps, arch steps, loss with E[LAT]) → checkpoint every epoch → derive under the hard
constraint → evaluate the child with inherited weights → ``best.json``.

Everything is a function a notebook can call (:func:`search`, :func:`train_supernet`); the CLI
only parses and reports. A run directory holds ``checkpoint-<step>.pt`` (after every epoch, and
mid-epoch on SIGINT/SIGTERM; atomic, checksummed, the last two kept — see :mod:`.checkpoints`:
supernet with α, both optimisers, schedulers, RNG states, epoch/step counters and the log),
``search_log.csv`` (one row per epoch), ``alpha_history.json`` (softmax(α) per layer after each
epoch), ``config.json`` and, at the end, ``best.json``.
``resume=True`` continues from the newest good checkpoint and ends exactly where an
uninterrupted run would (same seed, same machine, CPU, same number of processes): batches and
sampled paths are pure functions of (seed, epoch, step).

Under ``torchrun`` (see :mod:`.distributed`) the same code runs on every rank with DDP.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
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
from ..errors import Interrupted, QnasError
from ..nn.kernelwarehouse import kw_layers, kw_temperature
from ..runtime import distributed
from .best import best_record, write_best
from ..runtime.checkpoints import CheckpointStore, check_same_settings, load_verified
from .derive import Derived, argmax_choice, derive_architecture
from .evaluator import (SearchData, epoch_loader, evaluate_top1, has_batchnorm,
                        recalibrate_batchnorm, search_data)
from ..runtime.files import (check_writable_folder, save_torch_atomic, write_csv_atomic,
                    write_text_atomic)
from ..units import format_ms, parse_latency
from .latency import LatencyLoss, TableView, entropy, expected_latency_ms, table_view
from .proxyless import ProxylessConfig, ProxylessStrategy
from ..runtime.signals import StopOnSignals, signal_name
from ..space import SearchSpace, load_space
from .supernet import Supernet

# Defaults for the embedded digits data: the whole search (LUT, warm-up, search, derivation,
# every device's prediction) fits in 10 minutes on 2 CPU cores.
DEFAULT_WARMUP_EPOCHS = 6
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 64
# hinge stops pushing once E[LAT] is within the budget, so the accuracy term decides how the
# budget is spent. mul-log / add-linear push latency down forever: where accuracy hardly depends
# on the architecture (digits) they collapse the search to the smallest child.
DEFAULT_LOSS = "hinge"
# ProxylessNAS's α settings (Adam lr 1e-3, one arch step per 5 weight steps) are made for ~10⁵
# arch steps on ImageNet; a digits search has ~170 weight steps, in which α would move by
# ~0.03 and stay uniform. One arch step per weight step at lr 0.05 lets E[LAT] reach the budget
# in about two epochs and the distribution sharpen afterwards.
DEFAULT_ARCH_LR = 0.05
DEFAULT_ARCH_EVERY = 1
# γ (layer scale) init of the supernet's blocks. The paper's 1e-6 suits 300-epoch training from
# scratch; in a supernet warmed up for a few hundred steps, where each candidate is sampled 1/7
# of the time, γ stays ~1e-4: every candidate is then ≈ identity and α learns from noise. At 0.1
# the candidates differ and the warm-up still trains stably (1.0 diverges at lr 0.025).
SUPERNET_LAYER_SCALE_INIT = 0.1


# Weight gradients clipped at norm 5 (the retraining recipe's value): unclipped, the supernet at
# γ 0.1 can blow up in its first steps (digits, seed 0: warm-up loss 2.97 in epoch 1 and 91% at
# its end, against 0.82 and 96–99% clipped).
DEFAULT_GRAD_CLIP = 5.0


def default_optim() -> ProxylessConfig:
    """ProxylessNAS's optimisers with the settings sized for the embedded data (see above)."""
    return ProxylessConfig(arch_lr=DEFAULT_ARCH_LR, arch_every=DEFAULT_ARCH_EVERY,
                           grad_clip=DEFAULT_GRAD_CLIP)

LOG = "search_log.csv"
ALPHA_LOG = "alpha_history.json"      # softmax(α) per layer after every epoch (for reports)
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
    layer_scale_init: float | None = SUPERNET_LAYER_SCALE_INIT   # γ init, supernet blocks
    lut_cache_dir: str | None = None
    optim: ProxylessConfig = field(default_factory=default_optim)

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

def train_device() -> torch.device:
    """Where the search trains: this rank's GPU under torchrun+NCCL, the GPU when one is visible,
    else the CPU."""
    if distributed.is_initialized():
        return distributed.device()
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _new_sums() -> dict:
    return {"loss": 0.0, "correct": 0.0, "count": 0.0, "arch_ce": 0.0, "arch_loss": 0.0,
            "arch_n": 0}


class _Run:
    """One search (or warm-up-only) run: state, the epoch loop, checkpoints.

    Under torchrun every rank builds the same run; rank 0 builds the latency table and reads
    checkpoints, and broadcasts them; weight gradients go through DDP, α gradients through the
    strategy's all-reduce; only rank 0 writes.
    """

    def __init__(self, config: SearchConfig, out: Path, echo: Callable[[str], None]):
        self.config, self.out = config, Path(out)
        self.echo = echo if distributed.is_main() else (lambda message: None)
        c = config
        # 1. space
        self.space: SearchSpace = load_space(c.space)
        self.space.check_resolution(c.resolution)
        # the device's predictor first: an unknown device fails before any work
        self.predictor = None
        if c.device is not None:
            from ..predictors import get

            self.predictor = get(c.device)
        # 2. data and supernet
        self.device = train_device()
        self.data: SearchData = search_data(c.data, c.resolution, c.seed, c.arch_fraction)
        torch.manual_seed(c.seed)
        self.supernet = Supernet(self.space, self.data.num_classes, c.optim.alpha_init_std,
                                 layer_scale_init=c.layer_scale_init)
        if c.supernet:
            load_supernet_weights(self.supernet, c.supernet)
        self.supernet.to(self.device)
        # 3. latency table at the deployment shape (built once, on rank 0)
        self.table: TableView | None = None
        self.latency_loss: LatencyLoss | None = None
        if self.predictor is not None:
            table = None
            if distributed.is_main():
                table = latency_table(self.space, self.predictor, c.lut_cache_dir)
            self.table = distributed.broadcast_object(table)
            check_budget(self.table, c.latency, self.space, self.echo)
            self.latency_loss = LatencyLoss(c.loss, c.latency, c.lam, c.beta)
        # 4. the strategy (under torchrun: DDP averages the weight gradients)
        self.weight_model = None
        if distributed.world_size() > 1:
            from torch.nn.parallel import DistributedDataParallel

            with torch.no_grad():
                self.supernet.alpha.copy_(distributed.broadcast_object(
                    self.supernet.alpha.detach().cpu()).to(self.device))
            # one path per step: the other candidates are unused, on every rank alike
            self.weight_model = DistributedDataParallel(
                self.supernet.net, find_unused_parameters=True,
                device_ids=[self.device] if self.device.type == "cuda" else None)
        self.strategy = ProxylessStrategy(self.supernet, c.optim, c.seed, self.table,
                                          self.latency_loss, weight_model=self.weight_model)
        self.total_epochs = c.warmup_epochs + (c.epochs if self.table is not None else 0)
        self.steps_per_epoch = len(epoch_loader(self.data.weight_train, c.batch_size, c.seed,
                                                0, WEIGHT_DATA))
        if self.steps_per_epoch == 0:
            raise QnasError(f"the weight split of {self.data.name} has fewer images per process "
                            f"than one batch ({c.batch_size}); use a smaller --batch-size")
        # KernelWarehouse candidates: τ decays from 1 to 0 over the warm-up, step by step
        self.kw_layers = list(kw_layers(self.supernet))
        self.store = CheckpointStore(self.out)
        self.epoch = 0
        self.weight_steps = 0
        self.arch_steps = 0
        self.step_in_epoch = 0           # weight steps done in the current epoch (mid-epoch saves)
        self.arch_in_epoch = 0           # arch batches used in the current epoch
        self.sums = _new_sums()
        self.rows: list[dict] = []
        self.alpha_history: list[list[list[float]]] = []   # softmax(α) after each epoch
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
    def run_epoch(self, bar, stop: StopOnSignals | None = None) -> dict:
        """Run (the rest of) the current epoch; returns its log row. Between steps, a stop
        request (SIGINT/SIGTERM on any rank) saves a mid-epoch checkpoint and raises
        :class:`Interrupted`; a non-finite loss raises :class:`QnasError`."""
        c, epoch = self.config, self.epoch
        phase, _, _ = self._phase(epoch)
        started = time.perf_counter()
        loader = epoch_loader(self.data.weight_train, c.batch_size, c.seed, epoch, WEIGHT_DATA)
        arch_batches = self._arch_batches(epoch, self.arch_in_epoch) if phase == "search" \
            else None
        sums, lr = self.sums, None
        for i, (images, labels) in enumerate(loader):
            if i < self.step_in_epoch:          # done before a mid-epoch checkpoint
                continue
            lr = self._set_lr(epoch, i)
            if self.kw_layers:
                tau = kw_temperature(epoch + i / self.steps_per_epoch, c.warmup_epochs)
                for layer in self.kw_layers:
                    layer.set_temperature(tau)
            stats = self.strategy.weight_step(images.to(self.device), labels.to(self.device),
                                              self.weight_steps, uniform=phase == "warmup")
            self.weight_steps += 1
            arch = None
            if arch_batches is not None and (i + 1) % c.optim.arch_every == 0:
                arch_images, arch_labels = next(arch_batches)
                arch = self.strategy.arch_step(arch_images.to(self.device),
                                               arch_labels.to(self.device), self.arch_steps)
                self.arch_steps += 1
                self.arch_in_epoch += 1
            # one all-reduce per step: the logged numbers, and whether any rank must stop
            loss_sum, correct, count, arch_ce, arch_loss, stop_flag = distributed.all_reduce_sum(
                [stats["loss"] * stats["count"], stats["correct"], stats["count"],
                 arch["ce"] if arch else 0.0, arch["loss"] if arch else 0.0,
                 float(stop is not None and stop.requested is not None)])
            world = distributed.world_size()
            self._check_finite(loss_sum / max(count, 1), "weight", epoch, i)
            sums["loss"] += loss_sum
            sums["correct"] += correct
            sums["count"] += count
            if arch is not None:
                self._check_finite(arch_loss / world, "architecture", epoch, i)
                sums["arch_ce"] += arch_ce / world
                sums["arch_loss"] += arch_loss / world
                sums["arch_n"] += 1
            self.step_in_epoch = i + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{phase} ep {epoch + 1}/{self.total_epochs} "
                                    f"loss {loss_sum / max(count, 1):.3f}", refresh=False)
            if stop_flag:
                self._stop(stop)
        row = {"epoch": epoch + 1, "phase": phase,
               "lr": lr if lr is not None else self.strategy.weight_optimizer.param_groups[0]["lr"],
               "train_loss": sums["loss"] / max(sums["count"], 1),
               "train_top1": 100.0 * sums["correct"] / max(sums["count"], 1),
               "arch_ce": sums["arch_ce"] / sums["arch_n"] if sums["arch_n"] else float("nan"),
               "arch_loss": sums["arch_loss"] / sums["arch_n"] if sums["arch_n"] else float("nan"),
               "arch_steps": sums["arch_n"]}
        row.update(self.measure_alpha())
        row["val_top1_argmax"] = self.validate_argmax()
        row["seconds"] = time.perf_counter() - started
        self.alpha_history.append(self.supernet.probs().detach().cpu().tolist())
        self.epoch += 1
        self.step_in_epoch = self.arch_in_epoch = 0
        self.sums = _new_sums()
        self.rows.append(row)
        return row

    def _check_finite(self, value: float, which: str, epoch: int, step: int) -> None:
        if math.isfinite(value):
            return
        last = self.store.paths()
        where = (f"the last good checkpoint is {last[0]}" if last
                 else "no checkpoint was written yet")
        raise QnasError(f"the {which} loss became {value} at epoch {epoch + 1}, step {step + 1}: "
                        f"training diverged; {where}; try a lower --weight-lr"
                        + (" or --arch-lr" if which == "architecture" else ""))

    def _stop(self, stop: StopOnSignals | None) -> None:
        signum = (stop.requested if stop is not None and stop.requested is not None
                  else signal.SIGTERM)     # another rank got the signal
        path = self.save()
        raise Interrupted(f"stopped by {signal_name(signum)} at epoch {self.epoch + 1}, step "
                          f"{self.step_in_epoch}; checkpoint {path}; resume with the same "
                          f"command and --resume --out {self.out}", signum)

    def _arch_batches(self, epoch: int, skip: int = 0):
        """The arch split's batches for ``epoch``, cycling; the first ``skip`` are dropped (a run
        resumed mid-epoch continues where it stopped)."""
        cycle, seen = 0, 0
        while True:
            loader = epoch_loader(self.data.arch_train, self.config.batch_size, self.config.seed,
                                  epoch * 1000 + cycle, ARCH_DATA)
            if len(loader) == 0:
                raise QnasError(f"the arch split of {self.data.name} has fewer images per "
                                f"process than one batch ({self.config.batch_size}); use a "
                                f"smaller --batch-size or a larger arch fraction")
            for batch in loader:
                if seen >= skip:
                    yield batch
                seen += 1
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
        top1 = evaluate_top1(net, loader, distributed=distributed.is_initialized())
        net.clear_paths()
        return top1

    # --- checkpoints ----------------------------------------------------------------------
    def checkpoint(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT, "format_version": 2, "qnas_version": __version__,
            "config": self.config.identity(), "space": self.space.name,
            "space_hash": self.space.hash, "num_classes": self.data.num_classes,
            "epoch": self.epoch, "weight_steps": self.weight_steps,
            "arch_steps": self.arch_steps, "total_epochs": self.total_epochs,
            "step_in_epoch": self.step_in_epoch, "arch_in_epoch": self.arch_in_epoch,
            "sums": dict(self.sums), "world_size": distributed.world_size(),
            "supernet": {k: v.cpu() for k, v in self.supernet.state_dict().items()},
            "strategy": self.strategy.state_dict(),
            "scheduler": {"phase": self.scheduler_phase,
                          "state": self.scheduler.state_dict() if self.scheduler else None},
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                    else None},
            "rows": self.rows, "alpha_history": self.alpha_history,
        }

    def save(self) -> Path:
        """Rank 0 writes the checkpoint (and the log); every rank waits for it. Returns its path."""
        path = self.store.path_for(self.weight_steps)
        if distributed.is_main():
            path = self.store.save(self.checkpoint(), self.weight_steps)
            if self.rows:
                write_csv_atomic(pd.DataFrame(self.rows), self.out / LOG)
                write_text_atomic(self.out / ALPHA_LOG, json.dumps({
                    "candidates": self.space.candidates,
                    "layers": [slot.name for slot in self.space.layers],
                    "allowed": self.space.allowed_mask().tolist(),
                    "epochs": [row["epoch"] for row in self.rows],
                    "phases": [row["phase"] for row in self.rows],
                    "probs": self.alpha_history}) + "\n")
        distributed.barrier()
        return path

    def restore(self) -> Path:
        """Load the newest good checkpoint (rank 0 reads, all ranks receive); returns its path."""
        state, path = self.store.load_latest_on_every_rank(warn=self.echo)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise QnasError(f"{path} is not a qnas search checkpoint")
        check_same_settings(state["config"], self.config.identity(),
                            f"the checkpoint in {self.out}")
        if state.get("world_size", 1) != distributed.world_size():
            self.echo(f"note: the checkpoint was written by {state.get('world_size', 1)} "
                      f"process(es), resuming with {distributed.world_size()}: the data shards "
                      f"differ, so the run will not repeat an uninterrupted one exactly")
        self.supernet.load_state_dict(state["supernet"])
        self.strategy.load_state_dict(state["strategy"])
        self.epoch, self.weight_steps = state["epoch"], state["weight_steps"]
        self.arch_steps, self.rows = state["arch_steps"], list(state["rows"])
        self.alpha_history = list(state.get("alpha_history", []))
        self.step_in_epoch = state.get("step_in_epoch", 0)
        self.arch_in_epoch = state.get("arch_in_epoch", 0)
        self.sums = dict(state.get("sums") or _new_sums())
        # the cosine schedules are functions of the step: the next _set_lr rebuilds the phase's
        self.scheduler, self.scheduler_phase = None, None
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        return path


def read_checkpoint(path: str | Path) -> dict:
    """A search checkpoint or ``supernet.pt``, checksum-verified (QnasError otherwise)."""
    state = load_verified(path)
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


def load_supernet(path: str | Path, space: SearchSpace | None = None) -> Supernet:
    """Rebuild the supernet of a search checkpoint or ``supernet.pt`` (weights AND α), in eval
    mode on the CPU. ``space`` defaults to the one recorded in the checkpoint; a space whose
    hash differs from the recorded one is refused."""
    state = read_checkpoint(path)
    if space is None:
        space = load_space(state["config"]["space"])
    if state["space_hash"] != space.hash:
        raise QnasError(f"checkpoint {path} was made for space '{state['space']}' (hash "
                        f"{state['space_hash']}), not '{space.name}' (hash {space.hash})")
    config = state["config"]
    supernet = Supernet(space, int(state["num_classes"]),
                        layer_scale_init=config.get("layer_scale_init"))
    try:
        supernet.load_state_dict(state["supernet"], strict=True)
    except RuntimeError as err:
        raise QnasError(f"checkpoint {path} does not fit space '{space.name}': "
                        f"{str(err).splitlines()[0]}") from None
    return supernet.eval()


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


def _prepare_out(out: Path, resume: bool) -> bool:
    """Check the run folder before any work; True when a checkpoint is to be resumed.

    A restart by torchrun's elastic agent (``--max-restarts``) resumes automatically."""
    store = CheckpointStore(out)
    if out.exists() and not out.is_dir():
        raise QnasError(f"--out {out} is a file; give a folder")
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
    if resume or (restarted and store.exists()):
        if not store.exists():
            raise QnasError(f"nothing to resume: {out} holds no checkpoint; run without "
                            f"--resume to start")
        return True
    if store.exists():
        raise QnasError(f"{out} already holds a run ({store.paths()[0].name}); pass --resume to "
                        f"continue it or choose another --out")
    check_writable_folder(out)
    return False


def training_threads(threads: int | None = None) -> int:
    """Intra-op threads for training: ``threads``, else the cores of this process's share
    (all cores but one for a single process; cores / processes per node under torchrun) —
    on a small shared machine two OpenMP threads stall each other whenever one is
    descheduled (steps 10–50× slower), one thread per free core does not."""
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise QnasError(f"threads must be a positive integer, got {threads!r}")
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if local_world > 1:
        return max(1, (cores or 1) // local_world)
    return max(1, min(torch.get_num_threads(), (cores or 1) - 1))


@contextlib.contextmanager
def training_threads_scope(threads: int | None):
    """Run the body with :func:`training_threads` intra-op threads, then restore."""
    previous = torch.get_num_threads()
    torch.set_num_threads(training_threads(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _loop(run: _Run, stop_after_epochs: int | None, progress: bool) -> bool:
    """Run epochs until done (True) or ``stop_after_epochs`` in this call (False).
    SIGINT/SIGTERM save a checkpoint and raise :class:`Interrupted`."""
    remaining = run.total_epochs - run.epoch
    if stop_after_epochs is not None:
        remaining = min(remaining, stop_after_epochs)
    bar = tqdm(total=run.total_epochs * run.steps_per_epoch,
               initial=run.epoch * run.steps_per_epoch + run.step_in_epoch, unit="step",
               desc="search", disable=not progress or not distributed.is_main(),
               dynamic_ncols=True, leave=False)
    try:
        with StopOnSignals() as stop:
            for _ in range(remaining):
                row = run.run_epoch(bar, stop)
                run.save()
                run.echo(_row_text(row))
                # a signal that arrived during validation or the save, on any rank
                if distributed.all_reduce_sum([float(stop.requested is not None)])[0]:
                    run._stop(stop)
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
    run = _start(config, out, resume, echo)
    with training_threads_scope(threads):
        done = _loop(run, stop_after_epochs, progress)
        if not done:
            return SearchResult(run.out, False, pd.DataFrame(run.rows),
                                seconds=time.perf_counter() - started)
        derived, best = finish(run) if distributed.is_main() else (None, None)
    derived, best = distributed.broadcast_object((derived, best))
    best, best_path = best_record(best), run.out / BEST
    if distributed.is_main():
        write_best(best_path, best)
    distributed.barrier()
    return SearchResult(run.out, True, pd.DataFrame(run.rows), best_path, best, derived,
                        run.table, time.perf_counter() - started)


def _start(config: SearchConfig, out: str | Path | None, resume: bool,
           echo: Callable[[str], None] | None) -> _Run:
    """Join torchrun's group (if launched by it), check the run folder, build the run and
    resume it or write its config.json. Nothing is written before every check has passed."""
    distributed.init()
    echo = echo or (lambda message: None)
    out = Path(out) if out is not None else default_out(config)
    resuming = _prepare_out(out, resume)
    run = _Run(config, out, echo)
    if resuming:
        path = run.restore()
        run.echo(f"resumed from {path} at epoch {run.epoch + 1}"
                 + (f", step {run.step_in_epoch}" if run.step_in_epoch else ""))
    elif distributed.is_main():
        write_text_atomic(out / "config.json", json.dumps(config.as_dict(), indent=2) + "\n")
    return run


def finish(run: _Run) -> tuple[Derived, dict]:
    """Derive under the budget, evaluate the child with inherited weights, predict it on every
    device; returns the derivation and the best.json record."""
    c, space, table, net = run.config, run.space, run.table, run.supernet
    derived = derive_architecture(net.alpha, table, c.latency)
    run.echo(f"derived: {space.describe_ops(derived.ops)} — {format_ms(derived.latency_ms)} "
             f"(budget {format_ms(c.latency)}, log p {derived.log_prob:.3f})")
    # evaluate the child with inherited weights
    # (rank 0 alone runs this: its loaders are the whole splits, not its shards)
    child = net.child(derived.ops)
    if has_batchnorm(child):
        recalibrate_batchnorm(child, epoch_loader(run.data.weight_train, c.batch_size, c.seed,
                                                  0, WEIGHT_DATA, rank=0, world=1))
    val_top1 = evaluate_top1(child, epoch_loader(run.data.val, 256, c.seed, 0, VAL_DATA,
                                                 shuffle=False, rank=0, world=1))
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
        "supernet_checkpoint": run.store.paths()[0].name,
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
    run = _start(config, out, resume, echo)
    with training_threads_scope(threads):
        if not _loop(run, stop_after_epochs, progress):
            return None
    path = run.out / SUPERNET
    if distributed.is_main():
        state = {"format": SUPERNET_FORMAT, "format_version": 1, "qnas_version": __version__,
                 "space": run.space.name, "space_hash": run.space.hash,
                 "num_classes": run.data.num_classes, "epochs": run.epoch,
                 "config": config.identity(),
                 "supernet": {k: v.cpu() for k, v in run.supernet.state_dict().items()}}
        save_torch_atomic(state, path)
        run.echo(f"supernet written to {path}")
    distributed.barrier()
    return path


def summarize_log(log: pd.DataFrame) -> str:
    """The per-epoch log as a small table for people."""
    columns = [c for c in ("epoch", "phase", "train_loss", "val_top1_argmax", "expected_ms",
                           "argmax_ms", "entropy") if c in log.columns]
    return log[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"
                                  if math.isfinite(v) else "-")
