"""What defines a retraining run: :class:`RetrainConfig`, the one source of the recipe's
defaults and help texts (the CLI derives ``qnas retrain``'s options from it). No torch here.

**Learning rate, as timm sets it.** ``--lr`` is the optimiser's peak learning rate, used as
given (``--lr 1e-3`` trains at 1e-3 whatever the batch). Without it the rate is scaled linearly
from a base rate: ``--lr-base × global batch / --lr-base-size`` (timm's ``--lr-base`` and
``--lr-base-size``). The run's first line states the rate it uses and where it came from.

**Default learning rate.** The paper's base lr 4e-3 at batch 4096 is meant for 300 ImageNet
epochs (~94k optimiser steps). The embedded digits data has 1,437 training images: at the default
batch 64 an epoch is 22 steps, and the scaled lr 4e-3 × 64/4096 = 6.25e-5 barely moves the
network in the ~200 steps a short run has (measured: ~92% on digits in 10 epochs, under the 95%
target). The default keeps the recipe's form — a base lr at batch 4096, scaled linearly — with
a base lr 32× the paper's, 0.128, i.e. 2e-3 at batch 64 (the rate ConvNeXt-style AdamW training
commonly uses on small datasets). ``--lr-base 4e-3`` gives the paper's value.

**Older configs.** Before qnas 0.2 ``lr`` WAS the base rate at batch 4096 (there was no
``lr_base``). :meth:`RetrainConfig.upgrade` maps such a ``config.json`` (``lr`` without
``lr_base``) to ``lr_base`` = that value at ``lr_base_size`` 4096, which trains exactly as it did;
a checkpoint of such a run resumes the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import QnasError
from ..runtime.accelerator import ACCELERATOR_HELP, ACCELERATORS, check_accelerator
from ..runtime.precision import (
    CHANNELS_LAST_HELP,
    PRECISION_HELP,
    PRECISIONS,
    WORKERS_HELP,
    WORKERS_SHOWN,
    check_precision,
)
from ..settings import check_int, check_number, setting, to_dict

PAPER_LR = 4e-3                 # the paper's base lr ...
LR_REFERENCE_BATCH = 4096       # ... at this batch size (the default --lr-base-size)
DEFAULT_LR_BASE = 32 * PAPER_LR  # 0.128 at 4096: 2e-3 at batch 64
DEFAULT_DROP_PATH = 0.1         # the QuadraNet macro's; spaces without DropPath get 0
INITS = ("scratch", "inherit")


@dataclass
class RetrainConfig:
    """Everything that defines a retraining run (``threads``, ``accelerator``, ``precision``,
    ``channels_last``, ``compile``, ``workers`` and ``tensorboard`` only change how it runs).

    The optimiser's peak rate is :attr:`effective_lr`: ``lr`` when given (absolute, as timm's
    ``--lr``), else ``lr_base × global batch / lr_base_size`` (``batch_size`` per process ×
    processes). Fields left at None are filled from best.json by :meth:`resolved`.
    """

    epochs: int = setting(10, help="Training epochs.")
    batch_size: int = setting(64, help="Batch size (per process).")
    lr: float | None = setting(None, metavar="LR", shown="--lr-base × batch / --lr-base-size",
                               help="Peak learning rate of AdamW, used as given (timm's --lr).")
    lr_base: float = setting(DEFAULT_LR_BASE, metavar="LR",
                             help="Without --lr: the base rate at --lr-base-size images per "
                                  "step, scaled linearly to the global batch (0.128: 2e-3 at "
                                  "batch 64; the paper's is 4e-3).")
    lr_base_size: int = setting(LR_REFERENCE_BATCH, metavar="N",
                                help="The batch size --lr-base is given for.")
    weight_decay: float = setting(0.05, help="AdamW weight decay (not on biases, norms, γ).")
    warmup_epochs: int = setting(1, help="Linear warm-up epochs before the cosine.")
    warmup_lr: float = setting(1e-6, help="Learning rate at the first warm-up step.", cli=False)
    min_lr: float = setting(1e-6, help="Learning rate at the end of the cosine.", cli=False)
    clip_grad: float | None = setting(5.0, help="Clip the gradient norm (none: off).",
                                      cli=False)
    smoothing: float = setting(0.1, help="Label smoothing.", cli=False)
    drop_path_rate: float | None = setting(None, option="--drop-path",
                                           shown="0.1; 0 for mbconv spaces",
                                           help="DropPath (stochastic depth) rate.")
    ema: bool = setting(False, flag="--no-ema", help="Keep an EMA of the weights (best.pt is "
                                                     "then chosen on the EMA's top-1).")
    ema_decay: float = setting(0.9998, help="EMA decay after its warm-up.", cli=False)
    augment: bool | None = setting(None, help="Random shift + flip (default: CIFAR-10 only).",
                                   cli=False)
    init: str = setting("scratch", choices=INITS,
                        help="Fresh weights, or the supernet's weights of the chosen ops.")
    data: str = setting("digit-pairs", help="Dataset: digit-pairs (the embedded benchmark), "
                                            "digits, synthetic, cifar10:PATH, "
                                            "imagefolder:PATH.")
    resolution: int | None = setting(None, shown="the search's, from best.json",
                                     help="Training resolution.")
    seed: int = setting(0, help="Seed of the split, the initialisation and the batch order.")
    threads: int | None = setting(None, shown="all cores but one",
                                  help="torch intra-op threads.")
    accelerator: str = setting("auto", choices=ACCELERATORS, help=ACCELERATOR_HELP)
    # how the arithmetic is done and the data moves (qnas.runtime.precision), not what is
    # trained: none of them is compared on resume (see NOT_IDENTITY)
    precision: str = setting("auto", choices=PRECISIONS, help=PRECISION_HELP)
    channels_last: bool = setting(False, help=CHANNELS_LAST_HELP)
    compile: bool = setting(False, help="Compile the child with torch.compile (the first steps "
                                        "take longer while it compiles; validation runs "
                                        "eagerly).")
    workers: int | None = setting(None, shown=WORKERS_SHOWN, help=WORKERS_HELP)
    tensorboard: bool = setting(False, help="Also write TensorBoard scalars per epoch (loss, "
                                            "top-1, lr) to <out>/tensorboard/ (needs: pip "
                                            "install tensorboard).")

    def __post_init__(self):
        check_int(self.epochs, "epochs", 1)
        check_int(self.batch_size, "batch_size", 1)
        check_int(self.warmup_epochs, "warmup_epochs", 0)
        check_int(self.seed, "seed", 0)
        if self.lr is not None:
            check_number(self.lr, "lr", 0, low_open=True)
        check_number(self.lr_base, "lr_base", 0, low_open=True)
        check_int(self.lr_base_size, "lr_base_size", 1)
        self.accelerator = check_accelerator(self.accelerator)
        self.precision = check_precision(self.precision)
        for name in ("channels_last", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise QnasError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.workers is not None:
            check_int(self.workers, "workers", 0)
        if not isinstance(self.tensorboard, bool):
            raise QnasError(f"tensorboard must be True or False, got {self.tensorboard!r}")
        check_number(self.weight_decay, "weight_decay", 0)
        check_number(self.warmup_lr, "warmup_lr", 0)
        check_number(self.min_lr, "min_lr", 0)
        check_number(self.smoothing, "smoothing", 0, 1)
        check_number(self.ema_decay, "ema_decay", 0, 1, low_open=True)
        if self.clip_grad is not None:
            check_number(self.clip_grad, "clip_grad", 0, low_open=True)
        if self.drop_path_rate is not None:
            check_number(self.drop_path_rate, "drop_path_rate", 0, 1)
        if self.resolution is not None:
            check_int(self.resolution, "resolution", 8)
        if self.threads is not None:
            check_int(self.threads, "threads", 1)
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
        from ..runtime import distributed

        return self.batch_size * distributed.world_size()

    @property
    def effective_lr(self) -> float:
        """The optimiser's peak learning rate: ``lr`` when given, else ``lr_base × global
        batch / lr_base_size``."""
        if self.lr is not None:
            return float(self.lr)
        return self.lr_base * self.global_batch / self.lr_base_size

    def describe_lr(self) -> str:
        """Where :attr:`effective_lr` comes from, for the run's first line."""
        if self.lr is not None:
            return f"lr {self.effective_lr:.3g} (--lr)"
        return (f"lr {self.effective_lr:.3g} (--lr-base {self.lr_base:g} × batch "
                f"{self.global_batch} / {self.lr_base_size})")

    @classmethod
    def upgrade(cls, data: dict) -> tuple[dict, list[str]]:
        """A retraining config (``config.json``) of any qnas version in today's keys, and a
        note for each key mapped: before 0.2 ``lr`` was the base rate at batch 4096 (a config
        with ``lr`` and no ``lr_base``)."""
        data, notes = dict(data), []
        if "lr_base" not in data and data.get("lr") is not None:
            data["lr_base"], data["lr_base_size"], data["lr"] = data["lr"], LR_REFERENCE_BATCH, None
            notes.append(f"written by an older qnas, where 'lr' was the base rate at batch "
                         f"{LR_REFERENCE_BATCH}: read as lr_base {data['lr_base']:g} at "
                         f"lr_base_size {LR_REFERENCE_BATCH} (the same training)")
        return data, notes

    def resolved(self, best) -> "RetrainConfig":
        """A copy with the defaults that depend on ``best`` (a loaded best.json) filled in:
        the search's resolution, DropPath 0.1 (0 for macros without it), augmentation for
        CIFAR-10 only."""
        resolution = self.resolution
        if resolution is None:
            evaluation = best.record.evaluation or {}
            resolution = evaluation.get("resolution", 32)
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
        return to_dict(self)

    # how a run goes, not what it trains: the precision changes the arithmetic (as the
    # accelerator does), so a run that ran out of memory in fp32 may resume in bf16
    NOT_IDENTITY = ("threads", "accelerator", "precision", "channels_last", "compile", "workers",
                    "tensorboard")

    def identity(self) -> dict:
        """What must match for ``resume`` (the thread count, the accelerator, the precision,
        the memory format, compilation, the loader workers and TensorBoard may change)."""
        out = self.as_dict()
        for key in self.NOT_IDENTITY:
            out.pop(key)
        return out
