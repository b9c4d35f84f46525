"""``qnas experiment run FILE`` and ``qnas experiment list``: parse, call, report."""
from __future__ import annotations

import click

from . import cli
from .options import verbosity_options


@cli.group("experiment", epilog="""\b
Examples:
  qnas experiment list
  qnas experiment run table4""")
def experiment() -> None:
    """Reproduce the paper's tables from experiments/*.yaml (results folder + report.md)."""


@experiment.command("run", epilog="""\b
Examples:
  qnas experiment run table4                       # the kernel-size ablation, ~12 min
  qnas experiment run table3 --epochs 30 --data cifar10:/data/cifar10 --out runs/t3
  qnas experiment run table3 --out runs/t3 --resume   # finish an interrupted run""")
@click.argument("file")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Results folder  [default: runs/experiments/<name>]")
@click.option("--data", default=None,
              help="Dataset instead of the file's: digits, synthetic, cifar10:PATH, "
                   "imagefolder:PATH (nas and ablation experiments).")
@click.option("--epochs", default=None, type=int,
              help="Search epochs (nas) or training epochs (ablation) instead of the file's.")
@click.option("--warmup-epochs", default=None, type=int,
              help="Warm-up epochs of each space's shared supernet (nas).")
@click.option("--retrain-epochs", default=None, type=int,
              help="Retrain each chosen child this many epochs; 0 = skip (nas).")
@click.option("--resume", is_flag=True,
              help="Continue the experiment in --out: reuse finished parts, resume the rest.")
@click.option("--no-report", is_flag=True, help="Do not write report.md at the end.")
@verbosity_options
def run_command(file, out, data, epochs, warmup_epochs, retrain_epochs, resume, no_report,
                quiet, verbose) -> None:
    """Run the experiment FILE (a YAML, or a shipped name: table2, table3, table4)."""
    from ..experiments import run_experiment
    from ..experiments.provenance import command_line
    from ..runtime.log import console_echo, progress_wanted, verbose_console

    overrides = {"data": data, "epochs": epochs, "warmup_epochs": warmup_epochs,
                 "retrain_epochs": retrain_epochs}
    with verbose_console(verbose):
        folder = run_experiment(file, out=out, overrides=overrides, echo=console_echo(quiet),
                                resume=resume, progress=progress_wanted(quiet),
                                command=command_line(), report=not no_report)
    click.echo(f"results: {folder}")
    if not no_report:
        click.echo(f"report: {folder / 'report.md'}")


@experiment.command("list", epilog="""\b
Example:
  qnas experiment list && qnas experiment run table4""")
def list_command() -> None:
    """The shipped experiment files."""
    from ..experiments import list_experiments

    for item in list_experiments():
        click.echo(f"{item['path'].stem:10s} {item['kind']:9s} {item['description']}")
        click.echo(f"{'':10s} {item['path']}")
