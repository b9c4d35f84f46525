"""``qnas devices`` and ``qnas latency``: what a model costs on each device, with the source of
every number. Both (and ``qnas predictor lut``) print a table, JSON or CSV (``--format``)."""
from __future__ import annotations

import click

from . import cli
from .options import FORMATS, frame_text, input_shape_option, take_aliases


def format_option(function):
    """``--format table|json|csv``: a table for people, JSON or CSV for programs (those hold
    every column, the full known error included)."""
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
                        show_default=True,
                        help="table for people; json or csv (every column, full known "
                             "error) for programs.")(function)


def _plain(value):
    """JSON-safe: NaN → None, numpy scalars → Python, tuples → lists."""
    import math

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def table_text(frame, right: tuple[str, ...] = ()) -> str:
    """A table for the terminal: text columns left-aligned, numbers (and ``right``)
    right-aligned."""
    import pandas as pd

    columns = []
    for column in frame.columns:
        values = frame[column]
        numeric = pd.api.types.is_numeric_dtype(values) or column in right
        cells = ["" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)
                 for v in values]
        width = max([len(str(column)), *map(len, cells)])
        align = str.rjust if numeric else str.ljust
        columns.append([align(str(column), width), *(align(c, width) for c in cells)])
    lines = [" ".join(row).rstrip() for row in zip(*columns)] if columns else []
    return "\n".join(lines)


def echo_json(obj) -> None:
    import json

    click.echo(json.dumps(_plain(obj), indent=2, ensure_ascii=False))


def echo_csv(frame) -> None:
    click.echo(frame.to_csv(index=False), nl=False)


@cli.command("devices", epilog="""\b
Examples:
  qnas devices
  qnas devices --verbose            # full known error, source and notes per device
  qnas devices --format json        # every column, for programs""")
@click.option("--verbose", "-v", is_flag=True,
              help="Per device: the full known error, its source, description and notes.")
@format_option
def devices_command(verbose: bool, fmt: str) -> None:
    """List the latency devices (shipped and your own), the backend each uses here, its
    version and known error, and whether nn-Meter's predictor files are installed."""
    from ..predictors.devices import qnas_home
    from ..predictors.registry import describe_devices, nnmeter_summary

    frame = describe_devices()
    if fmt == "json":
        echo_json(frame.to_dict(orient="records"))
        return
    if fmt == "csv":
        echo_csv(frame)
        return
    if verbose:
        for row in frame.itertuples():
            click.echo(f"{row.device} ({row.origin} {row.kind}, backend {row.backend}"
                       f"{', version ' + row.version if row.version else ''})")
            for label, value in (("description", row.description), ("source", row.source),
                                 ("fitted to", row.fitted_to),
                                 ("known error", row.known_error),
                                 ("nn-Meter", f"{row.nnmeter_predictor}: {row.nnmeter_files}"
                                  if row.nnmeter_predictor else ""), ("note", row.note)):
                if value:
                    click.echo(f"  {label}: {value}")
    else:
        shown = frame[["device", "origin", "backend", "version", "known_error_short",
                       "fitted_to"]].copy()
        shown["nn-Meter files"] = [f"{state} ({name})" if name else "-"
                                   for name, state in zip(frame["nnmeter_predictor"],
                                                          frame["nnmeter_files"])]
        shown = shown.rename(columns={"known_error_short": "known error (outside the fit)",
                                      "fitted_to": "fitted to"})
        click.echo(table_text(shown))
    click.echo(nnmeter_summary(frame))
    user = frame[frame["origin"] == "user"]
    click.echo(f"user devices ({len(user)}) live in {qnas_home()} ($QNAS_HOME); add one with "
               f"'qnas predictor calibration-set --out DIR', then 'qnas predictor calibrate NAME "
               f"--measurements DIR/measurements.csv'")
    if not verbose:
        click.echo("full known errors, sources and notes: 'qnas devices --verbose'")


def _devices_from_option(device: str) -> list[str]:
    from ..predictors.devices import device_info, list_devices

    if device.strip().lower() == "all":
        return list_devices()
    return [device_info(name.strip()).name for name in device.split(",") if name.strip()]


@cli.command("latency", epilog="""\b
Examples:
  qnas latency --model quadranet_t                  # every device, one line each
  qnas latency resnet18 --device cortexA76          # one device, with its top 10 kernels
  qnas latency model.onnx --device cortexA76cpu_tflite21
  qnas latency runs/<name>/best.json --measure      # also time the exported child here
  qnas latency quadranet_t --format json""")
@click.argument("model_spec", required=False, metavar="[MODEL]")
@click.option("--model", "model_option", default=None,
              help="qnas/timm model (quadranet_t), torchvision constructor (resnet18), a "
                   "best.json or an ONNX file.")
@click.option("--device", default="all", show_default=True,
              help="A device from 'qnas devices' (or an nn-Meter predictor name such as "
                   "cortexA76cpu_tflite21), several separated by commas, or 'all'.")
@input_shape_option(shown="1x3x224x224, the best.json's shape, or the ONNX graph's")
@click.option("--top", default=None, type=click.IntRange(min=0),
              help="Show the N most expensive kernels per device (0: none)  [default: 10 for "
                   "one device, 0 for several]")
@click.option("--num-classes", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option("--measure", is_flag=True,
              help="MODEL is a best.json: also time its exported child on this host (PyTorch "
                   "and onnxruntime) beside the host-cpu predictions.")
@click.option("--repeats", default=None, type=click.IntRange(min=1),
              help="With --measure: timed rounds per runtime (median)  [default: 20]")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="With --measure: intra-op threads of PyTorch and onnxruntime  [default: 1, "
                   "or $QNAS_HOST_THREADS]")
@format_option
def latency_command(model_spec: str | None, model_option: str | None, device: str,
                    input_shape: str, top: int | None, num_classes: int, measure: bool,
                    repeats: int | None, threads: int | None, fmt: str) -> None:
    """Predicted latency of MODEL on each device, with its source and known error.

    MODEL may be a best.json (its child at its input shape; with --measure the exported child
    is also timed here) or an ONNX file (predicted with each device's profile)."""
    from ..errors import QnasError
    from ..predictors.kernels import parse_input_shape

    input_shape = take_aliases({"input_shape": input_shape})["input_shape"]
    if model_spec and model_option and model_spec != model_option:
        raise QnasError(f"give the model once: either MODEL ({model_spec}) or --model "
                        f"({model_option})")
    spec = model_spec or model_option
    if not spec:
        raise QnasError("name a model, e.g. 'qnas latency --model quadranet_t' or "
                        "'qnas latency resnet18 --device cortexA76'")
    onnx_file = spec.lower().endswith(".onnx")
    if measure and not spec.endswith(".json"):
        raise QnasError(f"--measure times the exported child of a best.json on this host; give "
                        f"MODEL as a best.json (e.g. 'qnas latency runs/<name>/best.json "
                        f"--measure'), not {spec!r}")
    if not measure and (repeats is not None or threads is not None):
        raise QnasError("--repeats and --threads only apply with --measure")
    if measure and fmt == "csv":
        raise QnasError("--measure adds a second table; use --format json (or table) with it")
    if input_shape is None and spec.endswith(".json"):
        from ..nas.best import load_best

        input_shape = load_best(spec).input_shape
    shape = None if onnx_file and input_shape is None else \
        parse_input_shape(input_shape or "1x3x224x224")
    devices = _devices_from_option(device)
    explicit = device.strip().lower() != "all"
    if measure:
        # host-cpu is answered beside the measurements, on the very module timed
        devices = [name for name in devices if name != "host-cpu"]
    if top is None:
        top = 10 if len(devices) == 1 else 0
    report = predict_report(spec, devices, explicit, shape, top, num_classes) if devices \
        else {"model": spec, "input_shape": list(shape), "predictions": []}
    measurement = _measure(spec, shape, repeats, threads) if measure else None
    if fmt == "json":
        if measurement is not None:
            report["measurements"] = measurement.table.to_dict(orient="records")
            report["measurement_notes"] = list(measurement.notes)
        echo_json(report)
        return
    if fmt == "csv":
        echo_csv(_prediction_frame(report, full=True))
        return
    if report["predictions"]:
        _print_predictions(report, top)
    if measurement is not None:
        _print_measurement(spec, measurement)


def predict_report(spec: str, devices: list[str], explicit: bool, shape: tuple | None,
                   top: int, num_classes: int) -> dict:
    """The predictions of ``spec`` (a model name, best.json or ONNX file) on ``devices``:
    ``{model, input_shape, predictions: [{device, latency_ms, source, version,
    known_error_short, known_error, top_kernels}]}``. A device that cannot answer raises when
    ``explicit``, else gets a row with source ``unavailable``."""
    from ..errors import QnasError
    from ..predictors.devices import device_info
    from ..predictors.registry import get, known_error_short, short_known_error

    predictors = {}
    if spec.lower().endswith(".onnx"):
        from ..predictors.onnx_graph import load_onnx_graph, onnx_kernels
        from ..predictors.registry import profile_predictor

        graph = load_onnx_graph(spec, shape)
        shape, graph_kernels = graph.input_shape, onnx_kernels(graph)

        def predict(name):
            if device_info(name).profile is None:
                raise QnasError(f"device '{name}' times PyTorch modules on this machine; an "
                                f"ONNX graph is predicted with a profile device")
            predictors[name] = profile_predictor(name)
            return predictors[name].predict_kernels(graph_kernels)
    else:
        from ..deploy.child import model_from_spec
        from ..predictors.kernels import decompose

        # analytic backends only need shapes (meta device); a measured one needs real weights
        measured = any(device_info(name).kind == "measured" for name in devices)
        model = model_from_spec(spec, num_classes=num_classes, meta=not measured)
        decompose(model, shape)      # a shape the model cannot run is one error, not one per device

        def predict(name):
            predictors[name] = get(name)
            return predictors[name].predict(model, shape)

    rows = []
    for name in devices:
        try:
            prediction = predict(name)
        except QnasError as err:
            if explicit:
                raise
            rows.append({"device": name, "latency_ms": float("nan"), "source": "unavailable",
                         "version": "", "known_error_short": short_known_error(str(err)),
                         "known_error": str(err), "top_kernels": []})
            continue
        top_kernels = []
        if top and len(prediction.kernels):
            shown = prediction.top_kernels(top)
            top_kernels = [{"name": k.name, "op": k.op, "flops": int(k.flops), "bytes": int(k.bytes),
                        "ms": float(k.ms), "share": float(k.ms / prediction.latency_ms)}
                       for k in shown.itertuples()]
        rows.append({"device": name, "latency_ms": round(float(prediction.latency_ms), 4),
                     "source": prediction.source, "version": prediction.version,
                     "known_error_short": known_error_short(predictors[name]),
                     "known_error": prediction.known_error, "top_kernels": top_kernels})
    return {"model": spec, "input_shape": list(shape), "predictions": rows}


def _prediction_frame(report: dict, full: bool):
    import pandas as pd

    frame = pd.DataFrame(report["predictions"],
                         columns=["device", "latency_ms", "source", "version",
                                  "known_error_short", "known_error", "top_kernels"])
    frame = frame.drop(columns="top_kernels")
    if full:
        frame.insert(0, "model", report["model"])
        frame.insert(1, "input_shape", "x".join(map(str, report["input_shape"])))
        return frame
    return frame.drop(columns="known_error").rename(columns={"known_error_short": "known error"})


def _print_predictions(report: dict, top: int) -> None:
    import pandas as pd

    click.echo(f"{report['model']} at {'x'.join(map(str, report['input_shape']))}")
    frame = _prediction_frame(report, full=False)
    frame["latency_ms"] = frame["latency_ms"].map(lambda v: "-" if pd.isna(v) else f"{v:.4g}")
    click.echo(table_text(frame, right=("latency_ms",)))
    click.echo("full known errors: 'qnas devices --verbose' (or --format json here)")
    for row in report["predictions"]:
        if top and row["top_kernels"]:
            click.echo(f"\ntop {top} kernels on {row['device']} ({row['source']}):")
            shown = pd.DataFrame(row["top_kernels"])
            shown["ms"] = shown["ms"].round(4)
            shown["share"] = shown["share"].map("{:.1%}".format)
            click.echo(frame_text(shown))


def _measure(spec: str, shape: tuple, repeats: int | None, threads: int | None):
    from ..deploy.measure import DEFAULT_REPEATS, measure_best

    return measure_best(spec, shape, repeats=repeats or DEFAULT_REPEATS, threads=threads)


def _print_measurement(spec: str, result) -> None:
    import math

    import pandas as pd

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
    if not math.isnan(error):
        click.echo(f"host-cpu table sum vs measured PyTorch: {error:+.1%} relative error")
    for note in result.notes:
        click.echo(f"note: {note}")
