"""A user's own device: fitted to their measurements of the calibration set, registered in
$QNAS_HOME (never in the package), usable wherever a device name is, refittable after an
upgrade, and unable to shadow a shipped device."""
import hashlib
import json

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from test_calibration_set import TINY_SPACE, tiny_set_text

import qnas.cli.latency  # adds "qnas devices"/"qnas latency" to the cli group
import qnas.cli.predictor  # noqa: F401  (adds the predictor commands to the cli group)
from qnas.cli import cli
from qnas.errors import QnasError
from qnas.predictors import device_info, get, list_devices
from qnas.predictors.calibration_set import load_calibration_set, write_calibration_set
from qnas.predictors.devices import qnas_home, shadowed_user_devices, user_devices
from qnas.predictors.lut import build_lut
from qnas.predictors.registry import describe_devices
from qnas.predictors.user_devices import (
    calibrate_user_device,
    check_device_name,
    remove_user_device,
)
from qnas.resources import data_dir
from qnas.space import load_space

SLOWDOWN = 2.0          # the synthetic device is cortexA76 at half the speed


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A temporary QNAS_HOME (and HOME: no nn-Meter files, no real ~/.config)."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("QNAS_HOME", str(tmp_path / "qnas_home"))
    return tmp_path / "qnas_home"


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The tiny calibration set written as the CLI does, its CSV filled with the latencies of a
    device twice as slow as cortexA76's profile says (a known answer the fit must recover)."""
    root = tmp_path_factory.mktemp("user_device")
    (root / "tinyq.yaml").write_text(TINY_SPACE)
    (root / "tiny_set.yaml").write_text(tiny_set_text(root / "tinyq.yaml"))
    write_calibration_set(root / "set", root / "tiny_set.yaml", tflite=False)
    cset = load_calibration_set(root / "set" / "calibration_set.yaml")
    reference = get("cortexA76", backend="profile")
    frame = pd.read_csv(root / "set" / "measurements.csv", dtype=str, keep_default_na=False)
    frame["latency_ms"] = [f"{SLOWDOWN * reference.predict_kernels(cset.kernels(m)).latency_ms:.6g}"
                           for m in frame["model"]]
    frame.to_csv(root / "set" / "measurements.csv", index=False)
    return root


def _package_state() -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data_dir("predictors").rglob("*")) if p.is_file()}


def _held_out_child(root):
    return load_space(root / "tinyq.yaml").build_child(
        ["k5e4", "k3e2", "k7e2", "identity", "k3e4", "k5e2", "identity", "k7e4", "k3e2"])


def test_calibrate_registers_a_user_device_outside_the_package(measured, home):
    before = _package_state()
    result = CliRunner().invoke(cli, ["predictor", "calibrate", "pixel-x", "--measurements",
                                      str(measured / "set" / "measurements.csv"),
                                      "--description", "a phone, TFLite, 1 thread"])
    assert result.exit_code == 0, result.output
    assert "leave-one-model-out" in result.output and "measured_ms" in result.output
    assert "registered user device pixel-x" in result.output
    assert _package_state() == before                       # nothing written into the package
    assert qnas_home() == home
    registry = yaml.safe_load((home / "devices.yaml").read_text())
    (entry,) = registry["devices"]
    assert entry["name"] == "pixel-x" and entry["like"] == "cortexA76"
    assert (home / entry["profile"]).is_file() and (home / entry["measurements"]).is_file()
    assert (home / entry["calibration_set"]).read_text() == \
        (measured / "tiny_set.yaml").read_text()
    profile = yaml.safe_load((home / "profiles" / "pixel-x.yaml").read_text())
    assert profile["device"] == "pixel-x" and "measurements" not in profile
    assert profile["description"] == "a phone, TFLite, 1 thread"


def test_a_user_device_works_wherever_a_device_name_does(measured, home):
    calibrate_user_device("pixel-x", measured / "set" / "measurements.csv")
    assert list_devices()[-1] == "pixel-x" and device_info("PIXEL-X").origin == "user"
    predictor = get("pixel-x")
    assert predictor.source == "profile" and "measurements" in predictor.known_error
    # a child the fit never saw: the fitted device is about twice as slow as cortexA76
    child = _held_out_child(measured)
    mine = predictor.predict(child, (1, 3, 32, 32)).latency_ms
    reference = get("cortexA76").predict(child, (1, 3, 32, 32)).latency_ms
    assert mine / reference == pytest.approx(SLOWDOWN, rel=0.15)
    table = build_lut(load_space(measured / "tinyq.yaml"), "pixel-x", use_cache=False)
    assert table.device == "pixel-x" and table.max_ms() > table.min_ms() > 0
    runner = CliRunner()
    latency = runner.invoke(cli, ["latency", "quadranet_xxs", "--device", "pixel-x",
                                  "--input-shape", "1x3x32x32", "--format", "json"])
    assert latency.exit_code == 0, latency.output
    (row,) = json.loads(latency.stdout)["predictions"]
    assert row["device"] == "pixel-x" and row["latency_ms"] > 0
    frame = describe_devices().set_index("device")
    assert frame.loc["pixel-x", "origin"] == "user" and frame.loc["cortexA76", "origin"] == \
        "shipped"
    assert frame.loc["pixel-x", "fitted_to"] == str(home / "measurements" / "pixel-x.csv")
    devices = runner.invoke(cli, ["devices"])
    assert "pixel-x" in devices.output and "user" in devices.output


def test_a_user_device_is_refitted_from_its_stored_measurements(measured, home, tmp_path):
    # the CSV lives elsewhere and goes away; the device keeps a copy (an upgrade refits from it)
    csv = tmp_path / "elsewhere" / "measurements.csv"
    csv.parent.mkdir()
    csv.write_text((measured / "set" / "measurements.csv").read_text())
    (csv.parent / "calibration_set.yaml").write_text((measured / "tiny_set.yaml").read_text())
    first = calibrate_user_device("pixel-x", csv, description="phone")
    csv.unlink()
    result = CliRunner().invoke(cli, ["predictor", "calibrate", "pixel-x"])
    assert result.exit_code == 0, result.output
    assert "replaced user device pixel-x" in result.output
    again = get("pixel-x")
    assert again.version == first.result.profile["version"]            # the same fit
    assert again.description == "phone" and device_info("pixel-x").like == "cortexA76"


def test_user_devices_may_not_shadow_shipped_ones(measured):
    csv = str(measured / "set" / "measurements.csv")
    for name, message in [("cortexA76", "is the shipped device cortexA76"),
                          ("CORTEXA76CPU_TFLITE21", "nn-Meter's name for the shipped device"),
                          ("all", "is reserved"), ("my phone", "must start with a letter"),
                          ("a,b", "must start with a letter")]:
        result = CliRunner().invoke(cli, ["predictor", "calibrate", name, "--measurements", csv])
        assert result.exit_code != 0 and isinstance(result.exception, QnasError), name
        assert message in str(result.exception) and "\n" not in str(result.exception)
    assert check_device_name("pixel-x") == "pixel-x"
    assert user_devices() == []


def test_a_user_device_shadowed_by_a_newer_shipped_one_is_left_out(home):
    # e.g. the user called a device 'h100' before qnas shipped one
    home.mkdir(parents=True)
    (home / "devices.yaml").write_text(
        "devices:\n  - {name: h100, kind: profile, profile: profiles/h100.yaml}\n")
    assert [d.name for d in shadowed_user_devices()] == ["h100"]
    assert device_info("h100").origin == "shipped"
    rows = describe_devices()
    shadowed = rows[(rows["device"] == "h100") & (rows["origin"] == "user")].iloc[0]
    assert shadowed.backend == "unavailable" and "rename the user device" in shadowed.note


def test_a_corrupt_registry_is_one_line(home):
    home.mkdir(parents=True)
    (home / "devices.yaml").write_text("devices: [\n")
    with pytest.raises(QnasError, match="not valid YAML") as error:
        list_devices()
    assert "\n" not in str(error.value)
    (home / "devices.yaml").write_text("devices:\n  - {name: x, kind: measured}\n")
    with pytest.raises(QnasError, match="kind \\(profile\\)"):
        list_devices()


def test_remove_device(measured, home):
    calibrate_user_device("pixel-x", measured / "set" / "measurements.csv")
    result = CliRunner().invoke(cli, ["predictor", "remove-device", "pixel-x"])
    assert result.exit_code == 0, result.output
    assert user_devices() == [] and not (home / "profiles" / "pixel-x.yaml").exists()
    with pytest.raises(QnasError, match="not a user device"):
        remove_user_device("cortexA76")


def test_refitting_a_shipped_device_writes_nothing_without_out(tmp_path):
    before = _package_state()
    result = CliRunner().invoke(cli, ["predictor", "calibrate", "cortexA76"])
    assert result.exit_code == 0, result.output
    assert "nothing written" in result.output and _package_state() == before
    out = tmp_path / "a76.yaml"
    written = CliRunner().invoke(cli, ["predictor", "calibrate", "cortexA76", "--out", str(out)])
    assert written.exit_code == 0 and yaml.safe_load(out.read_text())["device"] == "cortexA76"
    assert _package_state() == before


def test_unknown_names_without_measurements_say_how_to_add_a_device():
    result = CliRunner().invoke(cli, ["predictor", "calibrate", "pixel9"])
    assert isinstance(result.exception, QnasError)
    assert "--measurements FILE.csv" in str(result.exception)
    with pytest.raises(QnasError, match="unknown device 'pixel9'.*qnas predictor calibrate NAME"):
        device_info("pixel9")


def test_like_must_be_a_profile_device(measured):
    with pytest.raises(QnasError, match="--like host-cpu has no profile"):
        calibrate_user_device("pixel-x", measured / "set" / "measurements.csv", like="host-cpu")
