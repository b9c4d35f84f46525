"""``qnas bench profile``: a device profile's predictions against measurements on this host."""
from __future__ import annotations

import time

import click

from .bench import bench


def _batches(text: str) -> list[int]:
    from ..errors import QnasError

    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise QnasError(f"--batch {text!r} is not a list of integers; use e.g. 1 or 1,32") from None
    if not values or min(values) <= 0:
        raise QnasError(f"--batch needs positive integers, got {text!r}; use e.g. 1 or 1,32")
    return values


@bench.command("profile")
@click.argument("device")
@click.option("--measure", default="host-cuda", show_default=True,
              type=click.Choice(["host-cuda", "host-cpu"]),
              help="The measured backend (the hardware the profile is checked against).")
@click.option("--space", default="quadranet", show_default=True,
              help="Search space whose candidate blocks are checked at its layer shapes.")
@click.option("--batch", "batch", default="1", show_default=True,
              help="Batch size(s), comma-separated (e.g. 1,32: batch-1 eager is dispatch-bound).")
@click.option("--models", default="quadranet_xxs,quadranet_t,resnet18", show_default=True,
              help="Whole models to check too, comma-separated ('' for none; torchvision ones "
                   "are skipped where torchvision does not import).")
@click.option("--resolution", default=None, type=click.IntRange(min=1),
              help="Override the deployment H=W (quick checks only).")
@click.option("--repeats", default=15, show_default=True, type=click.IntRange(min=1),
              help="Timed rounds per measurement (median).")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=0))
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="torch intra-op threads while timing  [default: 1 or $QNAS_HOST_THREADS]")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="CSV of the long table  [default: runs/bench/profile_<DEVICE>.csv]")
def profile_command(device, measure, space, batch, models, resolution, repeats, warmup, threads,
                    out) -> None:
    """Check profile DEVICE (or several, comma-separated) against measurements here.

    Each candidate block of the space at each distinct layer input shape, and each model, is
    predicted with the profile and measured with --measure; prints the tables and the median
    |rel error|, writes a CSV. A profile of other hardware than the one measured is labelled a
    cross-check, not a validation.
    """
    from ..bench.blocks import write_csv_atomic
    from ..bench.profile_check import check_profile, format_check

    start = time.perf_counter()
    result = check_profile(device, measure=measure, space=space, batches=_batches(batch),
                           models=models.split(","), resolution=resolution, repeats=repeats,
                           warmup=warmup, threads=threads,
                           progress=lambda msg: click.echo(f"  {msg}", err=True))
    path = write_csv_atomic(result.table, out or
                            f"runs/bench/profile_{'_'.join(result.devices)}.csv")
    click.echo(format_check(result))
    click.echo(f"wrote {path}")
    click.echo(f"wall time {time.perf_counter() - start:.1f} s")
