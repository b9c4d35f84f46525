"""How a run's arithmetic is done: ``--precision auto|fp32|bf16|fp16``, ``--channels-last`` and
the data path to the device (pinned memory, DataLoader workers). No torch at import: the configs
and the CLI take their names and help texts from here.

**Precision.** ``bf16`` and ``fp16`` run the forward passes under ``torch.autocast`` (matrix
products and convolutions in 16 bits, reductions, norms and the losses in fp32; the weights,
optimiser states and α stay fp32). ``fp16`` has five bits of exponent, so its gradients are
scaled (``torch.amp.GradScaler``: the loss is multiplied before ``backward``, the gradients are
divided again before clipping and the step, and a step whose gradients overflowed is skipped).
``bf16`` has fp32's range and needs no scaling. ``auto`` = bf16 on a CUDA GPU that supports it
natively (Ampere and newer), else fp32 — so the CPU default stays fp32, bit for bit as before.

On CPU, ``bf16`` autocast works (oneDNN; slower than fp32 on CPUs without AMX/AVX512-BF16) and
``fp16`` runs with a real CPU GradScaler: it is slow and only there so that the CPU tests drive
the code path of GPUs without bf16 — a note says so.

**Resuming.** The precision, like the accelerator, changes how the numbers are computed, not
what is trained (the model, data, recipe and schedules are the same), so it is NOT part of what
a resume compares: a run that ran out of memory in fp32 may continue with ``--resume --precision
bf16``. The switch is noted in ``run.log``; the run then no longer repeats an uninterrupted one
bit for bit (neither does one moved between CPU and GPU). The GradScaler's state is kept in
every checkpoint of an fp16 run.

**Memory format and loading.** ``channels_last`` puts the model's 4-D weights and every input
batch into NHWC strides (cuDNN and oneDNN pick other kernels; the results agree to rounding). On
CUDA, loaders pin their batches (``pin_memory``) and copy them with ``non_blocking=True``, and
datasets that are not already tensors in memory (ImageFolder) are read by worker processes; on
CPU loading stays in the main process, exactly as before. Worker processes do not change the
batches: their order comes from the seeded sampler in the main process and their seeds from the
loader's seeded generator.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

from ..errors import QnasError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_HELP = ("Arithmetic of the training steps: auto (bf16 on a CUDA GPU that supports it, "
                  "else fp32), fp32, bf16 (autocast) or fp16 (autocast with loss scaling, for "
                  "GPUs without bf16).")
CHANNELS_LAST_HELP = ("Keep the model's weights and the input batches in channels-last (NHWC) "
                      "memory format.")
WORKERS_HELP = ("DataLoader worker processes when training on a CUDA GPU (on CPU the data is "
                "read in the main process).")
WORKERS_SHOWN = "0 for data held in memory, else min(8, cores - 1); CUDA only"
MAX_AUTO_WORKERS = 8
DTYPES = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}    # torch's names, by precision


def check_precision(name: str) -> str:
    """``name`` lower-cased when it is one of :data:`PRECISIONS`, else one line."""
    value = str(name).strip().lower()
    aliases = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
    value = aliases.get(value, value)
    if value not in PRECISIONS:
        raise QnasError(f"unknown precision {name!r}; use one of {', '.join(PRECISIONS)}")
    return value


def cuda_has_bf16() -> bool:
    """Whether the current CUDA GPU runs bfloat16 natively (compute capability ≥ 8.0)."""
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:                     # a torch without the keyword
        return torch.cuda.get_device_capability()[0] >= 8


def resolve_precision(name: str, device) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for the requested ``name`` on ``device`` (see the module
    doc); bf16 on a GPU without it is refused with one line."""
    import torch

    value = check_precision(name)
    kind = torch.device(device).type
    if value == "auto":
        return "bf16" if kind == "cuda" and cuda_has_bf16() else "fp32"
    if value == "bf16" and kind == "cuda" and not cuda_has_bf16():
        raise QnasError(f"--precision bf16: {torch.cuda.get_device_name()} has no native "
                        f"bfloat16; use --precision fp16 (with loss scaling) or fp32")
    if kind not in ("cpu", "cuda") and value != "fp32":
        raise QnasError(f"--precision {value} is supported on cpu and cuda, not {kind}; use "
                        f"--precision fp32")
    return value


class Precision:
    """Autocast and loss scaling of one run on one device (see the module doc).

    ``name`` is the resolved precision (fp32, bf16, fp16); ``requested`` what was asked for."""

    def __init__(self, requested: str = "fp32", device="cpu"):
        import torch

        self.requested = check_precision(requested)
        self.device_type = torch.device(device).type
        self.name = resolve_precision(self.requested, device)
        dtype = DTYPES[self.name]
        self.dtype = getattr(torch, dtype) if dtype else torch.float32
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")

    @property
    def mixed(self) -> bool:
        """Whether the forward passes run under autocast."""
        return self.name != "fp32"

    @property
    def scaled(self) -> bool:
        """Whether the gradients are scaled (fp16)."""
        return self.scaler.is_enabled()

    def note(self) -> str | None:
        """A line for the run's log where the choice deserves one (fp16 on a CPU)."""
        if self.name == "fp16" and self.device_type == "cpu":
            return ("note: --precision fp16 on a CPU is slow and only checks the code path of "
                    "GPUs without bf16 (loss scaling included); use bf16 or fp32 on a CPU")
        return None

    def describe(self) -> str:
        text = {"fp32": "fp32", "bf16": "bf16 autocast",
                "fp16": "fp16 autocast with loss scaling"}[self.name]
        return text + (f" (--precision {self.requested})" if self.requested == "auto" else "")

    def autocast(self):
        """The context of a forward pass (and its loss): autocast, or nothing in fp32."""
        import torch

        if not self.mixed:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss) -> None:
        """``loss.backward()``, the loss scaled first in fp16."""
        (self.scaler.scale(loss) if self.scaled else loss).backward()

    def step(self, optimizer, clip: Callable[[], object] | None = None) -> bool:
        """Clip (``clip()``, on true gradients: unscaled first in fp16) and step ``optimizer``;
        False when fp16's scaler skipped the step (the gradients overflowed)."""
        if not self.scaled:
            if clip is not None:
                clip()
            optimizer.step()
            return True
        if clip is not None:
            self.scaler.unscale_(optimizer)
            clip()
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= before

    def loss_scale(self) -> float:
        """The factor the arch step multiplies its loss by before taking gradients of 16-bit
        outputs (the scaler's current scale in fp16; 1 otherwise)."""
        return float(self.scaler.get_scale()) if self.scaled else 1.0

    # --- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"name": self.name, "scaler": self.scaler.state_dict() if self.scaled else None}

    def load_state_dict(self, state: dict | None, echo: Callable[[str], None] | None = None
                        ) -> None:
        """Restore the scaler; note (``echo``) when the checkpoint was trained in another
        precision (a checkpoint of an older qnas: fp32)."""
        state = state or {"name": "fp32", "scaler": None}
        recorded = state.get("name", "fp32")
        if recorded != self.name and echo is not None:
            echo(f"note: the checkpoint was trained in {recorded}, the run continues in "
                 f"{self.name}; it will not repeat an uninterrupted run exactly")
        if self.scaled and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


# --- devices, memory format, loading ------------------------------------------------------------

def prepare_device(device) -> None:
    """Once per run on its device: cuDNN autotuning on CUDA (``cudnn.benchmark``: the fastest
    convolution algorithm per shape, chosen on the first steps)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


def to_memory_format(module, channels_last: bool):
    """``module`` with its 4-D weights in channels-last strides when asked (in place)."""
    import torch

    if channels_last:
        module.to(memory_format=torch.channels_last)
    return module


def to_device(images, device, channels_last: bool = False):
    """A batch of images on ``device`` (asynchronously from pinned memory), NHWC when asked."""
    import torch

    images = images.to(device, non_blocking=images.is_pinned())
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def in_memory(dataset) -> bool:
    """Whether ``dataset`` is tensors held in memory (a TensorDataset, also inside Subset or
    ConcatDataset), where worker processes would only add copies."""
    from torch.utils.data import ConcatDataset, Subset, TensorDataset

    if isinstance(dataset, Subset):
        return in_memory(dataset.dataset)
    if isinstance(dataset, ConcatDataset):
        return all(in_memory(part) for part in dataset.datasets)
    return isinstance(dataset, TensorDataset) or hasattr(dataset, "for_epoch")


def loader_settings(device, workers: int | None = None) -> dict:
    """What the loaders of a run on ``device`` add: on CUDA pinned memory and ``workers``
    worker processes (None: decided per dataset, :func:`worker_count`); on CPU nothing (the
    main process reads, unpinned, as always)."""
    import torch

    if torch.device(device).type != "cuda":
        return {}
    return {"pin_memory": True, "workers": workers}


def worker_count(dataset, workers: int | None) -> int:
    """Worker processes for ``dataset``: ``workers`` when given, else 0 for data in memory and
    min(8, cores − 1) for data read from files."""
    if workers is not None:
        return int(workers)
    if in_memory(dataset):
        return 0
    from .threads import available_cores

    return max(0, min(MAX_AUTO_WORKERS, available_cores() - 1))
