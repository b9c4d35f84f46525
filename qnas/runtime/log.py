"""``run.log``: what a run printed, with timestamps (stdlib :mod:`logging`), and the console
rules every long command shares.

Every message of a run (a search, a warm-up, a retraining, a sweep) goes to the logger
``qnas.run`` and to the caller's ``echo`` (:func:`say`); :func:`run_log` attaches a handler that
appends the records to ``<run folder>/run.log``. The handler buffers until the run's folder is
accepted (:func:`start_run_log`, called by :meth:`qnas.runtime.loop.ResumableRun.begin`), so a
refused run leaves no file behind; a resumed run appends to the same log. A log is appended to,
line by line, not rewritten: it is the one file qnas writes that is not replaced atomically (a
crash loses at most the line being written). Only rank 0 writes (torchrun).

Console (the CLI): per-epoch lines and messages on stdout (:func:`console_echo`; ``-q``:
warnings only; ``-v``: the DEBUG records too, e.g. every checkpoint written; on stderr when
stdout carries ``--format json|csv``);
progress bars only when stderr is a terminal (:func:`progress_wanted`), so redirected output
holds no ``\\r`` lines. No torch here.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

RUN_LOG = "run.log"
LOGGER_NAME = "qnas.run"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

logger = logging.getLogger(LOGGER_NAME)
logger.setLevel(logging.DEBUG)
logger.propagate = False                 # the console is the caller's echo, not the root logger
logger.addHandler(logging.NullHandler())  # no "last resort" printing of warnings

Echo = Callable[[str], None]


def _is_main() -> bool:
    # rank 0 of torchrun (or a single process); torch.distributed is not needed to tell
    return os.environ.get("RANK", "0") in ("", "0")


def level_of(message: str) -> int:
    """WARNING for ``warning: …`` lines, INFO otherwise."""
    return logging.WARNING if message.lstrip().lower().startswith("warning") else logging.INFO


def say(message: str, echo: Echo | None = None, level: int | None = None) -> None:
    """Log ``message`` (to the run logs now attached) and pass it to ``echo``."""
    logger.log(level_of(message) if level is None else level, message)
    if echo is not None:
        echo(message)


def debug(message: str) -> None:
    """A DEBUG record: in run.log always, on the console only with ``-v``."""
    logger.debug(message)


def logged(echo: Echo | None) -> Echo:
    """``echo`` that also logs each message (what library functions pass on)."""
    return lambda message: say(message, echo)


def _lines(record: logging.LogRecord) -> list[str]:
    stamp = time.strftime(DATE_FORMAT, time.localtime(record.created))
    text = record.getMessage() or ""
    return [f"{stamp} {record.levelname:<7s} {line}".rstrip() + "\n"
            for line in (text.splitlines() or [""])]


class RunLogHandler(logging.Handler):
    """Appends records to ``path`` once :meth:`start` was called; buffers them until then (and
    drops them if the run is refused before)."""

    MAX_BUFFERED = 10_000

    def __init__(self, path: str | os.PathLike):
        super().__init__(logging.DEBUG)
        self.path = Path(path)
        self.buffer: list[logging.LogRecord] = []
        self.stream = None

    def start(self) -> None:
        if self.stream is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 -- kept open
        for record in self.buffer:
            self._write(record)
        self.buffer = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.stream is None:
                if len(self.buffer) < self.MAX_BUFFERED:
                    self.buffer.append(record)
                return
            self._write(record)
        except OSError:          # a full disk must not end the run; its checkpoint write will
            self.handleError(record)

    def _write(self, record: logging.LogRecord) -> None:
        self.stream.writelines(_lines(record))
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(OSError):
                self.stream.close()
            self.stream = None
        self.buffer = []
        super().close()


@contextlib.contextmanager
def run_log(out: str | os.PathLike) -> Iterator[RunLogHandler | None]:
    """Record every message of the body into ``out/run.log`` (rank 0; buffered until
    :func:`start_run_log` is called for ``out``)."""
    if not _is_main():
        yield None
        return
    handler = RunLogHandler(Path(out) / RUN_LOG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        handler.close()


def start_run_log(out: str | os.PathLike) -> None:
    """The run in ``out`` was accepted: its run.log (if one is attached) starts writing."""
    path = Path(out) / RUN_LOG
    for handler in list(logger.handlers):
        if isinstance(handler, RunLogHandler) and handler.path == path:
            handler.start()


def append_to_run_log(out: str | os.PathLike, text: str, level: int = logging.INFO) -> None:
    """Append ``text`` (e.g. the CLI's final summary) to ``out/run.log`` with a timestamp."""
    path = Path(out) / RUN_LOG
    if not _is_main() or not path.parent.is_dir():
        return
    record = logger.makeRecord(LOGGER_NAME, level, __file__, 0, text, None, None)
    with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as stream:
        stream.writelines(_lines(record))


# --- the console (what the CLI prints while a run goes on) -------------------------------------

def progress_wanted(quiet: bool = False) -> bool:
    """Whether to show progress bars: not ``quiet``, and stderr is a terminal (so redirected
    output holds no ``\\r`` lines)."""
    try:
        return not quiet and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _write_line(stream) -> Echo:
    from tqdm import tqdm

    return lambda message: tqdm.write(message, file=stream)


def console_echo(quiet: bool = False, to_stderr: bool = False) -> Echo:
    """The CLI's echo while a run goes on: every message on stdout (on stderr when stdout is
    kept for machine-readable output); with ``quiet`` only the warnings. Lines go through tqdm
    so that a progress bar stays below them (stderr stays for errors: one line each)."""
    write = _write_line(sys.stderr if to_stderr else sys.stdout)
    if quiet:
        return lambda message: write(message) if level_of(message) >= logging.WARNING else None
    return write


class _ConsoleDebug(logging.Handler):
    """DEBUG records of the run logger on the console (``-v``); INFO and up reach it through
    the echo already."""

    def __init__(self, echo: Echo):
        super().__init__(logging.DEBUG)
        self.echo = echo

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.INFO:
            self.echo(f"debug: {record.getMessage()}")


@contextlib.contextmanager
def verbose_console(verbose: bool, to_stderr: bool = False) -> Iterator[None]:
    """With ``verbose``, show the run logger's DEBUG records on the console for the body."""
    if not verbose:
        yield
        return
    handler = _ConsoleDebug(_write_line(sys.stderr if to_stderr else sys.stdout))
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
