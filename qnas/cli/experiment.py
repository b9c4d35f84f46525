"""``qnas experiment run FILE`` and ``qnas experiment list``: parse, call, report."""
from __future__ import annotations

import click

from . import cli


@cli.group("experiment")
def experiment() -> None:
    """Reproduce the paper's tables from experiments/*.yaml (results folder + report.md)."""


@experiment.command("run")
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
@click.option("--quiet", is_flag=True, help="No progress bars and no per-epoch lines.")
def run_command(file, out, data, epochs, warmup_epochs, retrain_epochs, resume, no_report,
                quiet) -> None:
    """Run the experiment FILE (a YAML, or a shipped name: table2, table3, table4)."""
    from tqdm.auto import tqdm

    from ..experiments import run_experiment
    from ..experiments.provenance import command_line

    overrides = {"data": data, "epochs": epochs, "warmup_epochs": warmup_epochs,
                 "retrain_epochs": retrain_epochs}
    echo = (lambda message: None) if quiet else tqdm.write
    folder = run_experiment(file, out=out, overrides=overrides, echo=echo, resume=resume,
                            progress=not quiet, command=command_line(),
                            report=not no_report)
    click.echo(f"results: {folder}")
    if not no_report:
        click.echo(f"report: {folder / 'report.md'}")


@experiment.command("list")
def list_command() -> None:
    """The shipped experiment files."""
    from ..experiments import list_experiments

    for item in list_experiments():
        click.echo(f"{item['path'].stem:10s} {item['kind']:9s} {item['description']}")
        click.echo(f"{'':10s} {item['path']}")
