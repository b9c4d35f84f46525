"""The one atomic writer: every file qnas writes (checkpoints, logs, best.json, tables, plots,
shipped profiles) goes through a temporary file in the same folder and ``os.replace`` — a reader
never sees half a file, and a crash or a failed write (disk full, I/O error) keeps the old one.
Folders (an export, an installed predictor) are staged whole and swapped in by
:func:`replace_folder`.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import QnasError

__all__ = ["atomic_write", "write_text_atomic", "write_json_atomic", "write_bytes_atomic",
           "write_csv_atomic", "save_torch_atomic", "replace_folder", "staged_folder",
           "check_writable_folder"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(temporary_path)``, then move the temporary file onto ``path``.

    The temporary file lives next to ``path`` (same file system, so the rename is atomic) and
    is removed when ``write`` or the rename fails; the error propagates unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o644)      # mkstemp makes 0600; shipped data must stay readable
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())   # a full disk must fail here, not after the rename

    return atomic_write(path, write)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    def write(temporary: str) -> None:
        with open(temporary, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())

    return atomic_write(path, write)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Indented JSON with a final newline (``default=str`` for paths and the like)."""
    return write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_csv_atomic(frame, path: str | os.PathLike) -> Path:
    """``frame.to_csv(path, index=False)`` (a pandas DataFrame), atomically."""
    return write_text_atomic(path, frame.to_csv(index=False))


class _Writer:
    """A file's ``write`` for torch.save that keeps the OSError of a failed write (torch's
    serializer turns it into a RuntimeError that no longer says why)."""

    def __init__(self, stream):
        self.stream, self.error = stream, None

    def write(self, data) -> int:
        try:
            return self.stream.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.stream.flush()


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically; a failed write raises its OSError (disk full,
    file too large, I/O error)."""
    import torch

    def write(temporary: str) -> None:
        with open(temporary, "wb") as stream:
            writer = _Writer(stream)
            try:
                torch.save(obj, writer)
                stream.flush()
            except RuntimeError:
                if writer.error is not None:
                    raise writer.error from None
                raise
            os.fsync(stream.fileno())

    return atomic_write(path, write)


def replace_folder(staging: Path, folder: Path) -> None:
    """Put the finished folder ``staging`` in place of ``folder`` (the old one is removed only
    after the new one is in place)."""
    staging, folder = Path(staging), Path(folder)
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(staging, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """A new, empty folder next to ``folder`` to write into: when the body finishes it replaces
    ``folder`` whole (:func:`replace_folder`); when the body fails it is removed and ``folder``
    is left as it was."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)
        replace_folder(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_writable_folder(out: str | os.PathLike) -> None:
    """Refuse (one line) an output folder that cannot be created or written — before any work
    is done, so that a refused run leaves nothing behind."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise QnasError(f"--out {out} is a file; give a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise QnasError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise QnasError(f"--out {out} is not writable (no write permission on {parent}); "
                        f"choose another folder")
