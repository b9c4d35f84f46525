"""Retrain the child of a ``best.json`` with the paper's recipe, built from timm's utilities.

The recipe (QuadraNet/ConvNeXt training, ``timm/train.py``; its settings and defaults are
:class:`qnas.train.config.RetrainConfig`):

- AdamW (``timm.optim.create_optimizer_v2``), weight decay 0.05 (not on biases, norms and
  layer-scale γ), peak learning rate ``--lr`` as given, or ``--lr-base × batch /
  --lr-base-size`` (linear scaling, as timm; see :mod:`qnas.train.config` for the default's
  reason) — the run's first line says which;
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
``retrain_log.csv``, ``run.log`` (every message, with timestamps), ``tensorboard/`` with
``tensorboard=True`` and, at the end, ``retrain.json``. :func:`load_retrained` turns either
``.pt`` back into a network. ``--init inherit`` reads the child's weights from the search's
``child.pt`` (the supernet checkpoint for a best.json of qnas < 0.2).

On a GPU (:mod:`qnas.runtime.precision`): ``precision`` (default ``auto``: bf16 autocast where
the GPU has it, fp32 on a CPU as before; fp16 with timm-style loss scaling), ``channels_last``,
``compile`` (``torch.compile`` of the training forward; validation and the EMA run eagerly),
pinned batches and, for datasets read from files, worker processes; cuDNN autotuning. Running
out of memory ends the run with one line and leaves the last checkpoint to resume from
(:mod:`qnas.runtime.loop`).
"""
from __future__ import annotations

import contextlib
import json
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
from torch.utils.data import Dataset, TensorDataset

from .. import __version__
from ..data import DatasetSplits, load_dataset
from ..data.augment import FLIP_DATASETS, default_padding, random_shift_flip
from ..errors import QnasError
from ..nas.best import BestArch, load_best
from ..nas.evaluator import epoch_loader, evaluate_top1, loader_seed
from ..runtime import distributed
from ..runtime.checkpoints import CheckpointStore, load_verified, save_verified
from ..runtime.files import write_csv_atomic, write_json_atomic
from ..runtime.log import run_log
from ..runtime.loop import CONFIG, ResumableRun, open_run_folder
from ..runtime.precision import (
    Precision,
    loader_settings,
    prepare_device,
    to_device,
    to_memory_format,
)
from ..runtime.threads import TRAINING, torch_threads
from ..space import space_from_dict
from .config import RetrainConfig

LAST, BEST, LOG, SUMMARY = "last", "best.pt", "retrain_log.csv", "retrain.json"
TEST = "test.json"           # a finished run's score on a test split (score_on_test)
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


def compile_model(model: nn.Module) -> nn.Module:
    """``torch.compile(model)`` (the module shares the weights; compiling happens at its first
    call), refused with one line where torch.compile is not available."""
    if not hasattr(torch, "compile"):
        raise QnasError(f"--compile needs torch.compile (torch ≥ 2.0; this is "
                        f"{torch.__version__}); run without --compile")
    return torch.compile(model)


@contextlib.contextmanager
def compile_errors(active: bool):
    """With ``--compile``: a failure of the compiler (no C++ compiler, an unsupported op) as
    one line instead of a compiler's traceback."""
    if not active:
        yield
        return
    try:
        yield
    except Exception as err:
        from torch._dynamo.exc import TorchDynamoException

        if not isinstance(err, TorchDynamoException):
            raise
        first = " ".join(str(err).split())[:200]
        raise QnasError(f"--compile: torch.compile failed ({type(err).__name__}: {first}); "
                        f"run without --compile") from None


def describe_training(run: ResumableRun, channels_last: bool, compiled: bool) -> None:
    """The run's arithmetic in run.log: a line on the console where it is not plain eager
    fp32, and the note of fp16 on a CPU."""
    extras = [name for name, on in (("channels-last", channels_last),
                                    ("torch.compile", compiled)) if on]
    text = f"training on {run.device} in {run.precision.describe()}" + "".join(
        f", {extra}" for extra in extras)
    (run.echo if run.precision.mixed or compiled else run.debug)(text)
    note = run.precision.note()
    if note:
        run.echo(note)


def default_out(best: BestArch) -> Path:
    return best.path.parent / "retrain"


def inherit_weights(best: BestArch, model: nn.Module, num_classes: int,
                    echo: Callable[[str], None] | None = None) -> str:
    """Load the child's weights inherited from the supernet into ``model``: from the search's
    ``child.pt``, else (older best.json) from the supernet checkpoint. Returns where from."""
    try:
        state, classes, source = best.inherited_state(echo)
    except QnasError as err:
        raise QnasError(f"--init inherit: {err}; or use --init scratch") from None
    if classes != num_classes:
        raise QnasError(f"--init inherit: the supernet behind {source} was trained on "
                        f"{classes} classes, the retraining data has {num_classes}; retrain "
                        f"on the search's data (--data) or use --init scratch")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise QnasError(f"--init inherit: the inherited weights do not fit the child of "
                        f"{best.path}: {str(err).splitlines()[0]}") from None
    return source


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
        super().__init__(out, config.identity(), echo, tensorboard=config.tensorboard)
        self.best, self.config, self.data = best, config, data
        c = config
        torch.manual_seed(c.seed)
        self.model = best.build_child(num_classes=data.num_classes,
                                      drop_path_rate=c.drop_path_rate)
        check_fits(self.model, data, best)
        self.inherited_from = None
        if c.init == "inherit":
            self.inherited_from = inherit_weights(best, self.model, data.num_classes, self.echo)
        self.device = distributed.training_device(c.accelerator)
        self.precision = Precision(c.precision, self.device)
        prepare_device(self.device)
        self.loading = loader_settings(self.device, c.workers)
        self.batch_size = c.batch_size
        self.model.to(self.device)
        to_memory_format(self.model, c.channels_last)
        # DDP averages the gradients; torch.compile goes around it (as torch's DDP notes say)
        self.train_model = distributed.wrap(self.model)
        if c.compile:
            self.train_model = compile_model(self.train_model)
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
                            TRAIN_STREAM, loading=self.loading)

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
        images = to_device(batch[0], self.device, self.config.channels_last)
        labels = batch[1].to(self.device, non_blocking=batch[1].is_pinned())
        with self.precision.autocast(), compile_errors(self.config.compile):
            logits = self.train_model(images)
        loss = self.criterion(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        with compile_errors(self.config.compile):
            self.precision.backward(loss)
        clip = None
        if self.config.clip_grad is not None:
            def clip():
                dispatch_clip_grad(self.model.parameters(), self.config.clip_grad, mode="norm")
        self.precision.step(self.optimizer, clip)
        if self.ema is not None:
            self.ema.update(self.model, step=step + 1)
        return {"loss": loss.item() * len(labels),
                "correct": (logits.argmax(1) == labels).sum().item(), "count": len(labels)}

    def check_step(self, totals: dict, epoch: int, index: int) -> None:
        self.require_finite(totals["loss"] / max(totals["count"], 1), "training", epoch, index,
                            "a lower --lr")

    def end_epoch(self, epoch: int, sums: dict) -> dict:
        count = max(sums.get("count", 0.0), 1.0)
        loader = epoch_loader(self.data.val, 256, self.config.seed, 0, VAL_STREAM, shuffle=False,
                              loading=self.loading)
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

    def scalars(self, row: dict) -> dict:
        """TensorBoard: training loss, top-1 (train, validation, EMA), lr per epoch."""
        names = {"train_loss": "loss/train", "train_top1": "top1/train",
                 "val_top1": "top1/val", "ema_top1": "top1/val_ema", "lr": "lr"}
        return {tag: row[key] for key, tag in names.items() if key in row}

    def upgrade_settings(self, recorded: dict) -> dict:
        """A checkpoint of qnas < 0.2 recorded ``lr`` as the base rate at batch 4096."""
        return RetrainConfig.upgrade(recorded)[0]

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
            "precision": self.precision.state_dict(),
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
        self.precision.load_state_dict(state.get("precision"), self.echo)
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

    Everything that can be refused (best.json, options, data, the inherited weights for
    ``inherit``, the out folder) is checked before anything is written. Every message also goes
    into ``out/run.log``; the first states the learning rate the run trains at.
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
    with run_log(out), torch_threads(config.threads, TRAINING) as threads:
        run = RetrainRun(best, config, data, out, echo)
        params = sum(p.numel() for p in run.model.parameters())
        run.echo(f"retraining {best.space.describe_ops(best.ops)} at {config.describe_lr()}, "
                 f"batch {config.global_batch}, {config.epochs} epochs × "
                 f"{run.steps_per_epoch} steps on {data.name} at {config.resolution}px "
                 f"({len(data.train)} train / {len(data.val)} val images; {params / 1e6:.2f}M "
                 f"params, init {config.init}"
                 + (f" from {run.inherited_from}" if run.inherited_from else "") + ")")
        run.echo(f"AdamW wd {config.weight_decay:g}, warm-up {config.warmup_epochs} epoch(s) "
                 f"then cosine to {min(config.min_lr, config.effective_lr):.3g}, clip "
                 f"{config.clip_grad}, smoothing {config.smoothing:g}, drop-path "
                 f"{config.drop_path_rate:g}, EMA {'on' if config.ema else 'off'}, "
                 f"augmentation {'on' if run.augment else 'off'}")
        run.begin(resuming, config.as_dict())
        run.debug(f"{threads} torch thread(s), training on {run.device}")
        describe_training(run, config.channels_last, config.compile)
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


def score_on_test(folder: str | Path, test: Dataset, split: str, batch_size: int = 500) -> float:
    """Top-1 (%) of a finished retraining's final weights — those its ``val_top1`` is of — on a
    test split (:func:`qnas.data.load_test_split`). ``split`` names the split (e.g.
    ``"digit-pairs:val=3000,split=0 test=20000"``); the score is kept in ``folder/test.json``
    and reused while the name is the same."""
    folder = Path(folder)
    cached = folder / TEST
    if cached.is_file():
        try:
            record = json.loads(cached.read_text())
        except (OSError, ValueError):
            record = {}
        if record.get("split") == split and isinstance(record.get("test_top1"), (int, float)):
            return float(record["test_top1"])
    if not (folder / SUMMARY).is_file():
        raise QnasError(f"{folder} holds no finished retraining ({SUMMARY}) to score on a test "
                        f"split; finish it first (qnas retrain … --resume --out {folder})")
    last = folder / json.loads((folder / SUMMARY).read_text())["checkpoints"]["last"]
    if not last.is_file():
        raise QnasError(f"{last} is gone (kept checkpoints pruned?): the final weights of "
                        f"{folder} are needed to score it on a test split")
    model = load_retrained(last)
    top1 = evaluate_top1(model, epoch_loader(test, batch_size, 0, 0, VAL_STREAM, shuffle=False))
    write_json_atomic(cached, {"split": split, "test_top1": top1, "size": len(test),
                               "weights": last.name,
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return top1


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
