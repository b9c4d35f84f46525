"""Where the work runs: the runtime accelerator (``--accelerator auto|cpu|cuda``).

Not to be confused with the *target device* of a latency budget (``--device cortexA76``, a
name from ``qnas devices``): the accelerator is the hardware this process trains or measures
on. No torch at import (the CLI builds ``--help`` from these names).
"""
from __future__ import annotations

from ..errors import QnasError

ACCELERATORS = ("auto", "cpu", "cuda")
ACCELERATOR_HELP = ("Runtime accelerator the work runs on: auto (the GPU when one is visible), "
                    "cpu or cuda.")


def check_accelerator(name: str) -> str:
    """``name`` lower-cased when it is one of :data:`ACCELERATORS`, else one line."""
    value = str(name).strip().lower()
    if value not in ACCELERATORS:
        raise QnasError(f"unknown accelerator {name!r}; use one of {', '.join(ACCELERATORS)} "
                        f"(the target hardware of a latency budget is --device)")
    return value


def resolve_accelerator(name: str = "auto") -> str:
    """``"cpu"`` or ``"cuda"`` for ``name``: auto picks CUDA when a GPU is visible; cuda without
    one is refused with one line."""
    value = check_accelerator(name)
    import torch

    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value == "cuda" and not torch.cuda.is_available():
        raise QnasError("--accelerator cuda: no CUDA device is visible on this machine; use "
                        "--accelerator cpu (or auto)")
    return value
