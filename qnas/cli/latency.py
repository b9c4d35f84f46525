"""``qnas devices`` and ``qnas latency``: what a model costs on each device, with the source of
every number."""
from __future__ import annotations

import click

from . import cli
from .options import frame_text


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
    import pandas as pd

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
    click.echo(frame_text(frame))
    error = result.prediction_error()
    if error == error:
        click.echo(f"host-cpu table sum vs measured PyTorch: {error:+.1%} relative error")
    for note in result.notes:
        click.echo(f"note: {note}")


def _predict_and_report(spec: str, devices: list[str], explicit: bool, shape: tuple, top: int,
                        num_classes: int) -> None:
    import pandas as pd

    from ..deploy.child import model_from_spec
    from ..errors import QnasError
    from ..predictors.devices import device_info
    from ..predictors.kernels import decompose
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
    click.echo(frame_text(frame.drop(columns="known_error")))
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
            click.echo(frame_text(shown))
