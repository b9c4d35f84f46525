"""The ``qnas`` command line: a thin click layer over the Python API.

Every command only parses arguments and reports; the work happens in functions a notebook can
call. Errors a user can fix are :class:`qnas.errors.QnasError` (or ValueError from argument
validation) and print as ONE line on stderr with a non-zero exit code; ``--debug`` shows the
traceback.
"""
from __future__ import annotations

import os
import sys

import click

from ..errors import QnasError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="qnas")
def cli(debug: bool) -> None:
    """qnas: hardware-aware neural architecture search for QuadraNet."""


def _register_commands() -> None:
    # one module per command group in this package; importing it adds its commands to `cli`
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def _fail(message: str, code: int) -> None:
    click.echo(f"qnas: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``qnas`` console script (and ``python -m qnas``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("QNAS_DEBUG") == "1"
    _register_commands()
    try:
        cli.main(args=argv, prog_name="qnas", standalone_mode=False)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    except click.ClickException as err:
        if debug:
            raise
        message = " ".join(err.format_message().split())
        context = getattr(err, "ctx", None)
        if isinstance(err, click.UsageError) and context is not None:
            message += f" (see '{context.command_path} --help')"
        _fail(message, err.exit_code)
    except click.Abort:
        _fail("aborted", 130)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except (QnasError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        if debug:
            raise
        _fail(" ".join(str(err).split()) or type(err).__name__, getattr(err, "exit_code", 2))
    except Exception as err:  # noqa: BLE001 -- a bug: still one line, the traceback on --debug
        if debug:
            raise
        _fail(f"internal error: {type(err).__name__}: {' '.join(str(err).split())} "
              f"(run 'qnas --debug ...' for the traceback)", 1)
