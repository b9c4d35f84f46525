"""``qnas devices``, ``qnas latency`` and the ``qnas predictor`` group (calibrate, lut, …)."""
from __future__ import annotations

import time

import click
import pandas as pd

from . import cli


def _table(frame: pd.DataFrame) -> str:
    with pd.option_context("display.max_colwidth", 120, "display.width", 200):
        return frame.to_string(index=False)


@cli.command("devices")
def devices_command() -> None:
    """List the latency devices, the backend each uses here, its source and known error."""
    from ..predictors.registry import describe_devices

    frame = describe_devices()
    for row in frame.itertuples():
        click.echo(f"{row.device:10s} {row.backend:9s} {row.version}")
        click.echo(f"{'':10s} source: {row.source}")
        click.echo(f"{'':10s} known error: {row.known_error}")
        if row.note:
            click.echo(f"{'':10s} note: {row.note}")


def _devices_from_option(device: str) -> list[str]:
    from ..predictors.devices import device_info, list_devices

    if device.strip().lower() == "all":
        return list_devices()
    return [device_info(name.strip()).name for name in device.split(",") if name.strip()]


@cli.command("latency")
@click.argument("model_spec", required=False, metavar="[MODEL]")
@click.option("--model", "model_option", default=None,
              help="qnas/timm model (quadranet_t) or torchvision constructor (resnet18).")
@click.option("--device", default="all", show_default=True,
              help="A device from 'qnas devices', several separated by commas, or 'all'.")
@click.option("--input", "input_shape", default=None,
              help="Input shape N×C×H×W  [default: 1x3x224x224, or the best.json's shape]")
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=0),
              help="Show the N most expensive kernels per device (0: none).")
@click.option("--num-classes", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option("--measure", is_flag=True,
              help="MODEL is a best.json: also time its exported child on this host (PyTorch "
                   "and onnxruntime) beside the host-cpu predictions.")
@click.option("--repeats", default=None, type=click.IntRange(min=1),
              help="With --measure: timed rounds per runtime (median)  [default: 20]")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="With --measure: intra-op threads of PyTorch and onnxruntime  [default: 1, "
                   "or $QNAS_HOST_THREADS]")
def latency_command(model_spec: str | None, model_option: str | None, device: str,
                    input_shape: str, top: int, num_classes: int, measure: bool,
                    repeats: int | None, threads: int | None) -> None:
    """Predicted latency of MODEL on each device, with its source and known error.

    MODEL may be a best.json (its child at its input shape); with --measure the exported
    child is also timed here."""
    from ..errors import QnasError
    from ..predictors.kernels import parse_input_shape

    if model_spec and model_option and model_spec != model_option:
        raise QnasError(f"give the model once: either MODEL ({model_spec}) or --model "
                        f"({model_option})")
    spec = model_spec or model_option
    if not spec:
        raise QnasError("name a model, e.g. 'qnas latency --model quadranet_t' or "
                        "'qnas latency resnet18 --device cortexA76'")
    if measure and not spec.endswith(".json"):
        raise QnasError(f"--measure times the exported child of a best.json on this host; give "
                        f"MODEL as a best.json (e.g. 'qnas latency runs/<name>/best.json "
                        f"--measure'), not {spec!r}")
    if not measure and (repeats is not None or threads is not None):
        raise QnasError("--repeats and --threads only apply with --measure")
    if input_shape is None and spec.endswith(".json"):
        from ..nas.best import load_best

        input_shape = load_best(spec).input_shape
    shape = parse_input_shape(input_shape or "1x3x224x224")
    devices = _devices_from_option(device)
    explicit = device.strip().lower() != "all"
    if measure:
        # host-cpu is answered beside the measurements, on the very module timed
        devices = [name for name in devices if name != "host-cpu"]
        if devices:
            _predict_and_report(spec, devices, explicit, shape, top, num_classes)
        _measure_and_report(spec, shape, repeats, threads)
        return
    _predict_and_report(spec, devices, explicit, shape, top, num_classes)


def _measure_and_report(spec: str, shape: tuple, repeats: int | None,
                        threads: int | None) -> None:
    from ..deploy.measure import DEFAULT_REPEATS, measure_best

    result = measure_best(spec, shape, repeats=repeats or DEFAULT_REPEATS, threads=threads)
    click.echo(f"\n{spec} measured on this host at {'x'.join(map(str, result.input_shape))}, "
               f"{result.threads} thread(s)\n  {result.child}")
    frame = result.table.copy()
    frame["latency_ms"] = frame["latency_ms"].map("{:.4g}".format)
    frame["rel_to_pytorch"] = frame["rel_to_pytorch"].map(
        lambda v: "" if pd.isna(v) else f"{v:+.1%}")
    for column in ("repeats", "calls_per_round", "threads"):
        frame[column] = frame[column].map(lambda v: "" if pd.isna(v) else str(int(v)))
    click.echo(_table(frame))
    error = result.prediction_error()
    if error == error:
        click.echo(f"host-cpu table sum vs measured PyTorch: {error:+.1%} relative error")
    for note in result.notes:
        click.echo(f"note: {note}")


def _predict_and_report(spec: str, devices: list[str], explicit: bool, shape: tuple, top: int,
                        num_classes: int) -> None:
    from ..errors import QnasError
    from ..predictors.kernels import decompose
    from ..deploy.child import model_from_spec
    from ..predictors.devices import device_info
    from ..predictors.registry import get

    # analytic backends only need shapes (meta device); a measured one needs real weights
    measured = any(device_info(name).kind == "measured" for name in devices)
    model = model_from_spec(spec, num_classes=num_classes, meta=not measured)
    decompose(model, shape)          # a shape the model cannot run is one error, not one per device

    rows, predictions = [], []
    for name in devices:
        try:
            prediction = get(name).predict(model, shape)
        except QnasError as err:
            if explicit:
                raise
            rows.append({"device": name, "latency_ms": float("nan"), "source": "unavailable",
                         "version": "", "known_error": str(err)})
            continue
        predictions.append(prediction)
        rows.append({"device": name, "latency_ms": round(prediction.latency_ms, 3),
                     "source": prediction.source, "version": prediction.version,
                     "known_error": prediction.known_error})

    click.echo(f"{spec} at {'x'.join(map(str, shape))}")
    frame = pd.DataFrame(rows)
    click.echo(_table(frame.drop(columns="known_error")))
    click.echo("known error:")
    for row in frame.itertuples():
        click.echo(f"  {row.device}: {row.known_error}")
    for prediction in predictions:
        if top and len(prediction.kernels):
            click.echo(f"\ntop {top} kernels on {prediction.device} ({prediction.source}):")
            shown = prediction.top_kernels(top).copy()
            shown["ms"] = shown["ms"].round(4)
            for column in ("flops", "bytes"):
                shown[column] = shown[column].astype("int64")
            shown["share"] = (shown["ms"] / prediction.latency_ms).map("{:.1%}".format)
            click.echo(_table(shown))


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
    click.echo(_table(lomo))
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
    with pd.option_context("display.width", 200):
        click.echo(table.to_frame().round(4).to_string())
