"""Atomic writes for the search's outputs (checkpoints, logs, best.json): a temporary file in
the same folder, then ``os.replace`` — a reader never sees half a file, a crash keeps the old."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import torch

from ..predictors.base import write_text_atomic

__all__ = ["write_text_atomic", "save_torch_atomic", "write_csv_atomic", "check_writable_folder"]


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def save_torch_atomic(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically."""
    return _atomic(Path(path), lambda temporary: torch.save(obj, temporary))


def write_csv_atomic(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """``frame.to_csv(path, index=False)`` atomically."""
    return _atomic(Path(path), lambda temporary: frame.to_csv(temporary, index=False))


def check_writable_folder(out: str | os.PathLike) -> None:
    """Refuse (one line) an output folder that cannot be created or written — before any work
    is done, so that a refused run leaves nothing behind."""
    from ..errors import QnasError

    out = Path(out)
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise QnasError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise QnasError(f"--out {out} is not writable (no write permission on {parent}); "
                        f"choose another folder")
