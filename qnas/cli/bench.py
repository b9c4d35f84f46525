"""``qnas bench``: measurements. ``qnas bench blocks`` is the paper's Table II experiment.

Other modules add their own subcommands to the ``bench`` group exported here.
"""
from __future__ import annotations

import time

import click

from . import cli


@cli.group("bench")
def bench() -> None:
    """Benchmarks (blocks, ...); results as printed tables and CSV files."""


@bench.command("blocks")
@click.option("--kinds", default="quadra,quadra-me,hor,conv,swin,skip", show_default=True,
              help="Block kinds, comma-separated (quadra is always measured: the ratios' base).")
@click.option("--channels", default="64,128", show_default=True,
              help="Widths C, comma-separated.")
@click.option("--layers", default=24, show_default=True, type=int, help="Blocks per stack.")
@click.option("--batch", default=4, show_default=True, type=int)
@click.option("--resolution", default=56, show_default=True, type=int,
              help="Map size H=W (56 = the stage-1 map of a 224×224 input).")
@click.option("--kernel-size", default=7, show_default=True, type=int,
              help="Depthwise kernel of quadra, conv and hor blocks (odd).")
@click.option("--hor-order", default=2, show_default=True, type=int,
              help="gnConv order of HorBlock (HorNet: 2, 3, 4, 5 by stage; 2 at 56×56).")
@click.option("--repeats", default=3, show_default=True, type=int,
              help="Timed runs per kind (median); the QuadraConv2d part runs 5× as many.")
@click.option("--warmup", default=1, show_default=True, type=int,
              help="Untimed rounds before timing (after the memory steps, which also warm up).")
@click.option("--threads", default=None, type=int,
              help="torch intra-op threads  [default: the CPUs this process may use]")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--out", default="runs/bench/blocks.csv", show_default=True,
              type=click.Path(dir_okay=False),
              help="CSV of the block table; the QuadraConv2d table goes to <stem>_quadraconv.csv.")
@click.option("--quadraconv/--no-quadraconv", default=True, show_default=True,
              help="Also run part 2: QuadraConv2d against three separate depthwise convs.")
def blocks_command(kinds, channels, layers, batch, resolution, kernel_size, hor_order, repeats,
                   warmup, threads, device, out, quadraconv) -> None:
    """Table II of the QuadraNet paper: 24-layer stacks of each block kind, side by side."""
    import pandas as pd

    from ..bench import blocks

    settings = dict(kinds=kinds, channels=channels, layers=layers, batch=batch,
                    resolution=resolution, kernel_size=kernel_size, hor_order=hor_order,
                    repeats=repeats, warmup=warmup, device=device)
    if threads is not None:
        settings["threads"] = threads
    config = blocks.BlockBenchConfig(**settings)
    start = time.perf_counter()
    table = blocks.run_block_bench(config)
    path = blocks.write_csv_atomic(table, out)
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.float_format", "{:.3g}".format):
        click.echo(f"Blocks: {config.layers} layers, batch {config.batch}, "
                   f"{config.resolution}×{config.resolution}, {config.device}, "
                   f"{config.threads} threads, median of {config.repeats}; ratios × QuadraBlock")
        click.echo(blocks.format_block_table(table).to_string(index=False))
        click.echo(f"MACs: {blocks.MACS_COUNTER}; saved: {blocks.SAVED_BYTES_RULE}; "
                   f"peak: {table['peak_method'].iloc[0]}")
        for line in blocks.goal_summary(table):
            click.echo(line)
        click.echo(f"wrote {path}")
        if quadraconv:
            conv_table = blocks.run_quadraconv_bench(config)
            conv_path = blocks.write_csv_atomic(conv_table, blocks.companion_path(out))
            click.echo(f"QuadraConv2d, forward+backward of one layer, median of "
                       f"{5 * config.repeats}; ratios × the naive three-conv form")
            click.echo(blocks.format_quadraconv_table(conv_table).to_string(index=False))
            click.echo(f"wrote {conv_path}")
    click.echo(f"wall time {time.perf_counter() - start:.1f} s")


@bench.command("supernet")
@click.option("--space", default="quadranet", show_default=True)
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--resolution", default=32, show_default=True, type=int)
@click.option("--rounds", default=10, show_default=True, type=int,
              help="Timed rounds (each runs the three steps once; medians).")
@click.option("--warmup", default=2, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=None, type=int,
              help="torch intra-op threads  [default: torch's]")
def bench_supernet_command(space, batch_size, resolution, rounds, warmup, seed, threads) -> None:
    """Step time and saved activations: supernet weight/arch step vs the same child's step."""
    from ..bench.supernet import SupernetBenchConfig, bench_supernet

    if rounds < 1 or batch_size < 1:
        raise click.BadParameter("--rounds and --batch-size must be ≥ 1")
    table = bench_supernet(SupernetBenchConfig(space=space, batch_size=batch_size,
                                               resolution=resolution, rounds=rounds,
                                               warmup=warmup, seed=seed, threads=threads))
    attrs = table.attrs
    click.echo(f"space {attrs['space']}, batch {attrs['batch_size']}, "
               f"{attrs['resolution']}x{attrs['resolution']}, {attrs['threads']} threads, "
               f"{attrs['rounds']} rounds; child: {' '.join(attrs['ops'])}")
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.3f}",
                               na_rep="-"))
    weight = table.set_index("step").loc["supernet weight step"]
    arch = table.set_index("step").loc["supernet arch step"]
    click.echo(f"step-time ratio supernet/child: weight {weight.time_ratio:.2f} (goal ≤ "
               f"{weight.time_goal}), arch {arch.time_ratio:.2f} (goal ≤ {arch.time_goal}); "
               f"saved-for-backward ratio {weight.saved_ratio:.2f} (goal ≤ {weight.saved_goal})")
