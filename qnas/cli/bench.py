"""``qnas bench``: measurements. ``qnas bench blocks`` is the paper's Table II experiment.

Other modules add their own subcommands to the ``bench`` group exported here.
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from ..bench.config import BlockBenchConfig, DataSpreadConfig, SupernetBenchConfig
from ..runtime.accelerator import ACCELERATOR_HELP
from ..runtime.threads import BENCHMARK, MEASURING, TRAINING
from . import cli
from .options import (
    config_options,
    deprecated_option,
    input_shape_option,
    parse_shape,
    resolve_config,
    threads_help,
)


@cli.group("bench", epilog="""\b
Examples:
  qnas bench blocks                       # the paper's Table II
  qnas bench supernet --batch-size 32
  qnas bench data-spread --seeds 2""")
def bench() -> None:
    """Benchmarks (blocks, ...); results as printed tables and CSV files."""


@bench.command("blocks", epilog="""\b
Examples:
  qnas bench blocks
  qnas bench blocks --kinds quadra,hor --channels 64 --accelerator cuda --batch-size 64
\b
--accelerator and --batch-size were --device and --batch before (accepted until the next
release, with a note).""")
@config_options(BlockBenchConfig, rename={"batch": "--batch-size", "device": "--accelerator"},
                deprecated={"batch": ("--batch",), "device": ("--device",)},
                helps={"device": ACCELERATOR_HELP.replace("auto (the GPU when one is "
                                                          "visible), ", "")},
                purpose=BENCHMARK)
@click.option("--out", default="runs/bench/blocks.csv", show_default=True,
              type=click.Path(dir_okay=False),
              help="CSV of the block table; the QuadraConv2d table goes to <stem>_quadraconv.csv.")
@click.option("--quadraconv/--no-quadraconv", default=True, show_default=True,
              help="Also run part 2: QuadraConv2d against three separate depthwise convs.")
def blocks_command(out, quadraconv, **options) -> None:
    """Table II of the QuadraNet paper: 24-layer stacks of each block kind, side by side."""
    config = resolve_config(BlockBenchConfig, options)
    import pandas as pd

    from ..bench import blocks
    from ..runtime.files import write_csv_atomic

    start = time.perf_counter()
    table = blocks.run_block_bench(config)
    path = write_csv_atomic(table, out)
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
            conv_path = write_csv_atomic(conv_table, blocks.companion_path(out))
            click.echo(f"QuadraConv2d, forward+backward of one layer, median of "
                       f"{5 * config.repeats}; ratios × the naive three-conv form")
            click.echo(blocks.format_quadraconv_table(conv_table).to_string(index=False))
            click.echo(f"wrote {conv_path}")
    click.echo(f"wall time {time.perf_counter() - start:.1f} s")


@bench.command("supernet", epilog="""\b
Examples:
  qnas bench supernet
  qnas bench supernet --space proxyless_mbconv --batch-size 32 --rounds 5""")
@config_options(SupernetBenchConfig, purpose=BENCHMARK)
def bench_supernet_command(**options) -> None:
    """Step time and saved activations: supernet weight/arch step vs the same child's step."""
    config = resolve_config(SupernetBenchConfig, options)
    from ..bench.supernet import bench_supernet

    table = bench_supernet(config)
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


@bench.command("predictor", epilog="""\b
Examples:
  qnas bench predictor
  qnas bench predictor --children 10 --input-shape 1x3x224x224 --no-build""")
@click.option("--children", default=5, show_default=True, type=click.IntRange(min=1),
              help="Random QuadraNet children to compare.")
@input_shape_option(default="1x3x64x64")
@click.option("--space", default="quadranet", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--samples", default=100, show_default=True, type=click.IntRange(min=2),
              help="Samples per kernel type if the host predictor has to be built first.")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help=threads_help(MEASURING)[:-2] + ": the count the host predictor was built "
                                                  "with].")
@click.option("--build/--no-build", default=True, show_default=True,
              help="Build the host-cpu predictor first when none is registered.")
def bench_predictor_command(children, input_shape, space, seed, samples, threads, build) -> None:
    """Predicted (nn-Meter host-cpu predictor) vs measured latency of random QuadraNet children."""
    from ..bench.predictor import bench_predictor, format_table

    result = bench_predictor(children=children, input_shape=parse_shape(input_shape), space=space,
                             seed=seed, samples=samples, threads=threads, build=build,
                             progress=lambda msg: click.echo(msg, err=True))
    click.echo(format_table(result))


def _batches(text: str) -> list[int]:
    from ..errors import QnasError

    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise QnasError(f"--batch {text!r} is not a list of integers; use e.g. 1 or 1,32") from None
    if not values or min(values) <= 0:
        raise QnasError(f"--batch needs positive integers, got {text!r}; use e.g. 1 or 1,32")
    return values


@bench.command("profile", epilog="""\b
Examples:
  qnas bench profile a100,h100 --against h100_eager_measurements.csv   # no GPU needed
  qnas bench profile h100 --timed-with host-cuda --batch-size 1,32     # on an H100""")
@click.argument("device")
@click.option("--against", "against", default=None, metavar="FILE.csv",
              help="Check against a committed measurement file instead of measuring here (a "
                   "path, or a file of predictors/reference/ such as "
                   "h100_eager_measurements.csv); --timed-with and the timing options are "
                   "unused.")
@click.option("--timed-with", "timed_with", default="host-cuda", show_default=True,
              type=click.Choice(["host-cuda", "host-cpu"]),
              help="The measured backend (the hardware the profile is checked against).")
@deprecated_option("--measure", "--timed-with", "timed_with",
                   type=click.Choice(["host-cuda", "host-cpu"]))
@click.option("--space", default="quadranet", show_default=True,
              help="Search space whose candidate blocks are checked at its layer shapes.")
@click.option("--batch-size", "batch_size", default="1", show_default=True,
              help="Batch size(s), comma-separated (e.g. 1,32: batch-1 eager is dispatch-bound).")
@deprecated_option("--batch", "--batch-size", "batch_size")
@click.option("--models", default="quadranet_xxs,quadranet_t,resnet18", show_default=True,
              help="Whole models to check too, comma-separated ('' for none; torchvision ones "
                   "are skipped where torchvision does not import).")
@click.option("--resolution", default=None, type=click.IntRange(min=1),
              help="Override the deployment H=W (quick checks only).")
@click.option("--repeats", default=15, show_default=True, type=click.IntRange(min=1),
              help="Timed rounds per measurement (median).")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=0))
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help=threads_help(MEASURING))
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="CSV of the long table  [default: runs/bench/profile_<DEVICE>.csv]")
def profile_command(device, against, timed_with, space, batch_size, models, resolution,
                    repeats, warmup, threads, out) -> None:
    """Check profile DEVICE (or several, comma-separated) against measurements here.

    Each candidate block of the space at each distinct layer input shape, and each model, is
    predicted with the profile and measured with --timed-with; prints the tables and the median
    |rel error|, writes a CSV. A profile of other hardware than the one measured is labelled a
    cross-check, not a validation. With --against FILE.csv, every row of a committed
    measurement file is predicted at its own shape and batch instead (no GPU needed).
    """
    from ..bench.profile_check import check_against, check_profile, format_against, format_check
    from ..runtime.files import write_csv_atomic

    start = time.perf_counter()
    if against:
        checked = check_against(device, against)
        path = write_csv_atomic(checked.table, out or
                                f"runs/bench/profile_{'_'.join(checked.devices)}_against.csv")
        click.echo(format_against(checked))
        click.echo(f"wrote {path}")
        return
    result = check_profile(device, measure=timed_with, space=space, batches=_batches(batch_size),
                           models=models.split(","), resolution=resolution, repeats=repeats,
                           warmup=warmup, threads=threads,
                           progress=lambda msg: click.echo(f"  {msg}", err=True))
    path = write_csv_atomic(result.table, out or
                            f"runs/bench/profile_{'_'.join(result.devices)}.csv")
    click.echo(format_check(result))
    click.echo(f"wrote {path}")
    click.echo(f"wall time {time.perf_counter() - start:.1f} s")


@bench.command("data-spread", epilog="""\b
Examples:
  qnas bench data-spread                       # digit-pairs, the default space, cortexA76
  qnas bench data-spread --data digits --seeds 2""")
@config_options(DataSpreadConfig, purpose=TRAINING,
                helps={"device": "Target device (a name from 'qnas devices') whose latency "
                                 "table defines 'equal latency' and 'largest'."})
@click.option("--out", default="runs/bench/data-spread", show_default=True,
              type=click.Path(file_okay=False),
              help="Folder of the children's best.json and trainings (reused when run again).")
def data_spread_command(out, **options) -> None:
    """Do the children of a space differ on a dataset? Smallest vs largest, and two children
    of equal latency, trained alike; prints their top-1 and the spreads."""
    config = resolve_config(DataSpreadConfig, options)
    from tqdm.auto import tqdm

    from ..bench.data_spread import data_spread, spread_summary
    from .options import frame_text

    start = time.perf_counter()
    table = data_spread(config, out, echo=tqdm.write)
    shown = table[["child", "latency_ms", "params_M", "macs_M", "blocks", "mean_kernel",
                   "mean_expansion", "top1_mean", "top1_std", "top1"]].round(3)
    click.echo(f"{config.data}, space {config.space}, latency on {config.device}, "
               f"{config.epochs} epochs of qnas retrain's recipe, {config.seeds} seed(s)")
    click.echo(frame_text(shown))
    for line in spread_summary(table):
        click.echo(line)
    click.echo(f"wrote {Path(out) / 'data_spread.csv'}  ({time.perf_counter() - start:.0f} s)")


@bench.command("calibrate-host", epilog="""\b
Examples:
  qnas bench calibrate-host --out runs/bench/host_calibration
  qnas bench calibrate-host --home ~/.config/qnas --name my-laptop-ort   # keep the device""")
@click.option("--out", default="runs/bench/host_calibration", show_default=True,
              type=click.Path(file_okay=False),
              help="Folder for host_calibration.csv, lomo.csv, the fitted profile, report.md.")
@click.option("--name", "device_name", default="host-ort", show_default=True,
              help="Name of the user device to fit and register (not a shipped device's).")
@click.option("--home", default=None, type=click.Path(file_okay=False),
              help="QNAS_HOME to register the device in  [default: a temporary one, removed "
                   "afterwards]")
@click.option("--children", default=6, show_default=True, type=click.IntRange(min=5),
              help="Random QuadraNet children (not in the calibration set) to predict and time.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help=threads_help(MEASURING)[:-1] + ": onnxruntime's, here.")
@click.option("--repeats", default=15, show_default=True, type=click.IntRange(min=1),
              help="Timed runs per model (median).")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=0))
@click.option("--clock", default="cpu", show_default=True, type=click.Choice(["cpu", "wall"]),
              help="cpu: CPU time of the one thread that runs the model (steady on a shared "
                   "machine); wall: wall clock. Both are reported.")
@click.option("--like", default="cortexA76", show_default=True,
              help="The shipped profile the fit starts from.")
def calibrate_host_command(out, device_name, home, children, seed, threads, repeats, warmup,
                           clock, like) -> None:
    """Prove the calibrate-your-own-device workflow here: time the calibration set with
    onnxruntime, fit a user device from those numbers alone, and check it on QuadraNet
    children that are not in the set (goal: median |rel. error| ≤ 15%)."""
    from ..bench.host_calibration import calibrate_host, format_table, summary_lines
    from ..runtime.threads import resolve_threads
    from .options import frame_text

    threads = resolve_threads(threads, MEASURING)
    start = time.perf_counter()
    result = calibrate_host(out, device=device_name, home=home, children=children, seed=seed,
                            threads=threads, warmup=warmup, repeats=repeats, clock=clock,
                            like=like, progress=lambda msg: click.echo(f"  {msg}", err=True))
    click.echo(frame_text(format_table(result).drop(columns="ops")))
    for line in summary_lines(result):
        click.echo(line)
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"wrote {Path(out) / 'report.md'}, host_calibration.csv, lomo.csv, "
               f"{device_name}.yaml  ({time.perf_counter() - start:.0f} s)")


@bench.command("gpu", epilog="""\b
Examples:
  qnas bench gpu --out experiments/results/gpu            # every part, on the GPU
  qnas bench gpu --out experiments/results/gpu --parts blocks,supernet --budget-s 120
  scripts/gpu_check.sh                                    # all parts, time-limited, <= 8 min""")
@click.option("--out", default="experiments/results/gpu", show_default=True,
              type=click.Path(file_okay=False),
              help="Folder of the CSVs, report.md, environment.json and parts.json.")
@click.option("--parts", default="all", show_default=True,
              help="Comma-separated parts: quadraconv, blocks, supernet, e2e, latency, options; "
                   "all; or report (only rewrite report.md from the CSVs in --out).")
@click.option("--budget-s", default=None, type=click.FloatRange(min=1),
              help="Seconds each part may take; a part measures less (and says so) rather "
                   "than run over  [default: no limit]")
@click.option("--accelerator", default="cuda", hidden=True,
              type=click.Choice(["cuda", "cpu"]),
              help="The accelerator to measure on: cuda; cpu only tests the pipeline.")
@click.option("--tiny", is_flag=True, hidden=True,
              help="Toy sizes (with --accelerator cpu: the whole pipeline in seconds).")
def gpu_command(out, parts, budget_s, accelerator, tiny) -> None:
    """Everything measured on a CUDA GPU in one command: Table II (QuadraBlock vs HorBlock vs
    ConvNeXt block), QuadraConv2d's paths, supernet vs child steps, a search and a retrain end
    to end, the latency of the 24 QuadraBlock candidates and whole models (eager, CUDA graphs,
    torch.compile; the CSV the GPU profile fit reads), and what --precision, --channels-last
    and --compile buy. Writes CSVs and report.md (goals met or missed) under --out."""
    from ..bench.gpu import parse_parts, run_gpu_bench, write_report

    if parse_parts(parts) == []:            # --parts report: no device needed
        if not Path(out).is_dir():
            from ..errors import QnasError

            raise QnasError(f"{out} holds no measurements; run 'qnas bench gpu --out {out}' "
                            f"first")
        path = write_report(out)
    else:
        path = run_gpu_bench(out, parts=parts, accelerator=accelerator, tiny=tiny,
                             budget_s=budget_s, echo=lambda message: click.echo(message,
                                                                                 err=True))
    click.echo(f"wrote {path}")
