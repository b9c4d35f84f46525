"""Stop a long run cleanly on SIGINT/SIGTERM: the handler only raises a flag; the training loop
looks at it between steps, saves a checkpoint and exits with a message saying how to resume.
A second SIGINT while the first is being handled stops at once (KeyboardInterrupt)."""
from __future__ import annotations

import signal
import threading


class StopOnSignals:
    """Context manager: ``requested`` is the signal number once SIGINT or SIGTERM arrived."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signum

    def __enter__(self) -> "StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
