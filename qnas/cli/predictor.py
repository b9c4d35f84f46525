"""The ``qnas predictor`` group: calibrate a profile, build a latency table, install nn-Meter's
predictor files, build an nn-Meter-format predictor of this host."""
from __future__ import annotations

import time

import click

from . import cli
from .options import frame_text, parse_shape


@cli.group("predictor")
def predictor() -> None:
    """Latency predictors: calibrate profiles, inspect latency tables, nn-Meter files."""


@predictor.command("calibrate")
@click.argument("device")
@click.option("--write/--no-write", default=True, show_default=True,
              help="Write the regenerated profile YAML.")
@click.option("--out", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Write the profile here instead of the shipped predictors/<DEVICE>.yaml.")
def calibrate_command(device: str, write: bool, out: str | None) -> None:
    """Fit DEVICE's profile to nn-Meter's reference latencies; print the leave-one-model-out table."""
    from ..predictors.calibrate import calibrate, write_profile
    from ..predictors.devices import device_info

    name = device_info(device).name
    result = calibrate(name)
    lomo = result.lomo.copy()
    lomo["rel_error"] = lomo["rel_error"].map("{:+.1%}".format)
    click.echo(f"{name}: leave-one-model-out (fit on 10 models, predict the 11th)")
    click.echo(frame_text(lomo))
    click.echo(f"median |rel. error| {result.median_abs_rel_error:.1%}")
    parameters = result.profile["fit"]["parameters"]
    click.echo("fitted: " + ", ".join(f"{key}={spec['value']:g}" for key, spec in parameters.items()))
    if write or out:
        path = write_profile(result, out)
        click.echo(f"wrote {path} (version {result.profile['version']})")


@predictor.command("lut")
@click.option("--space", default="quadranet", show_default=True, help="Search space name or YAML.")
@click.option("--device", required=True, help="A device from 'qnas devices'.")
@click.option("--input", "input_shape", default=None, help="Input shape [default: the space's].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the on-disk cache.")
def lut_command(space: str, device: str, input_shape: str | None, no_cache: bool) -> None:
    """Build (or load from cache) the latency table of a search space on a device."""
    from ..predictors.lut import build_lut

    started = time.perf_counter()
    table = build_lut(space, device, input_shape=input_shape, use_cache=not no_cache)
    seconds = time.perf_counter() - started
    click.echo(table.describe())
    click.echo(f"{'loaded from cache' if table.from_cache else 'built'} in {seconds:.2f} s "
               f"(key {table.key})")
    click.echo(frame_text(table.to_frame().round(4).reset_index()))


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
    from ..predictors.nnmeter_files import (
        device_map,
        install_nnmeter_predictors,
        nnmeter_available,
    )

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
        input_shape=parse_shape(input_shape), threads=threads, n_estimators=trees, seed=seed,
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
