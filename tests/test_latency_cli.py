"""Machine-readable and compact predictor output (``--format table|json|csv`` on ``qnas
devices``, ``qnas latency``, ``qnas predictor lut``), ONNX graphs as input, and nn-Meter's
predictor names as device names."""
import io
import json
import warnings
from collections import Counter

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from test_calibration_set import TINY_SPACE
from torch import nn

import qnas.cli.latency  # adds "qnas devices"/"qnas latency" to the cli group
import qnas.cli.predictor  # noqa: F401  (adds the predictor commands to the cli group)
from qnas.cli import cli
from qnas.errors import QnasError
from qnas.models.by_name import model_from_name
from qnas.predictors import decompose, device_info, get, list_devices
from qnas.predictors.devices import nnmeter_aliases
from qnas.predictors.onnx_graph import load_onnx_graph, onnx_kernels, predict_onnx
from qnas.predictors.registry import DEVICE_COLUMNS, describe_devices, short_known_error
from qnas.resources import data_dir
from qnas.space import load_space


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    # no nn-Meter files and no user devices of the machine's user
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("QNAS_HOME", str(tmp_path / "qnas_home"))


def run(*args):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _export(module, path, shape, dynamic=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(*shape),), str(path), dynamo=False,
                          opset_version=20, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}} if dynamic else None)
    return path


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    """A small QuadraNet child (every QuadraBlock op) and its ONNX export."""
    root = tmp_path_factory.mktemp("onnx")
    (root / "tinyq.yaml").write_text(TINY_SPACE)
    module = load_space(root / "tinyq.yaml").build_child(
        ["k3e2", "k7e4", "k5e2", "identity", "k3e4", "k5e4", "k7e2", "k3e2", "identity"]).eval()
    return module, _export(module, root / "child.onnx", (1, 3, 32, 32))


# --- qnas devices -------------------------------------------------------------------------------
def test_devices_json_and_csv_hold_every_column_and_the_full_known_error():
    rows = json.loads(run("devices", "--format", "json"))
    assert [r["device"] for r in rows] == list_devices()
    assert all(list(r) == DEVICE_COLUMNS for r in rows)
    by_name = {r["device"]: r for r in rows}
    full = get("cortexA76").known_error
    assert by_name["cortexA76"]["known_error"] == full
    assert by_name["cortexA76"]["nnmeter_predictor"] == "cortexA76cpu_tflite21"
    assert by_name["cortexA76"]["nnmeter_files"] == "not installed"
    assert by_name["cortexA76"]["origin"] == "shipped"
    frame = pd.read_csv(io.StringIO(run("devices", "--format", "csv")), keep_default_na=False)
    assert list(frame.columns) == DEVICE_COLUMNS and list(frame["device"]) == list_devices()
    assert frame.set_index("device").loc["cortexA76", "known_error"] == full


def test_devices_table_is_compact_and_verbose_has_the_full_text():
    full = get("a100").known_error
    table = run("devices")
    assert full not in table and len(table.splitlines()) <= len(list_devices()) + 5
    assert short_known_error(full, get("a100").profile.get("outside_fit")) in table
    # whether nn-Meter's predictor files are installed, and how to add them
    assert "nn-Meter predictor files: none installed" in table
    assert "qnas predictor install-nnmeter PATH" in table and "cortexA76cpu_tflite21" in table
    assert "qnas predictor calibrate NAME --measurements" in table
    verbose = run("devices", "--verbose")
    assert full in verbose and verbose.count(full) == 1


def test_short_known_error():
    text = ("|rel. error| vs nn-Meter cortexA76cpu_tflite21 outside the fit (11 timings): "
            "leave-one-model-out median 3.1%, max 8% (alexnet); nn-Meter itself: see notes")
    outside = {"median_pct": 3.1, "max_pct": 8.3, "method": "leave-one-family-out"}
    assert short_known_error(text, outside) == "LOFO vs nn-Meter: median 3.1%, max 8%"
    assert short_known_error("UNDER-predicts: the blocks are off by a median |rel. error| of "
                             "84% at batch 1. More text.") == "UNDER-predicts: median 84%"
    assert short_known_error("measured on this host (median of 15 rounds); spread") == \
        "measured on this host"
    assert len(short_known_error("x" * 500)) <= 44 and short_known_error("") == ""


# --- qnas latency -------------------------------------------------------------------------------
def test_latency_on_every_device_is_compact():
    output = run("latency", "--device", "all", "--model", "quadranet_t")
    lines = output.splitlines()
    assert len(lines) <= len(list_devices()) + 4, output          # was 108 lines
    for device in list_devices():
        assert sum(line.startswith(device + " ") for line in lines) == 1
    assert get("cortexA76").known_error not in output
    assert "top 10 kernels" not in output
    one = run("latency", "resnet18", "--device", "cortexA76")
    assert "top 10 kernels on cortexA76" in one                    # one device: its kernels


def test_latency_json_and_csv():
    data = json.loads(run("latency", "resnet18", "--device", "cortexA76,a100", "--format",
                          "json", "--top", "2"))
    assert data["model"] == "resnet18" and data["input_shape"] == [1, 3, 224, 224]
    rows = {r["device"]: r for r in data["predictions"]}
    assert set(rows) == {"cortexA76", "a100"}
    assert rows["cortexA76"]["known_error"] == get("cortexA76").known_error
    resnet = model_from_name("resnet18", meta=True)
    assert rows["cortexA76"]["latency_ms"] == pytest.approx(
        get("cortexA76").predict(resnet, (1, 3, 224, 224)).latency_ms, rel=1e-3)
    assert len(rows["a100"]["top_kernels"]) == 2 and rows["a100"]["top_kernels"][0]["ms"] > 0
    frame = pd.read_csv(io.StringIO(run("latency", "resnet18", "--device", "cortexA76,a100",
                                        "--format", "csv")))
    assert list(frame["device"]) == ["cortexA76", "a100"]
    assert {"latency_ms", "source", "version", "known_error_short", "known_error"} <= \
        set(frame.columns)
    assert (frame["latency_ms"] > 0).all()


def test_nnmeter_predictor_names_are_device_names():
    assert nnmeter_aliases()["cortexA76cpu_tflite21"] == "cortexA76"
    for alias, device in [("cortexA76cpu_tflite21", "cortexA76"),
                          ("ADRENO640GPU_TFLITE21", "adreno640"),
                          ("adreno630gpu_tflite21", "adreno630"),
                          ("myriadvpu_openvino2019r2", "myriadvpu")]:
        assert device_info(alias).name == device
        assert get(alias).device == device
    data = json.loads(run("latency", "resnet18", "--device", "cortexA76cpu_tflite21",
                          "--format", "json"))
    assert data["predictions"][0]["device"] == "cortexA76"


# --- ONNX graphs --------------------------------------------------------------------------------
def test_onnx_kernels_match_the_modules_decomposition(child):
    module, path = child
    from_onnx = onnx_kernels(path)
    from_torch = decompose(module, (1, 3, 32, 32))
    convs = ("conv", "pwconv", "dwconv", "linear", "layernorm", "gelu")
    assert {op: n for op, n in Counter(k.op for k in from_onnx).items() if op in convs} == \
        {op: n for op, n in Counter(k.op for k in from_torch).items() if op in convs}
    flops = lambda ks, op: sum(k.flops for k in ks if k.op == op)
    for op in ("conv", "pwconv", "dwconv", "linear"):
        assert flops(from_onnx, op) == pytest.approx(flops(from_torch, op), rel=1e-6), op
    dwconv = next(k for k in from_onnx if k.op == "dwconv")
    assert dwconv.params["channel_multiplier"] == 3 and dwconv.name.endswith("spatial")
    # the exporter folds the layer scale after PW2 into its weights: a few fewer (tiny) kernels
    for device in ("cortexA76", "myriadvpu", "h100"):
        on_graph = predict_onnx(device, path).latency_ms
        on_module = get(device).predict(module, (1, 3, 32, 32)).latency_ms
        assert 0.9 * on_module <= on_graph <= on_module, device


def test_onnx_of_a_bn_network_matches_too(tmp_path):
    import torchvision

    module = torchvision.models.mobilenet_v3_small(num_classes=10)
    path = _export(module, tmp_path / "mv3.onnx", (1, 3, 64, 64))
    ops = Counter(k.op for k in onnx_kernels(path))
    assert ops["dwconv"] and ops["hswish"] and ops["linear"] and not ops["batchnorm"]
    # BatchNorm is folded by the exporter and by the profiles' fusion rules alike
    assert predict_onnx("cortexA76", path).latency_ms == pytest.approx(
        get("cortexA76").predict(module, (1, 3, 64, 64)).latency_ms, rel=0.05)


def test_latency_command_takes_an_onnx_file(child, tmp_path):
    module, path = child
    data = json.loads(run("latency", str(path), "--device", "cortexA76cpu_tflite21,a100",
                          "--format", "json"))
    assert data["input_shape"] == [1, 3, 32, 32]                 # the graph's own shape
    assert data["predictions"][0]["latency_ms"] == pytest.approx(
        predict_onnx("cortexA76", path).latency_ms, rel=1e-3)
    everywhere = json.loads(run("latency", str(path), "--format", "json"))
    host = {r["device"]: r for r in everywhere["predictions"]}["host-cpu"]
    assert host["source"] == "unavailable" and "profile device" in host["known_error"]
    explicit = CliRunner().invoke(cli, ["latency", str(path), "--device", "host-cpu"])
    assert isinstance(explicit.exception, QnasError)
    # dynamic dims: the default 224×224 unless --input says otherwise
    dynamic = _export(module, tmp_path / "dynamic.onnx", (1, 3, 32, 32), dynamic=True)
    assert load_onnx_graph(dynamic).input_shape == (1, 3, 224, 224)
    small = json.loads(run("latency", str(dynamic), "--device", "cortexA76", "--input-shape",
                           "2x3x32x32", "--format", "json"))
    assert small["input_shape"] == [2, 3, 32, 32]
    fixed = CliRunner().invoke(cli, ["latency", str(path), "--device", "cortexA76", "--input-shape",
                                     "1x3x64x64"])
    assert "fixed at 1x3x32x32" in str(fixed.exception)


def test_onnx_errors_are_one_line(tmp_path):
    with pytest.raises(QnasError, match="does not exist"):
        onnx_kernels(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(QnasError, match="not a readable ONNX model") as error:
        onnx_kernels(tmp_path / "junk.onnx")
    assert "\n" not in str(error.value)
    class Two(nn.Module):
        def forward(self, a, b):
            return a * b

    two = Two()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(two, (torch.zeros(1, 4), torch.zeros(1, 4)), str(tmp_path / "two.onnx"),
                          dynamo=False, opset_version=20)
    with pytest.raises(QnasError, match="has 2 inputs"):
        onnx_kernels(tmp_path / "two.onnx")


# --- qnas predictor lut -------------------------------------------------------------------------
def test_lut_json_and_csv(tmp_path, monkeypatch):
    monkeypatch.setenv("QNAS_CACHE_DIR", str(tmp_path / "cache"))
    space = tmp_path / "tinyq.yaml"
    space.write_text(TINY_SPACE)
    data = json.loads(run("predictor", "lut", "--space", str(space), "--device", "cortexA76",
                          "--format", "json"))
    assert data["device"] == "cortexA76" and len(data["ms"]) == 9
    assert data["known_error"] == get("cortexA76").known_error and data["known_error_short"]
    frame = pd.read_csv(io.StringIO(run("predictor", "lut", "--space", str(space), "--device",
                                        "cortexA76", "--format", "csv")))
    assert list(frame.columns) == ["layer", *data["candidates"]] and len(frame) == 9
    table = run("predictor", "lut", "--space", str(space), "--device", "cortexA76")
    assert "loaded from cache" in table and get("cortexA76").known_error not in table


def test_devices_name_the_data_they_were_fitted_to():
    frame = describe_devices().set_index("device")
    assert frame.loc["cortexA76", "fitted_to"] == "reference/nnmeter_reference_latency.csv"
    assert frame.loc["host-cpu", "fitted_to"] == ""
    for device, fitted in frame["fitted_to"].items():
        path = fitted.split("(")[-1].rstrip(")") if fitted.startswith("derived") else fitted
        if path:
            assert (data_dir("predictors") / path).is_file(), device
