"""Checkpoints that survive faults: atomic, checksummed, the last two kept (a finished run may
keep fewer: :meth:`CheckpointStore.prune`).

A run folder holds ``checkpoint-<step>.pt`` files (plain ``torch.save`` archives, ``step`` = the
weight steps done, zero-padded so names sort by age) and, next to each, ``<name>.sha256`` with
its SHA-256. Both are written through a temporary file + ``os.replace``; the checksum is written
AFTER the checkpoint, so a checkpoint without a matching checksum was never completed (or was
damaged later). :meth:`CheckpointStore.load_latest` takes the newest checkpoint that verifies
and loads, warns about every newer one it had to skip, and falls back to the previous one.
"""
from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import QnasError
from . import distributed
from .files import save_torch_atomic, write_text_atomic

_NAME = re.compile(r"^(?P<prefix>.+)-(?P<step>\d{8})\.pt$")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verify(path: Path) -> str | None:
    """None when ``path`` exists and matches its checksum, else why not (one phrase)."""
    path = Path(path)
    if not path.exists():
        return "missing"
    sidecar = checksum_path(path)
    if not sidecar.exists():
        return "no checksum (the write did not complete)"
    recorded = sidecar.read_text().split()
    if not recorded or sha256_of(path) != recorded[0]:
        return "checksum mismatch (truncated or corrupt)"
    return None


def load_verified(path: str | Path) -> dict:
    """``torch.load`` a checkpoint after checking its checksum (when it has one).

    A checkpoint from before checksums (no sidecar) is loaded as it is."""
    path = Path(path)
    if not path.exists():
        raise QnasError(f"checkpoint {path} does not exist")
    if checksum_path(path).exists():
        problem = verify(path)
        if problem:
            raise QnasError(f"checkpoint {path} is damaged: {problem}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 -- a truncated or foreign file
        raise QnasError(f"{path} is not a readable checkpoint ({type(err).__name__})") from None


def save_verified(state: dict, path: str | Path) -> Path:
    """``torch.save`` atomically, then its checksum sidecar (see the module doc).

    When either write fails (a full disk, an I/O error), nothing of this checkpoint is left
    behind — the file that did get written is removed — and the error propagates: the
    checkpoints written before stay as they were."""
    path = Path(path)
    sidecar = checksum_path(path)
    had_previous = path.exists()
    try:
        save_torch_atomic(state, path)
        write_text_atomic(sidecar, f"{sha256_of(path)}  {path.name}\n")
    except BaseException:
        if not had_previous:
            path.unlink(missing_ok=True)
            sidecar.unlink(missing_ok=True)
        raise
    return path


def rng_state() -> dict:
    """Every random number generator a run draws from: torch (CPU and every CUDA device),
    NumPy and Python's ``random`` — saved in every checkpoint, restored on resume."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(state: dict) -> None:
    """Undo :func:`rng_state` (the CUDA states only where a GPU is visible)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_same_settings(recorded: dict, current: dict, what: str) -> None:
    """Refuse to resume ``what`` (e.g. "the checkpoint in runs/x") under other settings,
    naming the settings that differ."""
    if recorded == current:
        return
    changed = sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))
    raise QnasError(f"{what} was made with other settings ({', '.join(changed)}); resume with "
                    f"the same options or use a new --out")


class CheckpointStore:
    """Rotating checkpoints ``<prefix>-<step>.pt`` in ``folder`` (newest ``keep`` kept)."""

    def __init__(self, folder: str | Path, prefix: str = "checkpoint", keep: int = 2):
        if keep < 1:
            raise ValueError("keep at least one checkpoint")
        self.folder, self.prefix, self.keep = Path(folder), prefix, keep

    def path_for(self, step: int) -> Path:
        return self.folder / f"{self.prefix}-{int(step):08d}.pt"

    def paths(self) -> list[Path]:
        """Checkpoint files of this store, newest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.iterdir():
            match = _NAME.match(path.name)
            if match and match.group("prefix") == self.prefix:
                found.append((int(match.group("step")), path))
        return [path for _, path in sorted(found, reverse=True)]

    def exists(self) -> bool:
        return bool(self.paths())

    def save(self, state: dict, step: int) -> Path:
        """Write ``state`` as the checkpoint of ``step`` (atomic + checksum), then drop all but
        the newest ``keep``."""
        path = save_verified(state, self.path_for(step))
        for old in self.paths()[self.keep:]:
            old.unlink(missing_ok=True)
            checksum_path(old).unlink(missing_ok=True)
        return path

    def prune(self, keep: int) -> list[Path]:
        """Delete all but the newest ``keep`` checkpoints (0: every one) with their checksums;
        returns the deleted paths. For a finished run only: a run resumes from these."""
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise QnasError(f"keep_checkpoints must be a non-negative integer, got {keep!r}")
        removed = []
        for old in self.paths()[keep:]:
            old.unlink(missing_ok=True)
            checksum_path(old).unlink(missing_ok=True)
            removed.append(old)
        return removed

    def load_latest(self, warn: Callable[[str], None] | None = None) -> tuple[dict, Path]:
        """The newest checkpoint that verifies and loads; warns about each newer one skipped.
        Raises :class:`QnasError` when none is usable."""
        warn = warn or (lambda message: None)
        problems = []
        for path in self.paths():
            problem = verify(path)
            if problem is None:
                try:
                    return torch.load(path, map_location="cpu", weights_only=False), path
                except Exception as err:  # noqa: BLE001
                    problem = f"unreadable ({type(err).__name__})"
            problems.append(f"{path.name}: {problem}")
            warn(f"warning: skipping checkpoint {path} ({problem}); trying the previous one")
        if problems:
            raise QnasError(f"no usable checkpoint in {self.folder} ({'; '.join(problems)}); "
                            f"start again without --resume in a new --out")
        raise QnasError(f"no checkpoint in {self.folder}; run without --resume to start")

    def load_latest_on_every_rank(self, warn: Callable[[str], None] | None = None
                                  ) -> tuple[dict, Path]:
        """:meth:`load_latest` read by rank 0 and broadcast to every rank (under torchrun);
        a failure is raised on every rank alike."""
        loaded = None
        if distributed.is_main():
            try:
                loaded = self.load_latest(warn)
            except QnasError as err:
                loaded = err
        loaded = distributed.broadcast_object(loaded)
        if isinstance(loaded, QnasError):
            raise loaded
        return loaded
