"""Retrain the child of a ``best.json`` with the paper's recipe, built from timm's utilities.

The recipe (QuadraNet/ConvNeXt training, ``timm/train.py``; its settings and defaults are
:class:`qnas.train.config.RetrainConfig`):

- AdamW (``timm.optim.create_optimizer_v2``), weight decay 0.05 (not on biases, norms and
  layer-scale γ), learning rate ``lr × batch / 4096`` (linear scaling from a base lr at batch
  4096; see :mod:`qnas.train.config` for the default's reason);
- a linear warm-up, then cosine annealing, per optimiser step (``timm.scheduler.CosineLRScheduler``);
- gradient clipping at norm 5 (``timm.utils.dispatch_clip_grad``);
- label smoothing 0.1 (``timm.loss.LabelSmoothingCrossEntropy``);
- DropPath (stochastic depth, linear over the layers) from the model itself;
- optionally an EMA of the weights (``timm.utils.ModelEmaV3``, with decay warm-up);
- augmentation: CIFAR-10 gets the standard random crop (pad 4) + horizontal flip
  (:mod:`qnas.data.augment`, seeded per epoch); ImageFolder datasets use their own torchvision
  transforms; digits and synthetic are not augmented by default — they are 8×8 images
  upsampled, so the smallest useful shift is a whole original pixel, and in short runs it slowed
  convergence (digits, 10 epochs, seed 1: 96.4% with it, 98.3% without).

:class:`RetrainRun` is the child's training on the one resumable loop
(:class:`qnas.runtime.loop.ResumableRun`: run folder, checkpoints with every RNG state,
signals, torchrun, resume). A run folder (default ``<best.json's folder>/retrain/``) holds
``last-<step>.pt`` (the newest two), ``best.pt`` (the epoch with the best validation top-1),
``retrain_log.csv`` and, at the end, ``retrain.json``. :func:`load_retrained` turns either
``.pt`` back into a network.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3, dispatch_clip_grad
from torch import nn
from torch.utils.data import TensorDataset

from .. import __version__
from ..data import DatasetSplits, load_dataset
from ..data.augment import FLIP_DATASETS, default_padding, random_shift_flip
from ..errors import QnasError
from ..nas.best import BestArch, load_best
from ..nas.evaluator import epoch_loader, evaluate_top1, loader_seed
from ..nas.supernet import load_supernet
from ..runtime import distributed
from ..runtime.checkpoints import CheckpointStore, load_verified, save_verified
from ..runtime.files import write_csv_atomic, write_json_atomic
from ..runtime.loop import CONFIG, ResumableRun, open_run_folder
from ..runtime.threads import TRAINING, torch_threads
from ..space import space_from_dict
from .config import LR_REFERENCE_BATCH, RetrainConfig

LAST, BEST, LOG, SUMMARY = "last", "best.pt", "retrain_log.csv", "retrain.json"
CHECKPOINT_FORMAT = "qnas-retrain-checkpoint"
FORMAT_VERSION = 2
TRAIN_STREAM, VAL_STREAM, AUGMENT_STREAM = 10, 12, 13   # loader_seed streams (≠ the search's)


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


def has_checkpoint(folder: str | Path) -> bool:
    """Whether ``folder`` holds a retraining checkpoint to resume (``last-*.pt``)."""
    return CheckpointStore(folder, prefix=LAST).exists()


def default_out(best: BestArch) -> Path:
    return best.path.parent / "retrain"


def inherit_weights(best: BestArch, model: nn.Module, num_classes: int) -> None:
    """Load the supernet's weights of the chosen ops into ``model`` (the child)."""
    path = best.supernet_checkpoint
    if not path.is_file():
        raise QnasError(f"--init inherit needs the supernet checkpoint {path} named in "
                        f"{best.path}, and it does not exist; use --init scratch")
    supernet = load_supernet(path, space=best.space)       # read once: it can be large
    if supernet.num_classes != num_classes:
        raise QnasError(f"--init inherit: the supernet {path} was trained on "
                        f"{supernet.num_classes} classes, the retraining data has "
                        f"{num_classes}; retrain on the search's data (--data) or use "
                        f"--init scratch")
    try:
        model.load_state_dict(supernet.child_state_dict(best.ops), strict=True)
    except RuntimeError as err:
        raise QnasError(f"--init inherit: the supernet's weights do not fit the child of "
                        f"{best.path}: {str(err).splitlines()[0]}") from None


@torch.no_grad()
def check_fits(model: nn.Module, data: DatasetSplits, best: BestArch) -> None:
    """One forward pass on a validation image: a resolution too small for the network's
    strides fails here, with a message, before anything is written."""
    was_training = model.training
    model.eval()
    try:
        model(data.val[0][0].unsqueeze(0))
    except RuntimeError as err:
        raise QnasError(f"the child of {best.path} cannot run at {data.resolution}px "
                        f"({str(err).splitlines()[0]}); use a larger --resolution, e.g. 32 "
                        f"or more") from None
    finally:
        model.train(was_training)


class RetrainRun(ResumableRun):
    """One retraining run: the child, the recipe's objects, its steps and checkpoints."""

    checkpoint_format = CHECKPOINT_FORMAT
    checkpoint_version = FORMAT_VERSION
    checkpoint_prefix = LAST
    what = "retraining run"
    progress_label = "retrain"

    def __init__(self, best: BestArch, config: RetrainConfig, data: DatasetSplits, out: Path,
                 echo: Callable[[str], None] | None = None):
        super().__init__(out, config.identity(), echo)
        self.best, self.config, self.data = best, config, data
        c = config
        torch.manual_seed(c.seed)
        self.model = best.build_child(num_classes=data.num_classes,
                                      drop_path_rate=c.drop_path_rate)
        check_fits(self.model, data, best)
        if c.init == "inherit":
            inherit_weights(best, self.model, data.num_classes)
        self.device = distributed.training_device()
        self.model.to(self.device)
        self.train_model = distributed.wrap(self.model)     # DDP averages the gradients
        # the global RNG draws DropPath masks: one stream per rank (as timm's train.py seeds
        # seed + rank), or every rank would drop the same samples of its shard
        torch.manual_seed(c.seed + distributed.rank())
        self.steps_per_epoch = len(self._loader(0))
        if self.steps_per_epoch == 0:
            raise QnasError(f"the training split of {data.name} is empty")
        self.total_epochs = c.epochs
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
        self.ema = ModelEmaV3(self.model, decay=c.ema_decay, use_warmup=True) if c.ema else None
        # in-memory datasets get random translation (+ flips); ImageFolder has its transforms
        self.augment = c.augment and isinstance(data.train, TensorDataset)
        self.best_top1, self.best_epoch = -1.0, 0
        self._improved = False

    # --- the loop's hooks -------------------------------------------------------------------
    def _loader(self, epoch: int):
        return epoch_loader(self.data.train, self.config.batch_size, self.config.seed, epoch,
                            TRAIN_STREAM)

    def batches(self, epoch: int):
        self.model.train()
        generator = torch.Generator().manual_seed(loader_seed(self.config.seed, epoch,
                                                              AUGMENT_STREAM))
        padding = default_padding(self.data.resolution)
        flip = self.data.name in FLIP_DATASETS
        for images, labels in self._loader(epoch):
            if self.augment:     # also for skipped batches: the generator advances the same
                images = random_shift_flip(images, generator, padding, flip)
            yield images, labels

    def step(self, batch, epoch: int, index: int) -> dict:
        """One optimiser step (loss with label smoothing, clipped gradients, AdamW, EMA)."""
        step = epoch * self.steps_per_epoch + index
        self.scheduler.step_update(step)
        images, labels = batch[0].to(self.device), batch[1].to(self.device)
        logits = self.train_model(images)
        loss = self.criterion(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip_grad is not None:
            dispatch_clip_grad(self.model.parameters(), self.config.clip_grad, mode="norm")
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, step=step + 1)
        return {"loss": loss.item() * len(labels),
                "correct": (logits.argmax(1) == labels).sum().item(), "count": len(labels)}

    def check_step(self, totals: dict, epoch: int, index: int) -> None:
        self.require_finite(totals["loss"] / max(totals["count"], 1), "training", epoch, index,
                            "a lower --lr")

    def end_epoch(self, epoch: int, sums: dict) -> dict:
        count = max(sums.get("count", 0.0), 1.0)
        loader = epoch_loader(self.data.val, 256, self.config.seed, 0, VAL_STREAM, shuffle=False)
        parallel = distributed.is_initialized()
        row = {"lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": sums.get("loss", 0.0) / count,
               "train_top1": 100.0 * sums.get("correct", 0.0) / count,
               "val_top1": evaluate_top1(self.model, loader, distributed=parallel),
               "ema_top1": (evaluate_top1(self.ema.module, loader, distributed=parallel)
                            if self.ema is not None else math.nan)}
        # best.pt is chosen on the EMA's top-1 when the EMA is on (as timm does)
        score = row["ema_top1"] if self.ema is not None else row["val_top1"]
        self._improved = score > self.best_top1
        if self._improved:
            self.best_top1, self.best_epoch = score, epoch + 1
        return row

    def row_text(self, row: dict) -> str:
        text = (f"epoch {row['epoch']:3d}/{self.total_epochs} lr {row['lr']:.2e} loss "
                f"{row['train_loss']:.3f} train {row['train_top1']:5.1f}% val "
                f"{row['val_top1']:5.1f}%")
        if not math.isnan(row["ema_top1"]):
            text += f" ema {row['ema_top1']:5.1f}%"
        return text + f" ({row['seconds']:.0f}s)"

    # --- checkpoint state -------------------------------------------------------------------
    def state_dict(self) -> dict:
        best = self.best
        return {
            "best_json": {"path": str(best.path), "space": best.space.name,
                          "space_hash": best.space.hash, "ops": list(best.ops),
                          "device": best.device},
            "space": best.space.raw, "space_source": best.space.source, "ops": list(best.ops),
            "num_classes": self.data.num_classes, "dataset": self.data.name,
            "resolution": self.data.resolution, "steps": self.global_step,
            "effective_lr": self.config.effective_lr,
            "model": {k: v.cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best_top1": self.best_top1, "best_epoch": self.best_epoch,
            "weights": "ema" if self.ema is not None else "model"}

    def load_state_dict(self, state: dict) -> None:
        if isinstance(state.get("sums"), list):        # format 1 kept them as a list
            state["sums"] = dict(zip(("loss", "correct", "count"), state["sums"]))
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
        self.best_top1, self.best_epoch = float(state["best_top1"]), int(state["best_epoch"])

    def save_extra(self, state: dict) -> None:
        if self._improved and self.step_in_epoch == 0:     # not on a mid-epoch stop
            save_verified(state, self.out / BEST)
            self._improved = False

    def write_logs(self) -> None:
        if self.rows:
            write_csv_atomic(pd.DataFrame(self.rows), self.out / LOG)


def read_retrain_checkpoint(path: str | Path) -> dict:
    """A retraining checkpoint (``last-*.pt`` / ``best.pt``), checksum-verified."""
    state = load_verified(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise QnasError(f"{path} is not a qnas retraining checkpoint (last-*.pt / best.pt of "
                        f"'qnas retrain')")
    if int(state.get("format_version", 0)) > FORMAT_VERSION:
        raise QnasError(f"{path} has checkpoint format {state['format_version']}, newer than "
                        f"this qnas ({__version__}) reads ({FORMAT_VERSION}); upgrade qnas")
    return state


def load_retrained(path: str | Path, ema: bool | None = None) -> nn.Module:
    """The trained child of a ``last-*.pt`` / ``best.pt`` (eval mode, CPU). Needs no best.json
    and no YAML: the checkpoint carries its space and ops.

    ``ema=None`` returns the weights the run judged its top-1 on (the EMA's when the run kept
    one, as ``best.pt`` is chosen on them); True/False picks the EMA / raw weights.
    """
    state = read_retrain_checkpoint(path)
    space = space_from_dict(state["space"], source=state.get("space_source", str(path)))
    model = space.build_child(state["ops"], num_classes=int(state["num_classes"]),
                              drop_path_rate=float(state["config"].get("drop_path_rate") or 0.0))
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
    started = time.perf_counter()
    config = config if config is not None else RetrainConfig()
    if not isinstance(config, RetrainConfig):
        raise QnasError(f"config must be a RetrainConfig, got {type(config).__name__}")
    distributed.init()
    best = load_best(best_path)
    config = config.resolved(best)
    out = Path(out) if out is not None else default_out(best)
    resuming = open_run_folder(out, resume, CheckpointStore(out, prefix=LAST),
                               "retraining run", (BEST, LOG, SUMMARY, CONFIG))
    data = load_dataset(config.data, resolution=config.resolution, seed=config.seed)
    with torch_threads(config.threads, TRAINING):
        run = RetrainRun(best, config, data, out, echo)
        run.begin(resuming, config.as_dict())
        params = sum(p.numel() for p in run.model.parameters())
        run.echo(f"retraining {best.space.describe_ops(best.ops)} ({params / 1e6:.2f}M params, "
                 f"init {config.init}) on {data.name} at {config.resolution}px: "
                 f"{len(data.train)} train / {len(data.val)} val images, {config.epochs} "
                 f"epochs × {run.steps_per_epoch} steps")
        run.echo(f"AdamW lr {config.effective_lr:.3g} (base {config.lr:g} at batch "
                 f"{LR_REFERENCE_BATCH} × {config.global_batch}/{LR_REFERENCE_BATCH}), wd "
                 f"{config.weight_decay:g}, warm-up {config.warmup_epochs} epoch(s) then "
                 f"cosine, clip {config.clip_grad}, smoothing {config.smoothing:g}, drop-path "
                 f"{config.drop_path_rate:g}, EMA {'on' if config.ema else 'off'}, "
                 f"augmentation {'on' if run.augment else 'off'}")
        run.run(stop_after_epochs, progress)

    last_row = run.rows[-1] if run.rows else {}
    result = RetrainResult(
        out=out, finished=run.finished, top1=float(last_row.get("val_top1", math.nan)),
        best_top1=run.best_top1, best_epoch=run.best_epoch,
        ema_top1=float(last_row["ema_top1"]) if config.ema and last_row else None,
        seconds=time.perf_counter() - started,
        last_path=run.store.paths()[0] if run.store.exists() else run.store.path_for(0),
        best_path=out / BEST, log_path=out / LOG, summary_path=None,
        log=pd.DataFrame(run.rows), config=config, effective_lr=config.effective_lr,
        dataset=data.name, val_size=len(data.val), params=params)
    if run.finished and distributed.is_main():
        result.summary_path = write_summary(result, best, run)
    return result


def write_summary(result: RetrainResult, best: BestArch, run: RetrainRun) -> Path:
    """``retrain.json``: what was trained, on what, and how well."""
    return write_json_atomic(result.out / SUMMARY, {
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
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
