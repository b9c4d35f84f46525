"""One error type for everything a user can get wrong.

Raise :class:`QnasError` with a single line that says what is wrong and what would work;
the CLI prints it to stderr and exits non-zero without a traceback.
"""


class QnasError(Exception):
    """A user-facing error: one line, what was wrong and what would work."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class Interrupted(QnasError):
    """A run stopped on SIGINT/SIGTERM after saving a checkpoint; the message says how to resume.
    Exit code 128 + the signal number, as a shell reports a signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)
