"""Markdown for reports: tables, cells, provenance lines."""
from __future__ import annotations

import math
from typing import Callable

import pandas as pd

from ..units import format_ms
from .provenance import describe_machine


def cell(value, fmt: str | Callable | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if callable(fmt):
        return fmt(value)
    if fmt is not None:
        return format(value, fmt)
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def md_table(frame: pd.DataFrame, formats: dict | None = None) -> str:
    """A GitHub markdown table of ``frame`` (``formats``: column → format spec or callable)."""
    formats = formats or {}
    columns = list(frame.columns)
    lines = ["| " + " | ".join(str(c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(cell(row[c], formats.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def short(text, limit: int = 90) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def ms(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format_ms(float(value))


def provenance_md(manifest: dict) -> list[str]:
    """The 'how this was made' lines of a report."""
    git = manifest.get("git")
    if git:
        commit = f"git {git['commit'][:12]}" + (" (with uncommitted changes to tracked files)"
                                                if git.get("dirty") else "")
    else:
        commit = "git commit unknown (not run from a git checkout)"
    wall = manifest.get("wall_seconds")
    lines = [f"- **Command:** `{manifest.get('command')}`",
             f"- **qnas:** {manifest.get('qnas_version')}, {commit}",
             f"- **Machine:** {describe_machine(manifest.get('machine') or {})}",
             f"- **Started:** {manifest.get('started')}; **wall time:** "
             + ((f"{wall / 60:.1f} min" if wall >= 120 else f"{wall:.0f} s")
                if isinstance(wall, (int, float)) else "–")
             + f"; **status:** {manifest.get('status')}"]
    if manifest.get("resumed_from"):
        lines.append(f"- **Resumed** a run started {manifest['resumed_from'].get('started')}")
    return lines
