"""What defines a search: :class:`SearchConfig` (and its optimiser settings,
:class:`OptimConfig`) — the one source of the search's defaults, their reasons and help texts.

The budget(s) and the device are parsed and normalised here, once: ``latency`` accepts
``"300ms"``, ``"0.3s"``, a number of ms, or several budgets (``"300ms,200ms"`` or a list: a
sweep, :mod:`qnas.nas.sweep`), and becomes milliseconds; ``device`` becomes the canonical name of
``predictors/devices.yaml`` (``cortexa76`` → ``cortexA76``). No torch at import: the CLI builds
its options and ``--help`` from these classes.

The defaults are sized for the embedded digits data (a whole search — latency table, warm-up,
search, derivation, every device's prediction — in minutes on 2 CPU cores) and differ from
ProxylessNAS's where its values cannot work at that scale; each help text says what
ProxylessNAS uses, and why qnas does not by default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

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
from ..units import budget_label, format_ms, parse_budgets

LOSS_FORMS = ("add-linear", "mul-log", "hinge")
GRAD_MODES = ("two", "full")
WEIGHT_SAMPLINGS = ("alpha", "uniform")
DERIVE_MODES = ("alpha", "alpha+eval")


def check_loss(form: str, target_ms: float, lam: float, beta: float) -> None:
    """Refuse a latency loss that cannot work (one line): an unknown form, a budget that is not
    positive, negative λ or β."""
    if form not in LOSS_FORMS:
        raise QnasError(f"unknown latency loss {form!r}; use one of: {', '.join(LOSS_FORMS)}")
    if not (math.isfinite(target_ms) and target_ms > 0):
        raise QnasError(f"latency target must be positive, got {target_ms!r} ms")
    if lam < 0 or beta < 0:
        raise QnasError("latency loss λ and β must be ≥ 0")


@dataclass
class OptimConfig:
    """The optimisers of a ProxylessNAS search: SGD-Nesterov on the weights (cosine), Adam on α."""

    weight_lr: float = setting(0.025, help="SGD-Nesterov learning rate of the weights (cosine "
                                           "per phase).")
    weight_momentum: float = setting(0.9, help="SGD momentum.", cli=False)
    weight_nesterov: bool = setting(True, help="Nesterov momentum.", cli=False)
    weight_decay: float = setting(4e-5, help="Weight decay of the weights.", cli=False)
    # ProxylessNAS: Adam lr 1e-3, one arch step per 5 weight steps — made for ~10⁵ arch steps on
    # ImageNet. A digits search has ~170 weight steps, in which α would move by ~0.03 and stay
    # uniform (measured: every layer's p ≈ 1/7 after 10 epochs). One arch step per weight step
    # at lr 0.05 lets E[LAT] reach the budget in about two epochs.
    arch_lr: float = setting(0.05, help="Adam learning rate of α (ProxylessNAS: 1e-3).")
    arch_betas: tuple[float, float] = setting((0.0, 0.999), help="Adam betas of α.", cli=False)
    arch_eps: float = setting(1e-8, help="Adam eps of α.", cli=False)
    arch_weight_decay: float = setting(0.0, help="Weight decay of α.", cli=False)
    arch_every: int = setting(1, help="One arch step per this many weight steps (ProxylessNAS: "
                                      "5).")
    grad_mode: str = setting("two", choices=GRAD_MODES,
                             help="α gradient: 'two' sampled paths per layer (the paper's "
                                  "estimator) or 'full': every candidate (the official code's "
                                  "full_v2; costlier arch steps, less noise).")
    # ProxylessNAS samples the weight steps' paths from softmax(α): the paths α favours are
    # trained more, which makes α favour them more (search vs random: α's children 70% inherited
    # top-1, random ones 45–63%, retrained alike). 'uniform' trains every path alike, as the
    # warm-up does (single-path one-shot, FairNAS), and leaves α alone to choose.
    weight_sampling: str = setting("alpha", choices=WEIGHT_SAMPLINGS,
                                   help="Paths of the search's weight steps: drawn from "
                                        "softmax(α) (ProxylessNAS) or 'uniform' (every path "
                                        "trained alike, as in the warm-up).")
    # BigNAS's sandwich rule: with shared candidates a small path (k3e2) is a slice of the
    # largest (k7e4), so its weights train in every step that runs the layer while the outer
    # kernel rings and the upper half of the hidden channels train only when a large path is
    # drawn — the supernet then scores small, early-learning children above large ones
    # (search vs random: α's children took expansion 2 only, the random children that retrained
    # best 47% expansion 4). Training the largest child in every step as well trains every
    # shared weight in every step.
    sandwich: bool = setting(False, help="Each weight step (warm-up and search) also trains the "
                                         "largest child — every layer's largest candidate — "
                                         "(BigNAS's sandwich rule; about twice the step cost).")
    alpha_init_std: float = setting(1e-3, help="α ~ N(0, std²) at the start.", cli=False)
    # the retraining recipe's clip: unclipped, a supernet at γ 0.1 can blow up in its first
    # steps (digits, seed 0: warm-up loss 2.97 in epoch 1 and 91% at its end, against 0.82 and
    # 96–99% clipped)
    grad_clip: float | None = setting(5.0, help="Clip the weights' gradient norm (none: off; "
                                                "ProxylessNAS: off).", option="--grad-clip")

    def __post_init__(self):
        self.arch_betas = tuple(float(b) for b in self.arch_betas)
        check_number(self.weight_lr, "weight_lr", 0, low_open=True)
        check_number(self.arch_lr, "arch_lr", 0, low_open=True)
        check_int(self.arch_every, "arch_every (one arch step per that many weight steps)", 1)
        if self.grad_mode not in GRAD_MODES:
            raise QnasError(f"grad_mode must be one of {', '.join(GRAD_MODES)}, got "
                            f"{self.grad_mode!r}")
        if self.weight_sampling not in WEIGHT_SAMPLINGS:
            raise QnasError(f"weight_sampling must be one of {', '.join(WEIGHT_SAMPLINGS)}, got "
                            f"{self.weight_sampling!r}")
        if self.grad_clip is not None:
            check_number(self.grad_clip, "grad_clip", 0, low_open=True)

    def as_dict(self) -> dict:
        return to_dict(self)


@dataclass
class SearchConfig:
    """Everything that defines a search — or a warm-up-only run (``device=None``)."""

    device: str | None = setting(None, help="Target device (a name from 'qnas devices'), e.g. "
                                                  "cortexA76.")
    latency: float | list[float] | str | None = setting(
        None, metavar="BUDGET",
        help="Latency budget: 300ms, 0.3s or 300000us. Several, comma-separated "
             "(300ms,200ms,120ms): one shared warm-up, one search and best.json per budget, "
             "pareto.csv and pareto.png.")
    space: str = setting("quadranet", help="Search space: a name from search_spaces/ or a YAML "
                                           "path.")
    data: str = setting("digit-pairs", help="Dataset: digit-pairs (the embedded benchmark), "
                                            "digits, synthetic, cifar10:PATH, "
                                            "imagefolder:PATH.")
    resolution: int = setting(32, help="Training resolution (latency is always predicted at the "
                                       "space's deployment input shape).")
    epochs: int = setting(10, help="Search epochs after the warm-up.")
    warmup_epochs: int | None = setting(None, shown="6; 0 with --supernet",
                                        help="Warm-up epochs (uniform paths, weights only).")
    batch_size: int = setting(64, help="Batch size of weight and arch steps (per process).")
    # hinge stops pushing once E[LAT] is within the budget, so the accuracy term decides how the
    # budget is spent. mul-log / add-linear push latency down forever: where accuracy hardly
    # depends on the architecture (digits) they collapse the search to the smallest child.
    loss: str = setting("hinge", choices=LOSS_FORMS,
                        help="How CE and E[LAT] combine (ProxylessNAS: mul-log).")
    lam: float = setting(0.1, help="λ of add-linear and hinge.")
    beta: float = setting(0.6, help="β of mul-log.")
    seed: int = setting(0, help="Seed of the split, the initialisation and the sampled paths.")
    arch_fraction: float = setting(0.2, help="Share of the training split that α learns on.",
                                   cli=False)
    supernet: str | None = setting(None, metavar="CKPT",
                                   help="Start from a warmed-up supernet (qnas train-supernet); "
                                        "skips the warm-up.")
    # The paper's γ 1e-6 suits 300-epoch training from scratch; in a supernet warmed up for a
    # few hundred steps γ barely moves under SGD. See Supernet.default_layer_scale: 1.0 for
    # shared candidates in a shallow space (there the blocks then matter), 0.1 otherwise.
    layer_scale_init: float | None = setting(None, shown="1.0 with shared candidates and ≤ 8 "
                                                         "layers a stage, else 0.1",
                                             help="γ (layer scale) init of the supernet's "
                                                  "QuadraBlocks (the paper: 1e-6).")
    # independent candidates train only when sampled (1 step in 7) and a short warm-up learns
    # to classify without the blocks: inherited top-1 then cannot tell children apart
    # (measured: the all-identity child 59.5%, the searched ones 58.7-59.0%; see
    # qnas/nn/shared_quadra.py). ProxylessNAS keeps them independent.
    weight_sharing: bool = setting(True, flag="--no-weight-sharing", help="The QuadraBlock candidates of a layer share one "
                                              "set of weights (kernel centres, first hidden "
                                              "channels), as OFA does (ProxylessNAS: "
                                              "independent).")
    # ProxylessNAS keeps the most probable child that fits. After a search of minutes α is far
    # from decided (search vs random, cortexA76 30 ms: entropy 1.54 of 1.95 nats), and that child
    # used 76% of the budget and ranked last of 10 by its top-1 with the supernet's weights: the
    # supernet knew better than α. alpha+eval keeps it as one candidate, draws more from
    # softmax(α) among the children that use the budget, and takes the best on held-out canvases
    # of the arch split (never the validation split) — only when its lead is beyond evaluation
    # noise (a paired test), since a lead of 0.1 point once picked a child that retrained worse.
    derive: str = setting("alpha+eval", choices=DERIVE_MODES,
                          help="How the child is chosen: 'alpha' the most probable one within "
                               "the budget (ProxylessNAS); 'alpha+eval' the best, by top-1 with "
                               "the supernet's weights on the arch split, of that one and "
                               "--derive-candidates more drawn from softmax(α) within "
                               "[(1 - band)·T, T] — the best replaces the most probable one "
                               "(or, when that uses less than (1 - band)·T, the most probable "
                               "drawn one) only when significantly better (McNemar, p < 0.05 "
                               "Bonferroni).")
    derive_candidates: int = setting(24, help="Children drawn from softmax(α) for alpha+eval.")
    derive_band: float = setting(0.1, help="alpha+eval draws children whose latency lies in "
                                           "[(1 - band)·T, T].", cli=False)
    lut_cache_dir: str | None = setting(None, help="Folder of cached latency tables.", cli=False)
    threads: int | None = setting(None, shown="all cores but one",
                                  help="torch intra-op threads while training.")
    accelerator: str = setting("auto", choices=ACCELERATORS, help=ACCELERATOR_HELP)
    # how the arithmetic is done and the data moves (qnas.runtime.precision): not what is
    # searched, so none of them is compared on resume (see NOT_IDENTITY)
    precision: str = setting("auto", choices=PRECISIONS, help=PRECISION_HELP)
    channels_last: bool = setting(False, help=CHANNELS_LAST_HELP)
    workers: int | None = setting(None, shown=WORKERS_SHOWN, help=WORKERS_HELP)
    # a supernet checkpoint holds the supernet, both optimisers' state and every RNG: the
    # largest file of a run. Once best.json and child.pt are written, export and retrain need
    # neither; the newest one is kept by default to continue from it (--supernet, reports)
    keep_checkpoints: int = setting(1, help="Supernet checkpoints kept once the run has "
                                            "finished (0: none; export and retrain need only "
                                            "best.json and child.pt). A running search keeps "
                                            "the newest two checkpoints, to resume from.")
    tensorboard: bool = setting(False, help="Also write TensorBoard scalars per epoch (loss, "
                                            "E[LAT], arg-max latency, α entropy, top-1) to "
                                            "<out>/tensorboard/ (needs: pip install "
                                            "tensorboard).")
    optim: OptimConfig = setting(default_factory=OptimConfig, help="Optimiser settings.")

    DEFAULT_WARMUP_EPOCHS = 6          # with no --supernet

    def __post_init__(self):
        if isinstance(self.optim, dict):
            self.optim = OptimConfig(**self.optim)
        if not isinstance(self.optim, OptimConfig):
            raise QnasError(f"optim must be an OptimConfig, got {type(self.optim).__name__}")
        if self.latency is not None:
            budgets = parse_budgets(self.latency)
            self.latency = budgets[0] if len(budgets) == 1 else budgets
        if self.device is not None:
            from ..predictors.devices import device_info  # devices.yaml, read once

            self.device = device_info(self.device).name
        check_int(self.epochs, "epochs", 0)
        check_int(self.batch_size, "batch_size", 1)
        check_int(self.resolution, "resolution", 1)
        check_int(self.seed, "seed", 0)
        if self.warmup_epochs is None:
            self.warmup_epochs = 0 if self.supernet else self.DEFAULT_WARMUP_EPOCHS
        check_int(self.warmup_epochs, "warmup_epochs", 0)
        check_number(self.arch_fraction, "arch_fraction", 0, 1, low_open=True)
        if self.layer_scale_init is not None:       # None: the supernet's rule for the space
            check_number(self.layer_scale_init, "layer_scale_init", 0, low_open=True)
        if not isinstance(self.weight_sharing, bool):
            raise QnasError(f"weight_sharing must be True or False, got "
                            f"{self.weight_sharing!r}")
        if self.derive not in DERIVE_MODES:
            raise QnasError(f"derive must be one of {', '.join(DERIVE_MODES)}, got "
                            f"{self.derive!r}")
        check_int(self.derive_candidates, "derive_candidates", 0)
        check_number(self.derive_band, "derive_band", 0, 1, low_open=True)
        if self.threads is not None:
            check_int(self.threads, "threads", 1)
        self.accelerator = check_accelerator(self.accelerator)
        self.precision = check_precision(self.precision)
        if not isinstance(self.channels_last, bool):
            raise QnasError(f"channels_last must be True or False, got {self.channels_last!r}")
        if self.workers is not None:
            check_int(self.workers, "workers", 0)
        check_int(self.keep_checkpoints, "keep_checkpoints", 0)
        if not isinstance(self.tensorboard, bool):
            raise QnasError(f"tensorboard must be True or False, got {self.tensorboard!r}")
        if self.supernet is not None:
            self.supernet = str(self.supernet)
        if self.device is not None and self.latency is None:
            raise QnasError("a search needs a latency budget, e.g. --latency 300ms")
        if self.latency is not None and self.device is None:
            raise QnasError("a latency budget needs a target device, e.g. --device cortexA76")
        for budget in self.budgets:
            check_loss(self.loss, budget, self.lam, self.beta)

    # --- budgets ------------------------------------------------------------------------------
    @property
    def budgets(self) -> list[float]:
        """The budget(s) in ms ([] for a warm-up-only run)."""
        if self.latency is None:
            return []
        return list(self.latency) if isinstance(self.latency, list) else [self.latency]

    @property
    def is_sweep(self) -> bool:
        return len(self.budgets) > 1

    @property
    def budget_ms(self) -> float:
        """The one budget of a single search."""
        if len(self.budgets) != 1:
            raise QnasError("this config holds several budgets; search them with "
                            "qnas.nas.sweep.sweep or pick one with for_budget()")
        return self.budgets[0]

    def for_budget(self, budget_ms: float, **changes) -> "SearchConfig":
        """A single-budget copy (a sweep's search at one budget)."""
        return replace(self, latency=float(budget_ms), **changes)

    def warmup_only(self) -> "SearchConfig":
        """The same settings without device and budget: a warm-up (train-supernet) run."""
        return replace(self, device=None, latency=None)

    # --- records --------------------------------------------------------------------------------
    def as_dict(self) -> dict:
        """Everything, as written to ``config.json`` (``qnas search --config`` reads it back)."""
        return to_dict(self)

    # settings that change where and how fast a run goes or what it leaves, not what it
    # searches. The precision changes the arithmetic (as the accelerator does), so a run that
    # ran out of memory in fp32 may resume in bf16; the switch is noted in run.log
    NOT_IDENTITY = ("lut_cache_dir", "threads", "accelerator", "precision", "channels_last",
                    "workers", "keep_checkpoints", "tensorboard")

    def identity(self) -> dict:
        """What must match for ``resume`` (the cache folder, the thread count, the accelerator,
        the precision, the memory format, the loader workers and what is kept or logged may
        change)."""
        out = self.as_dict()
        for key in self.NOT_IDENTITY:
            out.pop(key)
        return out

    def describe_budgets(self) -> str:
        return ", ".join(format_ms(b) for b in self.budgets)

    def default_out(self) -> Path:
        """``runs/<space>-<device>-<budget>-s<seed>`` (``…-pareto-…`` for several budgets,
        ``runs/supernet-<space>-s<seed>`` for a warm-up)."""
        space = Path(self.space).stem
        if self.device is None:
            return Path("runs") / f"supernet-{space}-s{self.seed}"
        label = "pareto" if self.is_sweep else budget_label(self.budget_ms)
        return Path("runs") / f"{space}-{self.device}-{label}-s{self.seed}"
