"""Layer op names: the one place that knows how an op is spelled.

An op is what one layer of a network (or one candidate of a search space) is: ``"k5e2"``
(QuadraBlock, kernel 5, expansion 2), ``"k5e2kw"`` (the same with KernelWarehouse PW1/PW2),
``"conv-k7e4"`` / ``"hor-k7e4"`` / ``"swin-k7e4"`` / ``"skip-k0e4"`` (the paper's baselines),
``"k5e6"`` in an MBConv network (MBConv, kernel 5, expansion 6), a dict ``{"kind": ...}`` for
:func:`qnas.nn.build_block`, or the identity. ProxylessNAS calls the identity op "zero" (only the
shortcut remains), other code says "none": all three spellings mean :data:`IDENTITY`.
"""
from __future__ import annotations

import re
from typing import Any

IDENTITY = "identity"
IDENTITY_SPELLINGS = (IDENTITY, "zero", "none")
BLOCK_KINDS = ("quadra", "conv", "hor", "swin", "skip", "quadra-kw")

_OP_PATTERN = re.compile(
    r"^(?:(quadra|conv|hor|swin|skip)[-_]?)?k(\d+)e(\d+(?:\.\d+)?)([-_]?kw)?$")

# Hor's gnConv order grows by stage in HorNet (2, 3, 4, 5).
HOR_ORDERS = (2, 3, 4, 5)


def is_identity(op: Any) -> bool:
    """Whether ``op`` (a name) is the identity op, in any of its spellings."""
    return isinstance(op, str) and op.strip().lower() in IDENTITY_SPELLINGS


def parse_op(op: str | dict) -> tuple[str, dict]:
    """Turn a layer op (``"k7e4"``, ``"k7e4kw"``, ``"conv-k7e4"``, ``"identity"``,
    ``{"kind": ...}``) into ``(kind, kwargs)`` for :func:`qnas.nn.build_block`.

    A ``kw`` suffix gives kind ``quadra-kw`` (QuadraBlock with KernelWarehouse PW1/PW2)."""
    if isinstance(op, dict):
        kwargs = dict(op)
        kind = kwargs.pop("kind", "quadra")
        return str(kind), kwargs
    text = str(op).strip().lower()
    if is_identity(text):
        return IDENTITY, {}
    if text in BLOCK_KINDS:
        return text, {}
    match = _OP_PATTERN.match(text)
    if not match:
        raise ValueError(f"unknown layer op {op!r}; use e.g. 'k7e4', 'k7e4kw', 'conv-k7e4', "
                         f"'identity' or a dict with 'kind'")
    kind, kernel, expansion = match.group(1) or "quadra", int(match.group(2)), float(match.group(3))
    if match.group(4):
        if kind != "quadra":
            raise ValueError(f"layer op {op!r}: KernelWarehouse ('kw') variants exist only for "
                             f"QuadraBlock, e.g. 'k7e4kw'")
        kind = "quadra-kw"
    kwargs: dict[str, Any] = {"expansion": int(expansion) if expansion.is_integer() else expansion}
    if kind == "skip":
        return kind, kwargs
    if kind == "swin":
        kwargs["window_size"] = kernel
    else:
        kwargs["kernel_size"] = kernel
    return kind, kwargs


def kernel_and_expansion(op: str) -> tuple[int | None, float | None]:
    """``(kernel, expansion)`` of an op name (None for the identity and kinds without them)."""
    kind, kwargs = parse_op(op)
    return kwargs.get("kernel_size", kwargs.get("window_size")), kwargs.get("expansion")


def without_identity(ops) -> list:
    """``ops`` with the identity layers left out (what a deployed child keeps)."""
    return [op for op in ops if not is_identity(op)]
