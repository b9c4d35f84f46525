"""Retrain the child of a ``best.json`` with the paper's recipe, built from timm's utilities.

The recipe (QuadraNet/ConvNeXt training, ``timm/train.py``):

- AdamW (``timm.optim.create_optimizer_v2``), weight decay 0.05 (not on biases, norms and
  layer-scale γ: timm's ``filter_bias_and_bn``), learning rate ``lr × batch / 4096`` (linear
  scaling from the paper's base lr 4e-3 at batch 4096);
- a linear warm-up, then cosine annealing, per optimiser step (``timm.scheduler.CosineLRScheduler``);
- gradient clipping at norm 5 (``timm.utils.dispatch_clip_grad``);
- label smoothing 0.1 (``timm.loss.LabelSmoothingCrossEntropy``);
- DropPath (stochastic depth, linear over the layers) from the model itself
  (``drop_path_rate`` of :meth:`qnas.space.SearchSpace.build_child`);
- optionally an EMA of the weights (``timm.utils.ModelEmaV3``, with decay warm-up);
- augmentation: CIFAR-10 gets the standard random crop (pad 4) + horizontal flip
  (:mod:`qnas.data.augment`, seeded per epoch); ImageFolder datasets use their own torchvision
  transforms (random resized crop + flip); digits and synthetic are not augmented by default —
  they are 8×8 images upsampled, so the smallest useful shift is a whole original pixel, and in
  short runs it slowed convergence (digits, 10 epochs, seed 1: 96.4% with it, 98.3% without).
  ``augment=True`` turns it on for them too.

**Default learning rate.** The paper's base lr 4e-3 at batch 4096 is meant for 300 ImageNet
epochs (~94k optimiser steps). The embedded digits data has 1,437 training images: at the default
batch 64 an epoch is 22 steps, and the scaled lr 4e-3 × 64/4096 = 6.25e-5 barely moves the
network in the ~200 steps a short run has (measured: well under the 95% target). The default
keeps the recipe's form — base lr at batch 4096, scaled linearly by batch/4096 — with a base lr
32× the paper's, ``DEFAULT_LR = 0.128``, i.e. an effective 2e-3 at batch 64 (the effective lr
that ConvNeXt-style AdamW training commonly uses on small datasets). Pass ``lr=4e-3`` (``--lr
4e-3``) for the paper's value. The run log states the effective lr.

A run folder (default ``<best.json's folder>/retrain/``) holds ``last-<step>.pt`` (after every
epoch, and mid-epoch on SIGINT/SIGTERM; atomic, checksummed, the newest two kept — see
:mod:`qnas.runtime.checkpoints`: model, optimiser, scheduler, EMA, epoch/step, RNG states, config,
best top-1), ``best.pt`` (the same, at the epoch with the best validation top-1),
``retrain_log.csv`` (one row per epoch) and, at the end, ``retrain.json`` (summary).
``resume=True`` continues from the newest good checkpoint and ends exactly like an uninterrupted
run (same machine, same thread count, same number of processes): the batch order and the
augmentation are pure functions of (seed, epoch) and the global RNG (DropPath) is restored.
:func:`load_retrained` turns either ``.pt`` back into a network. Under ``torchrun`` the model is
wrapped in DistributedDataParallel, each rank reads its shard, only rank 0 writes.
"""
from __future__ import annotations

import json
import math
import random
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from timm.utils import dispatch_clip_grad
from torch import nn
from torch.utils.data import TensorDataset

from .. import __version__
from ..data import DatasetSplits, load_dataset
from ..data.augment import FLIP_DATASETS, default_padding, random_shift_flip
from ..errors import Interrupted, QnasError
from ..runtime import distributed
from ..nas.best import BestArch, load_best
from ..runtime.checkpoints import (CheckpointStore, check_same_settings, load_verified,
                               save_verified)
from ..nas.evaluator import epoch_loader, evaluate_top1, loader_seed
from ..runtime.files import check_writable_folder, write_csv_atomic, write_text_atomic
from ..nas.search import train_device, training_threads_scope
from ..runtime.signals import StopOnSignals, signal_name

PAPER_LR = 4e-3                 # the paper's base lr ...
LR_REFERENCE_BATCH = 4096       # ... at this batch size; lr scales linearly with batch / 4096
DEFAULT_LR = 32 * PAPER_LR      # base lr of the defaults: effective 2e-3 at batch 64 (see doc)
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 64
DEFAULT_DROP_PATH = 0.1
INITS = ("scratch", "inherit")

LAST, BEST, LOG, SUMMARY = "last", "best.pt", "retrain_log.csv", "retrain.json"
RUN_FILES = (BEST, LOG, SUMMARY)      # and last-<step>.pt (+ .sha256), the newest two
CHECKPOINT_FORMAT = "qnas-retrain-checkpoint"
FORMAT_VERSION = 1
TRAIN_STREAM, VAL_STREAM, AUGMENT_STREAM = 10, 12, 13   # loader_seed streams (≠ the search's)


@dataclass
class RetrainConfig:
    """Everything that defines a retraining run (``threads`` only changes the speed).

    ``lr`` is the base learning rate at batch 4096; the optimiser uses
    :attr:`effective_lr` = ``lr × global batch / 4096`` (``batch_size`` per process × processes). ``resolution=None`` takes best.json's
    training resolution (``evaluation.resolution``); ``drop_path_rate=None`` takes 0.1 (0 for
    spaces without DropPath, like the mbconv macro); ``augment=None`` augments CIFAR-10 only.
    :meth:`resolved` fills these in.
    """

    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    warmup_lr: float = 1e-6              # lr at the first step of the warm-up
    min_lr: float = 1e-6                 # end of the cosine
    clip_grad: float | None = 5.0        # gradient-norm clipping (None: off)
    smoothing: float = 0.1               # label smoothing
    drop_path_rate: float | None = None
    ema: bool = False
    ema_decay: float = 0.9998            # reached after the EMA's warm-up (ModelEmaV3)
    augment: bool | None = None          # None: on for cifar10 only (see the module doc)
    init: str = "scratch"                # scratch | inherit (the supernet's weights)
    data: str = "digits"
    resolution: int | None = None
    seed: int = 0
    threads: int | None = None

    def __post_init__(self):
        def integer(name, low):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise QnasError(f"{name.replace('_', ' ')} must be an integer ≥ {low}, "
                                f"got {value!r}")

        def number(name, low, high, low_open=False, high_open=True):
            value = getattr(self, name)
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and math.isfinite(value)
                  and (value > low if low_open else value >= low)
                  and (value < high if high_open else value <= high))
            if not ok:
                raise QnasError(f"{name.replace('_', ' ')} must be a number in "
                                f"{'(' if low_open else '['}{low:g}, {high:g}"
                                f"{')' if high_open else ']'}, got {value!r}")

        integer("epochs", 1)
        integer("batch_size", 1)
        integer("warmup_epochs", 0)
        integer("seed", 0)
        number("lr", 0, math.inf, low_open=True)
        number("weight_decay", 0, math.inf)
        number("warmup_lr", 0, math.inf)
        number("min_lr", 0, math.inf)
        number("smoothing", 0, 1)
        number("ema_decay", 0, 1, low_open=True)
        if self.clip_grad is not None:
            number("clip_grad", 0, math.inf, low_open=True)
        if self.drop_path_rate is not None:
            number("drop_path_rate", 0, 1)
        if self.resolution is not None:
            integer("resolution", 8)
        if self.threads is not None:
            integer("threads", 1)
        if self.augment is not None and not isinstance(self.augment, bool):
            raise QnasError(f"augment must be True, False or None, got {self.augment!r}")
        if not isinstance(self.ema, bool):
            raise QnasError(f"ema must be True or False, got {self.ema!r}")
        if self.init not in INITS:
            raise QnasError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if not isinstance(self.data, str) or not self.data:
            raise QnasError(f"data must be a dataset spec (digits, synthetic, cifar10:PATH, "
                            f"imagefolder:PATH), got {self.data!r}")

    @property
    def global_batch(self) -> int:
        """Images per optimiser step: ``batch_size`` per process × processes (torchrun)."""
        return self.batch_size * distributed.world_size()

    @property
    def effective_lr(self) -> float:
        """The optimiser's peak learning rate: ``lr × global batch / 4096``."""
        return self.lr * self.global_batch / LR_REFERENCE_BATCH

    def resolved(self, best: BestArch) -> "RetrainConfig":
        """A copy with the defaults that depend on best.json filled in."""
        resolution = self.resolution
        if resolution is None:
            evaluation = best.raw.get("evaluation") or {}
            resolution = evaluation.get("resolution", 32) if isinstance(evaluation, dict) else 32
            if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 8:
                resolution = 32
        drop_path = self.drop_path_rate
        if drop_path is None:
            drop_path = DEFAULT_DROP_PATH if best.space.macro == "quadranet" else 0.0
        elif drop_path > 0 and best.space.macro != "quadranet":
            raise QnasError(f"space '{best.space.name}' ({best.space.macro} macro) has no "
                            f"DropPath; use --drop-path 0")
        augment = self.augment
        if augment is None:
            augment = self.data.partition(":")[0].strip().lower() == "cifar10"
        return replace(self, resolution=resolution, drop_path_rate=float(drop_path),
                       augment=bool(augment))

    def as_dict(self) -> dict:
        return asdict(self)

    def identity(self) -> dict:
        """What must match for ``resume`` (the thread count may change)."""
        out = self.as_dict()
        out.pop("threads")
        return out


@dataclass
class RetrainResult:
    """What :func:`retrain` returns. ``finished`` is False when it stopped early on request.

    ``top1`` is the last epoch's validation top-1 (%), ``best_top1`` the best epoch's (the
    one in ``best.pt``), ``ema_top1`` the last epoch's top-1 of the EMA weights (None when off).
    """

    out: Path
    finished: bool
    top1: float
    best_top1: float
    best_epoch: int
    ema_top1: float | None
    seconds: float
    last_path: Path
    best_path: Path
    log_path: Path
    summary_path: Path | None
    log: pd.DataFrame
    config: RetrainConfig
    effective_lr: float
    dataset: str = ""
    val_size: int = 0
    params: int = 0
    extra: dict = field(default_factory=dict, repr=False)


# --- set-up (everything that can refuse happens here, before any file is written) -----------

def default_out(best: BestArch) -> Path:
    return best.path.parent / "retrain"


def _check_out(out: Path, resume: bool) -> bool:
    """Check the run folder before any work; True when a checkpoint is to be resumed (also on
    a restart by torchrun's elastic agent)."""
    import os

    if out.exists() and not out.is_dir():
        raise QnasError(f"--out {out} is a file; pass a folder")
    store = CheckpointStore(out, prefix=LAST)
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
    if resume or (restarted and store.exists()):
        if not store.exists():
            raise QnasError(f"nothing to resume: {out} holds no {LAST}-*.pt checkpoint; run "
                            f"without --resume to start")
        return True
    held = [name for name in RUN_FILES if (out / name).exists()] + \
        [path.name for path in store.paths()]
    if held:
        raise QnasError(f"{out} already holds a retraining run ({', '.join(held)}); pass "
                        f"--resume to continue it or choose another --out")
    check_writable_folder(out)
    return False


def _inherited_weights(best: BestArch, model: nn.Module, num_classes: int) -> dict:
    """The supernet's weights of the chosen ops, renamed for the child."""
    from ..nas.search import load_supernet

    path = best.supernet_checkpoint
    if not path.exists():
        raise QnasError(f"--init inherit needs the supernet checkpoint {path} named in "
                        f"{best.path}, and it does not exist; use --init scratch")
    supernet = load_supernet(path, space=best.space)       # read once: it can be ~1 GB
    if supernet.num_classes != num_classes:
        raise QnasError(f"--init inherit: the supernet {path} was trained on "
                        f"{supernet.num_classes} classes, the retraining data has "
                        f"{num_classes}; retrain on the search's data (--data) or use "
                        f"--init scratch")
    state = supernet.child_state_dict(best.ops)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise QnasError(f"--init inherit: the supernet's weights do not fit the child of "
                        f"{best.path}: {str(err).splitlines()[0]}") from None
    return state


@torch.no_grad()
def _check_fits(model: nn.Module, data: DatasetSplits, best: BestArch) -> None:
    """One forward pass on a validation image: a resolution too small for the network's
    strides fails here, with a message, before anything is written."""
    image = data.val[0][0].unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        model(image)
    except RuntimeError as err:
        raise QnasError(f"the child of {best.path} cannot run at {data.resolution}px "
                        f"({str(err).splitlines()[0]}); use a larger --resolution, e.g. 32 "
                        f"or more") from None
    finally:
        model.train(was_training)


# --- the run ----------------------------------------------------------------------------------

class _Run:
    """One retraining run: model, recipe objects, the epoch loop, checkpoints."""

    def __init__(self, best: BestArch, config: RetrainConfig, data: DatasetSplits, out: Path,
                 echo: Callable[[str], None]):
        from timm.loss import LabelSmoothingCrossEntropy
        from timm.optim import create_optimizer_v2
        from timm.scheduler import CosineLRScheduler
        from timm.utils import ModelEmaV3

        self.best, self.config, self.data, self.out = best, config, data, out
        self.echo = echo if distributed.is_main() else (lambda message: None)
        c = config
        torch.manual_seed(c.seed)
        self.model = best.build_child(num_classes=data.num_classes,
                                      drop_path_rate=c.drop_path_rate)
        _check_fits(self.model, data, best)
        if c.init == "inherit":
            _inherited_weights(best, self.model, data.num_classes)
        self.device = train_device()
        self.model.to(self.device)
        # under torchrun: DDP averages the gradients (and broadcasts rank 0's initial weights)
        self.train_model = self.model
        if distributed.world_size() > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.train_model = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.store = CheckpointStore(out, prefix=LAST)
        # the global RNG draws DropPath masks: one stream per rank (as timm's train.py seeds
        # seed + rank), or every rank would drop the same samples of its shard
        torch.manual_seed(c.seed + distributed.rank())
        self.steps_per_epoch = len(epoch_loader(data.train, c.batch_size, c.seed, 0,
                                                TRAIN_STREAM))
        if self.steps_per_epoch == 0:
            raise QnasError(f"the training split of {data.name} is empty")
        self.total_steps = c.epochs * self.steps_per_epoch
        self.optimizer = create_optimizer_v2(self.model, opt="adamw", lr=c.effective_lr,
                                             weight_decay=c.weight_decay)
        # per step: a linear warm-up to the peak, then a full cosine down to min_lr at the
        # last step; the warm-up start and the floor never exceed the peak (tiny lrs)
        warmup = min(c.warmup_epochs * self.steps_per_epoch, self.total_steps - 1)
        self.scheduler = CosineLRScheduler(
            self.optimizer, t_initial=self.total_steps - warmup,
            lr_min=min(c.min_lr, c.effective_lr), warmup_t=warmup,
            warmup_lr_init=min(c.warmup_lr, c.effective_lr), warmup_prefix=True,
            t_in_epochs=False)
        self.criterion = LabelSmoothingCrossEntropy(smoothing=c.smoothing)
        self.ema = (ModelEmaV3(self.model, decay=c.ema_decay, use_warmup=True)
                    if c.ema else None)
        # in-memory datasets get random translation (+ flips); ImageFolder has its transforms
        self.augment = c.augment and isinstance(data.train, TensorDataset)
        self.epoch = 0
        self.step_in_epoch = 0            # optimiser steps done in the current epoch
        self.sums = [0.0, 0.0, 0.0]       # loss·n, correct, n of the current epoch (all ranks)
        self.rows: list[dict] = []
        self.best_top1 = -1.0
        self.best_epoch = 0

    # --- one epoch ------------------------------------------------------------------------
    def train_epoch(self, bar, stop: StopOnSignals | None = None) -> dict:
        """Run (the rest of) the current epoch and validate; returns its log row. A stop
        request (SIGINT/SIGTERM on any rank) saves a mid-epoch checkpoint and raises
        :class:`Interrupted`; a non-finite loss raises :class:`QnasError`."""
        c, epoch = self.config, self.epoch
        started = time.perf_counter()
        self.model.train()
        loader = epoch_loader(self.data.train, c.batch_size, c.seed, epoch, TRAIN_STREAM)
        generator = torch.Generator().manual_seed(loader_seed(c.seed, epoch, AUGMENT_STREAM))
        padding = default_padding(self.data.resolution)
        flip = self.data.name in FLIP_DATASETS
        for i, (images, labels) in enumerate(loader):
            if self.augment:      # (also for skipped batches: the generator advances the same)
                images = random_shift_flip(images, generator, padding, flip)
            if i < self.step_in_epoch:          # done before a mid-epoch checkpoint
                continue
            step = epoch * self.steps_per_epoch + i
            self.scheduler.step_update(step)
            images, labels = images.to(self.device), labels.to(self.device)
            loss, logits = self.train_step(images, labels, step)
            loss_sum, correct, count, stop_flag = distributed.all_reduce_sum(
                [loss.item() * len(labels), (logits.argmax(1) == labels).sum().item(),
                 len(labels), float(stop is not None and stop.requested is not None)])
            if not math.isfinite(loss_sum):
                raise QnasError(f"the training loss became {loss_sum / count} at epoch "
                                f"{epoch + 1}, step {i + 1}: training diverged; "
                                + (f"the last good checkpoint is {self.store.paths()[0]}; "
                                   if self.store.exists() else "")
                                + "try a lower --lr")
            for index, value in enumerate((loss_sum, correct, count)):
                self.sums[index] += value
            self.step_in_epoch = i + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"ep {epoch + 1}/{c.epochs} loss {loss_sum / count:.3f}",
                                    refresh=False)
            if stop_flag:
                self.stop(stop)
        loss_sum, correct, count = self.sums
        lr = self.optimizer.param_groups[0]["lr"]
        val_loader = self.val_loader()
        parallel = distributed.is_initialized()
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / max(count, 1),
               "train_top1": 100.0 * correct / max(count, 1),
               "val_top1": evaluate_top1(self.model, val_loader, distributed=parallel),
               "ema_top1": (evaluate_top1(self.ema.module, val_loader, distributed=parallel)
                            if self.ema is not None else float("nan"))}
        row["seconds"] = time.perf_counter() - started
        self.epoch += 1
        self.step_in_epoch, self.sums = 0, [0.0, 0.0, 0.0]
        self.rows.append(row)
        return row

    def stop(self, stop: StopOnSignals | None) -> None:
        signum = (stop.requested if stop is not None and stop.requested is not None
                  else signal.SIGTERM)      # another rank got the signal
        path = self.save(improved=False)
        raise Interrupted(f"stopped by {signal_name(signum)} at epoch {self.epoch + 1}, step "
                          f"{self.step_in_epoch}; checkpoint {path}; resume with the same "
                          f"command and --resume --out {self.out}", signum)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, step: int):
        """One optimiser step (loss with label smoothing, clipped gradients, AdamW, EMA);
        returns (loss, logits). The gradients stay on the parameters until the next step."""
        logits = self.train_model(images)
        loss = self.criterion(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip_grad is not None:
            dispatch_clip_grad(self.model.parameters(), self.config.clip_grad, mode="norm")
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, step=step + 1)
        return loss, logits

    def val_loader(self):
        return epoch_loader(self.data.val, 256, self.config.seed, 0, VAL_STREAM, shuffle=False)

    def score(self, row: dict) -> float:
        """What ``best.pt`` is chosen on: the EMA's top-1 when the EMA is on (as timm does)."""
        return row["ema_top1"] if self.ema is not None else row["val_top1"]

    # --- checkpoints ----------------------------------------------------------------------
    def checkpoint(self) -> dict:
        best = self.best
        return {
            "format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION,
            "qnas_version": __version__, "config": self.config.identity(),
            "best_json": {"path": str(best.path), "space": best.space.name,
                          "space_hash": best.space.hash, "ops": list(best.ops),
                          "device": best.device},
            "space": best.space.raw, "space_source": best.space.source, "ops": list(best.ops),
            "num_classes": self.data.num_classes, "dataset": self.data.name,
            "resolution": self.data.resolution, "epoch": self.epoch,
            "steps": self.epoch * self.steps_per_epoch, "effective_lr": self.config.effective_lr,
            "model": {k: v.cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate()},
            "step_in_epoch": self.step_in_epoch, "sums": list(self.sums),
            "world_size": distributed.world_size(),
            "rows": list(self.rows), "best_top1": self.best_top1, "best_epoch": self.best_epoch,
            "weights": "ema" if self.ema is not None else "model",
        }

    def save(self, improved: bool) -> Path:
        """Rank 0 writes ``last-<step>.pt`` (and ``best.pt`` when ``improved``) with checksums
        and the log; every rank waits. Returns the last checkpoint's path."""
        steps = self.epoch * self.steps_per_epoch + self.step_in_epoch
        path = self.store.path_for(steps)
        if distributed.is_main():
            state = self.checkpoint()
            if improved:
                save_verified(state, self.out / BEST)
            path = self.store.save(state, steps)
            if self.rows:
                write_csv_atomic(pd.DataFrame(self.rows), self.out / LOG)
        distributed.barrier()
        return path

    def restore(self) -> Path:
        """Load the newest good ``last-*.pt`` (rank 0 reads, all ranks receive)."""
        state, path = self.store.load_latest_on_every_rank(warn=self.echo)
        _check_state(state, path)
        check_same_settings(state["config"], self.config.identity(),
                            f"the retraining run in {self.out}")
        recorded = state["best_json"]
        if recorded["space_hash"] != self.best.space.hash or recorded["ops"] != self.best.ops:
            raise QnasError(f"the retraining run in {self.out} trains another architecture "
                            f"(from {recorded['path']}); resume with that best.json or use a "
                            f"new --out")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.rows = int(state["epoch"]), list(state["rows"])
        self.step_in_epoch = int(state.get("step_in_epoch", 0))
        self.sums = list(state.get("sums", [0.0, 0.0, 0.0]))
        self.best_top1, self.best_epoch = float(state["best_top1"]), int(state["best_epoch"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        return path


def _check_state(state, path) -> dict:
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise QnasError(f"{path} is not a qnas retraining checkpoint (last-*.pt / best.pt of "
                        f"'qnas retrain')")
    if int(state.get("format_version", 0)) > FORMAT_VERSION:
        raise QnasError(f"{path} has checkpoint format {state['format_version']}, newer than "
                        f"this qnas ({__version__}) reads ({FORMAT_VERSION}); upgrade qnas")
    return state


def _read(path: str | Path) -> dict:
    """A retraining checkpoint, checksum-verified."""
    return _check_state(load_verified(path), path)


def load_retrained(path: str | Path, ema: bool | None = None) -> nn.Module:
    """The trained child of a ``last-*.pt`` / ``best.pt`` (eval mode, CPU). Needs no best.json
    and no YAML: the checkpoint carries its space and ops.

    ``ema=None`` returns the weights the run judged its top-1 on (the EMA's when the run kept
    one, as ``best.pt`` is chosen on them); True/False picks the EMA / raw weights.
    """
    from ..space import space_from_dict

    state = _read(path)
    space = space_from_dict(state["space"], source=state.get("space_source", str(path)))
    config = state["config"]
    model = space.build_child(state["ops"], num_classes=int(state["num_classes"]),
                              drop_path_rate=float(config.get("drop_path_rate") or 0.0))
    if ema is None:
        ema = state.get("weights") == "ema"
    if ema:
        if state.get("ema") is None:
            raise QnasError(f"{path} has no EMA weights (the run had --no-ema); load it with "
                            f"ema=False")
        weights = {k[len("module."):]: v for k, v in state["ema"].items()
                   if k.startswith("module.")}
    else:
        weights = state["model"]
    model.load_state_dict(weights, strict=True)
    return model.eval()


# --- entry point ------------------------------------------------------------------------------

def retrain(best_path: str | Path, config: RetrainConfig | None = None,
            out: str | Path | None = None, resume: bool = False, progress: bool = False,
            echo: Callable[[str], None] | None = None,
            stop_after_epochs: int | None = None) -> RetrainResult:
    """Train the child of ``best_path`` (a best.json) and report its validation top-1.

    Args:
        best_path: the best.json of a search.
        config: the recipe and data (default :class:`RetrainConfig`).
        out: run folder (default ``<best.json's folder>/retrain``). A folder that already holds
            a run is refused unless ``resume``.
        resume: continue the run in ``out`` from its newest good checkpoint.
        progress: show a tqdm bar; ``echo`` receives one line per epoch and messages.
        stop_after_epochs: run at most this many epochs in this call, then return with
            ``finished=False`` (resume later).

    Everything that can be refused (best.json, options, data, supernet for ``inherit``, the out
    folder) is checked before anything is written.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    echo = echo or (lambda message: None)
    config = config if config is not None else RetrainConfig()
    if not isinstance(config, RetrainConfig):
        raise QnasError(f"config must be a RetrainConfig, got {type(config).__name__}")
    distributed.init()
    if not distributed.is_main():
        echo = lambda message: None  # noqa: E731 -- only rank 0 reports
    best = load_best(best_path)
    config = config.resolved(best)
    out = Path(out) if out is not None else default_out(best)
    resuming = _check_out(out, resume)
    data = load_dataset(config.data, resolution=config.resolution, seed=config.seed)
    if stop_after_epochs is not None and (not isinstance(stop_after_epochs, int)
                                          or stop_after_epochs < 1):
        raise QnasError(f"stop after must be a positive integer, got {stop_after_epochs!r}")

    with training_threads_scope(config.threads):
        run = _Run(best, config, data, out, echo)
        last = run.restore() if resuming else None
        params = sum(p.numel() for p in run.model.parameters())
        echo(f"retraining {best.space.describe_ops(best.ops)} ({params / 1e6:.2f}M params, "
             f"init {config.init}) on {data.name} at {config.resolution}px: "
             f"{len(data.train)} train / {len(data.val)} val images, {config.epochs} epochs × "
             f"{run.steps_per_epoch} steps")
        echo(f"AdamW lr {config.effective_lr:.3g} (base {config.lr:g} at batch "
             f"{LR_REFERENCE_BATCH} × {config.global_batch}/{LR_REFERENCE_BATCH}), wd "
             f"{config.weight_decay:g}, warm-up {config.warmup_epochs} epoch(s) then cosine, "
             f"clip {config.clip_grad}, smoothing {config.smoothing:g}, drop-path "
             f"{config.drop_path_rate:g}, EMA {'on' if config.ema else 'off'}, augmentation "
             f"{'on' if run.augment else 'off'}")
        if last is not None:
            echo(f"resumed from {last} at epoch {run.epoch + 1}"
                 + (f", step {run.step_in_epoch}" if run.step_in_epoch else ""))
        remaining = config.epochs - run.epoch
        if stop_after_epochs is not None:
            remaining = min(remaining, stop_after_epochs)
        bar = tqdm(total=run.total_steps,
                   initial=run.epoch * run.steps_per_epoch + run.step_in_epoch, unit="step",
                   desc="retrain", disable=not progress or not distributed.is_main(),
                   dynamic_ncols=True, leave=False)
        try:
            with StopOnSignals() as stop:
                for _ in range(remaining):
                    row = run.train_epoch(bar, stop)
                    score = run.score(row)
                    improved = score > run.best_top1
                    if improved:
                        run.best_top1, run.best_epoch = score, row["epoch"]
                    run.save(improved)
                    echo(_row_text(row, config.epochs))
                    if distributed.all_reduce_sum([float(stop.requested is not None)])[0]:
                        run.stop(stop)
        finally:
            bar.close()

    finished = run.epoch >= config.epochs
    log = pd.DataFrame(run.rows)
    last_row = run.rows[-1] if run.rows else {}
    result = RetrainResult(
        out=out, finished=finished, top1=float(last_row.get("val_top1", float("nan"))),
        best_top1=run.best_top1, best_epoch=run.best_epoch,
        ema_top1=float(last_row["ema_top1"]) if config.ema and last_row else None,
        seconds=time.perf_counter() - started,
        last_path=run.store.paths()[0] if run.store.exists() else run.store.path_for(0),
        best_path=out / BEST,
        log_path=out / LOG, summary_path=None, log=log, config=config,
        effective_lr=config.effective_lr, dataset=data.name, val_size=len(data.val),
        params=params)
    if finished and distributed.is_main():
        result.summary_path = _write_summary(result, best, run)
    return result


def _row_text(row: dict, epochs: int) -> str:
    text = (f"epoch {row['epoch']:3d}/{epochs} lr {row['lr']:.2e} loss {row['train_loss']:.3f} "
            f"train {row['train_top1']:5.1f}% val {row['val_top1']:5.1f}%")
    if not math.isnan(row["ema_top1"]):
        text += f" ema {row['ema_top1']:5.1f}%"
    return text + f" ({row['seconds']:.0f}s)"


def _write_summary(result: RetrainResult, best: BestArch, run: _Run) -> Path:
    summary = {
        "qnas_version": __version__,
        "best_json": str(best.path),
        "space": {"name": best.space.name, "hash": best.space.hash},
        "ops": list(best.ops),
        "device": best.device,
        "predicted_latency_ms": best.predicted_latency_ms,
        "dataset": result.dataset, "resolution": result.config.resolution,
        "num_classes": run.data.num_classes, "train_size": len(run.data.train),
        "val_size": result.val_size, "params": result.params,
        "val_top1": result.top1, "best_top1": result.best_top1, "best_epoch": result.best_epoch,
        "ema_top1": result.ema_top1, "best_weights": "ema" if result.config.ema else "model",
        "effective_lr": result.effective_lr,
        "train_seconds": float(sum(row["seconds"] for row in run.rows)),
        "config": result.config.as_dict(),
        "checkpoints": {"last": result.last_path.name, "best": BEST}, "log": LOG,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return write_text_atomic(result.out / SUMMARY, json.dumps(summary, indent=2) + "\n")
