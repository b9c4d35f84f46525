"""``qnas report RUN_DIR``: report.md + PNG plots of a search run, Pareto search or experiment."""
from __future__ import annotations

from pathlib import Path

import click

from . import cli


@cli.command("report", epilog="""\b
Examples:
  qnas report runs/quadranet-cortexA76-300ms-s0          # a search run
  qnas report experiments/results/table3                  # an experiment's results folder
""")
@click.argument("run_dir", type=click.Path())
def report_command(run_dir) -> None:
    """Write RUN_DIR/report.md with tables and PNG plots (a search run folder, a Pareto search
    folder, or an experiment results folder)."""
    from ..experiments import write_report

    path = write_report(run_dir)
    best = Path(run_dir) / "best.json"
    if best.is_file():                 # a search run: say what makes its result doubtful
        from ..nas.best import BestRecord

        for warning in BestRecord.read(best).warnings:
            click.echo(f"warning: {warning}")
    plots = sorted(p.name for p in path.parent.glob("*.png"))
    click.echo(f"report: {path}")
    if plots:
        click.echo(f"plots: {', '.join(plots)}")
