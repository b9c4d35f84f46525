"""Where a result came from: the command, qnas version, git commit, machine facts, wall time."""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from .. import __version__
from ..predictors.measured import cpu_model
from ..runtime.threads import resolve_threads

_REPO = Path(__file__).resolve().parents[2]


def command_line(argv: list[str] | None = None) -> str:
    """The ``qnas ...`` command this process runs (``sys.argv`` with the program as ``qnas``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["qnas", *argv])


def git_commit(root: str | Path | None = None) -> dict | None:
    """``{commit, dirty}`` of the source checkout qnas runs from (None: not a git checkout, or
    no git). ``dirty`` is True when tracked files differ from the commit."""
    root = Path(root) if root is not None else _REPO
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(),
            "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def machine_facts() -> dict:
    """CPU model, cores (all / usable by this process), memory, OS, Python, torch and its
    thread counts, GPU (if any)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    memory = None
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    facts = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "training_threads": resolve_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return facts


def provenance(command: str | None = None) -> dict:
    """Everything a report states about how it was made (wall time is added at the end)."""
    return {"command": command or command_line(), "qnas_version": __version__,
            "git": git_commit(), "machine": machine_facts(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def describe_machine(facts: dict) -> str:
    """One line: ``Intel Xeon ... — 2 of 2 cores usable, 24 GiB, torch 2.x (1 training thread)``."""
    parts = [str(facts.get("cpu", "unknown CPU"))]
    parts.append(f"{facts.get('usable_cores')} of {facts.get('cores')} cores usable")
    if facts.get("memory_gib"):
        parts.append(f"{facts['memory_gib']} GiB RAM")
    if facts.get("gpu"):
        parts.append(f"GPU {facts['gpu']}")
    parts.append(f"torch {facts.get('torch')} ({facts.get('training_threads')} training "
                 f"thread(s), {facts.get('torch_threads')} torch threads)")
    parts.append(f"Python {facts.get('python')}, {facts.get('os')}")
    return "; ".join(parts)
