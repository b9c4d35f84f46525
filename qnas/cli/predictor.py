"""The ``qnas predictor`` group: calibrate a profile (a shipped one to nn-Meter's reference, or
your own device to your measurements of the calibration set), build a latency table, install
nn-Meter's predictor files, build an nn-Meter-format predictor of this host."""
from __future__ import annotations

import time

import click

from . import cli
from .latency import echo_csv, echo_json, format_option
from .options import frame_text, input_shape_option, parse_shape, take_aliases


@cli.group("predictor")
def predictor() -> None:
    """Latency predictors: calibrate profiles, inspect latency tables, nn-Meter files."""


@predictor.command("calibrate", epilog="""\b
Examples:
  qnas predictor calibration-set --out calib        # models to time + measurements.csv
  qnas predictor calibrate pixel7 --measurements calib/measurements.csv --like cortexA76
  qnas predictor calibrate pixel7                   # refit it from its stored measurements
  qnas predictor calibrate cortexA76 --out a76.yaml # refit a shipped profile to nn-Meter's data""")
@click.argument("name")
@click.option("--measurements", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Your filled measurements.csv: fit a profile for your device NAME and "
                   "register it in $QNAS_HOME (default ~/.config/qnas).")
@click.option("--like", default=None,
              help="With --measurements: the shipped profile whose kernel classes and priors "
                   "the fit starts from (cortexA76 for CPUs, adreno640 for mobile GPUs, "
                   "myriadvpu for VPUs)  [default: cortexA76]")
@click.option("--set", "set_path", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="The calibration_set.yaml the CSV's model names refer to  [default: the one "
                   "beside the CSV, else the shipped set]")
@click.option("--description", default=None, help="With --measurements: a line describing the "
                                                  "device, runtime and settings.")
@click.option("--register/--no-register", default=True, show_default=True,
              help="With --measurements: register NAME as a user device.")
@click.option("--out", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Also write the fitted profile YAML here (the only way to write a refit "
                   "shipped profile; nothing is ever written into the installed package).")
def calibrate_command(name: str, measurements: str | None, like: str | None,
                      set_path: str | None, description: str | None, register: bool,
                      out: str | None) -> None:
    """Fit a latency profile and print its leave-one-model-out table.

    With --measurements, NAME is your own device: the profile is fitted to your timings of the
    calibration set and NAME becomes a device every command accepts. Without it, NAME is a
    shipped device refitted to nn-Meter's reference latencies (written only with --out), or a
    user device refitted from its stored measurements."""
    from ..errors import QnasError
    from ..predictors.calibrate import write_profile
    from ..predictors.devices import device_info

    user = _is_user_device(name)
    if measurements is None and not user:
        if like or set_path or description or not register:
            raise QnasError("--like, --set, --description and --no-register apply to your own "
                            "device, with --measurements FILE.csv")
        from ..predictors.calibrate import calibrate

        try:
            device = device_info(name).name
        except QnasError:
            raise QnasError(f"'{name}' is neither a shipped device nor one of your devices; to "
                            f"fit your own device give --measurements FILE.csv (the template: "
                            f"'qnas predictor calibration-set --out DIR')") from None
        result = calibrate(device)
        if result.lomo.empty:           # a derived profile (a100 from h100): no fit of its own
            click.echo(f"{device}: {result.profile.get('source', 'derived')} — no fit of its own "
                       f"and nothing to leave out; its error is that of the profile it derives "
                       f"from")
        else:
            _print_fit(result, f"{device}: leave-one-model-out (fit on {len(result.lomo) - 1} "
                               f"models, predict the remaining one)")
        if out:
            click.echo(f"wrote {write_profile(result, out)} (version "
                       f"{result.profile['version']})")
        else:
            click.echo("nothing written: the shipped profile stays as installed; give --out "
                       "FILE to save the refit")
        return
    from ..predictors.user_devices import calibrate_user_device

    done = calibrate_user_device(name, measurements, like=like, set_path=set_path,
                                 description=description, register=register)
    read = done.measurements
    result = done.result
    click.echo(f"{result.device}: {len(read.timed)} timed models of calibration set "
               f"{read.calibration_set.label} from {read.path}, fitted like {done.like}")
    _print_fit(result, f"leave-one-model-out (fit on {len(result.lomo) - 1} models, predict the "
                       f"remaining one)", measured=True)
    if out:
        click.echo(f"wrote {write_profile(result, out)}")
    if done.info is not None:
        click.echo(f"{'replaced' if done.replaced else 'registered'} user device "
                   f"{done.info.name} (profile {done.info.profile_path}); use it as "
                   f"'--device {done.info.name}' (qnas devices lists it)")
    else:
        click.echo("not registered (--no-register)")


def _is_user_device(name: str) -> bool:
    from ..predictors.user_devices import user_device

    return user_device(name) is not None


def _print_fit(result, title: str, measured: bool = False) -> None:
    lomo = result.lomo.copy()
    if measured:
        lomo = lomo.rename(columns={"reference_ms": "measured_ms"})
    lomo["rel_error"] = lomo["rel_error"].map("{:+.1%}".format)
    click.echo(title)
    click.echo(frame_text(lomo))
    click.echo(f"median |rel. error| {result.median_abs_rel_error:.1%}")
    for method, frame in (getattr(result, "validation", None) or {}).items():
        if method != "leave-one-model-out" and len(frame):
            errors = frame["rel_error"].abs()
            click.echo(f"{method}: median |rel. error| {errors.median():.1%}, max "
                       f"{errors.max():.0%}")
    parameters = result.profile["fit"]["parameters"]
    click.echo("fitted: " + ", ".join(f"{key}={spec['value']:g}"
                                      for key, spec in parameters.items()))


@predictor.command("calibration-set", epilog="""\b
Examples:
  qnas predictor calibration-set --out calib
  # time calib/models/*.onnx (or *.tflite) on the device, fill calib/measurements.csv, then:
  qnas predictor calibrate pixel7 --measurements calib/measurements.csv""")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder to write (models/, measurements.csv, README.txt).")
@click.option("--set", "set_path", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="A calibration set YAML  [default: the shipped predictors/calibration_set.yaml]")
@click.option("--tflite/--no-tflite", default=True, show_default=True,
              help="Also write LiteRT/TFLite files where the optional converter is installed "
                   "(pip install qnas[tflite]).")
@click.option("--force", is_flag=True, help="Replace --out if it is not empty.")
def calibration_set_command(out: str, set_path: str | None, tflite: bool, force: bool) -> None:
    """Write the calibration set: models to time on your device (ONNX, and TFLite when the
    converter is installed), a measurements.csv to fill in, and a README on how to time them."""
    from ..predictors.calibration_set import write_calibration_set

    written = write_calibration_set(out, set_path, tflite=tflite, force=force,
                                    progress=lambda msg: click.echo(f"  {msg}", err=True))
    cset = written.calibration_set
    click.echo(f"wrote {len(written.table)} models of calibration set {cset.label} at "
               f"{'x'.join(map(str, cset.input_shape))} into {written.folder} "
               f"({written.seconds:.0f} s; ONNX checked with onnxruntime"
               f"{', TFLite via ' + written.tflite if written.tflite else ''})")
    for note in written.notes:
        click.echo(f"note: {note}")
    click.echo(f"next: time them as {written.folder}/README.txt says, fill in "
               f"{written.folder}/measurements.csv, then 'qnas predictor calibrate NAME "
               f"--measurements {written.folder}/measurements.csv'")


@predictor.command("remove-device")
@click.argument("name")
def remove_device_command(name: str) -> None:
    """Remove your device NAME from the user registry ($QNAS_HOME) with its files."""
    from ..predictors.user_devices import remove_user_device

    removed = remove_user_device(name)
    click.echo(f"removed user device {removed.name} from {removed.root}")


@predictor.command("lut", epilog="""\b
Examples:
  qnas predictor lut --device cortexA76
  qnas predictor lut --device myriadvpu --format csv > lut.csv""")
@click.option("--space", default="quadranet", show_default=True, help="Search space name or YAML.")
@click.option("--device", required=True, help="A device from 'qnas devices'.")
@input_shape_option(shown="the space's")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the on-disk cache.")
@format_option
def lut_command(space: str, device: str, input_shape: str | None, no_cache: bool,
                fmt: str) -> None:
    """Build (or load from cache) the latency table of a search space on a device."""
    input_shape = take_aliases({"input_shape": input_shape})["input_shape"]
    from ..predictors.lut import build_lut
    from ..predictors.registry import get, known_error_short

    started = time.perf_counter()
    table = build_lut(space, device, input_shape=input_shape, use_cache=not no_cache)
    seconds = time.perf_counter() - started
    frame = table.to_frame().round(4).rename_axis("layer").reset_index()
    short = known_error_short(get(table.device))
    if fmt == "json":
        data = table.to_dict()
        data.update(known_error_short=short,
                    from_cache=table.from_cache, seconds=round(seconds, 3))
        echo_json(data)
        return
    if fmt == "csv":
        echo_csv(frame)
        return
    click.echo(f"{table.device} LUT {len(table.layer_names)}×{len(table.candidates)} at "
               f"{'x'.join(map(str, table.input_shape))}: fixed {table.fixed_ms:.3f} ms, children "
               f"{table.min_ms():.3f}–{table.max_ms():.3f} ms [{table.source} {table.version}; "
               f"known error: {short}]")
    click.echo(f"{'loaded from cache' if table.from_cache else 'built'} in {seconds:.2f} s "
               f"(key {table.key})")
    click.echo(frame_text(frame))


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
