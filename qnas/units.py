"""Latency budgets and how they are written: the one parser of ``300ms`` / ``0.3s`` /
``300000us`` (and of several budgets, ``300ms,200ms,120ms``), and the one formatter of
milliseconds for people. No torch here: the CLI uses it before anything heavy is imported."""
from __future__ import annotations

import math
import re
from typing import Iterable

from .errors import QnasError

LATENCY_FORMS = "a positive number with a unit: 300ms, 0.3s or 300000us"
_LATENCY_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(ms|s|us|µs)\s*$",
                              re.IGNORECASE)
_UNIT_TO_MS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}


def parse_latency(value: str | float | int) -> float:
    """``"300ms"`` / ``"0.3s"`` / ``"300000us"`` → milliseconds; a number is taken as ms.

    Anything else — no unit, an unknown unit, zero, a negative or non-finite number — is a
    :class:`QnasError` that lists the accepted forms.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ms = float(value)
    else:
        match = _LATENCY_PATTERN.match(str(value))
        ms = float(match.group(1)) * _UNIT_TO_MS[match.group(2).lower()] if match else math.nan
    if math.isfinite(ms) and ms > 0:
        return ms
    raise QnasError(f"latency budget {str(value)!r} is not understood; use {LATENCY_FORMS}")


def parse_budgets(value: str | float | int | Iterable) -> list[float]:
    """One or several budgets → milliseconds, in the order given: ``"300ms,200ms"``, a list of
    such strings or numbers (ms). Empty items and repeats are refused."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        items = [value]
    else:
        items = list(value)
    budgets: list[float] = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            raise QnasError(f"empty latency budget in {value!r}; write e.g. 300ms,200ms,120ms")
        ms = parse_latency(item)
        if ms in budgets:
            raise QnasError(f"latency budget {format_ms(ms)} is given twice in {value!r}")
        budgets.append(ms)
    if not budgets:
        raise QnasError("no latency budget given; write e.g. --latency 300ms")
    return budgets


def format_ms(ms: float) -> str:
    """A latency for people: ``'301.2 ms'``, ``'2.95 ms'``, ``'0.041 ms'``."""
    if ms >= 100:
        return f"{ms:.1f} ms"
    if ms >= 1:
        return f"{ms:.2f} ms"
    return f"{ms:.3g} ms"


def budget_label(ms: float) -> str:
    """A budget as a folder / file name part: ``300ms``, ``2.5ms``."""
    return f"{ms:g}ms"
