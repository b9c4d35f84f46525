"""``qnas predictor install-nnmeter`` / ``qnas predictor build`` and ``qnas bench predictor``."""
from __future__ import annotations

import click

from .bench import bench
from .predictor import predictor


def _shape(text: str | None):
    if text is None:
        return None
    from ..predictors.kernels import parse_input_shape

    return parse_input_shape(text)


@predictor.command("install-nnmeter")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--name", default=None,
              help="Predictor name when PATH is a single predictor folder/zip not named after it "
                   "(e.g. cortexA76cpu_tflite21).")
def install_nnmeter_command(path: str, name: str | None) -> None:
    """Install nn-Meter predictor files from a local zip or folder (never downloads).

    PATH is nn-Meter's release zip (e.g. cortexA76cpu_tflite21.zip from
    github.com/microsoft/nn-Meter/releases, fetched on a machine with network) or its unpacked
    folder. The files go where nn-Meter looks for them (~/.nn_meter/data/predictor/<name>/).
    """
    from ..predictors.nnmeter_files import (device_map, install_nnmeter_predictors,
                                            nnmeter_available)

    installed = install_nnmeter_predictors(path, name=name)
    devices = {v: k for k, v in device_map().items()}
    for folder in installed:
        device = devices.get(folder.name)
        state = ""
        if device:
            state = (f" -> device {device} now uses nn-Meter" if nnmeter_available(device)
                     else f" -> device {device}: files incomplete")
        click.echo(f"installed {folder.name} into {folder}{state}")


@predictor.command("build")
@click.option("--device", default="host-cpu", show_default=True,
              type=click.Choice(["host-cpu", "host-cuda"]), help="The host device to measure.")
@click.option("--samples", default=100, show_default=True, type=click.IntRange(min=2),
              help="Timed configurations per kernel type.")
@click.option("--out", default=None, type=click.Path(path_type=str),
              help="Predictor folder [default: ~/.nn_meter/data/predictor/qnas_host_cpu].")
@click.option("--space", default="quadranet", show_default=True,
              help="Search space whose block kernels half the samples are drawn around "
                   "('none': all uniform).")
@click.option("--input-shape", default=None,
              help="Deployment input shape for those kernels, e.g. 1x3x224x224 "
                   "[default: the space's].")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="torch threads while timing [default: 1 or $QNAS_HOST_THREADS].")
@click.option("--trees", default=100, show_default=True, type=click.IntRange(min=1),
              help="Trees per random forest.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--register/--no-register", default=True, show_default=True,
              help="Register it with 'nn-meter register --predictor meta.yaml'.")
def build_command(device, samples, out, space, input_shape, threads, trees, seed,
                  register) -> None:
    """Measure kernels on this host and build + register an nn-Meter-format predictor."""
    from ..predictors.builder import build_host_predictor

    built = build_host_predictor(
        device, samples, out, space=None if str(space).lower() == "none" else space,
        input_shape=_shape(input_shape), threads=threads, n_estimators=trees, seed=seed,
        register=register, progress=lambda msg: click.echo(msg, err=True))
    click.echo(f"built nn-Meter predictor {built.name} in {built.folder} "
               f"({built.seconds:.0f} s)")
    for kernel, error in built.kernel_errors.items():
        shown = "n/a (fewer than 10 samples)" if error is None else f"{100 * error:.1f}%"
        click.echo(f"  {kernel:16s} hold-out median |rel. error| {shown}")
    from ..predictors.op_costs import HostOpCosts

    costs = HostOpCosts.from_folder(built.folder)
    if costs is not None and costs.calibration:
        error = costs.calibration.get("in_sample_median_rel_error")
        click.echo(f"  in-network overhead {1000 * costs.overhead_per_kernel_ms:.2f} µs per kernel, "
                   f"fitted on {costs.calibration.get('networks')} calibration networks"
                   + (f" (in-sample median |rel. error| {100 * error:.1f}%)"
                      if error is not None else ""))
    if register:
        click.echo(f"registered with nn-Meter; qnas device {device} maps to it "
                   f"(NNMeterPredictor('{device}'))")
    else:
        click.echo(f"not registered; register it with: nn-meter register --predictor "
                   f"{built.meta_path}")


@bench.command("predictor")
@click.option("--children", default=5, show_default=True, type=click.IntRange(min=1),
              help="Random QuadraNet children to compare.")
@click.option("--input-shape", default="1x3x64x64", show_default=True)
@click.option("--space", default="quadranet", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--samples", default=100, show_default=True, type=click.IntRange(min=2),
              help="Samples per kernel type if the host predictor has to be built first.")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="torch threads [default: the built predictor's].")
@click.option("--build/--no-build", default=True, show_default=True,
              help="Build the host-cpu predictor first when none is registered.")
def bench_predictor_command(children, input_shape, space, seed, samples, threads, build) -> None:
    """Predicted (nn-Meter host-cpu predictor) vs measured latency of random QuadraNet children."""
    from ..bench.predictor import bench_predictor, format_table

    result = bench_predictor(children=children, input_shape=_shape(input_shape), space=space,
                             seed=seed, samples=samples, threads=threads, build=build,
                             progress=lambda msg: click.echo(msg, err=True))
    click.echo(format_table(result))
