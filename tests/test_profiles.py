"""Device profiles: the real calibration meets its accuracy bounds and reproduces the shipped YAML;
the registry picks backends and refuses unknown devices clearly."""
import math

import pytest
import yaml
from click.testing import CliRunner
from torch import nn

import qnas.cli.latency  # adds "qnas latency" to the cli group
import qnas.cli.predictor  # noqa: F401  (adds the predictor commands to the cli group)
from qnas.cli import cli
from qnas.deploy.child import model_from_spec
from qnas.errors import QnasError
from qnas.predictors import describe_devices, get, list_devices
from qnas.predictors.calibrate import calibrate, fitted_devices, nnmeter_view, reference_kernels
from qnas.predictors.profile import ProfilePredictor, load_profile, profile_path

# median |rel. error| vs nn-Meter's reference on models OUTSIDE the fit (issue 12's goals:
# ≤ 10% for the CPU and the Adreno GPUs, ≤ 15% for the Myriad VPU), leave-one-model-out and
# leave-one-family-out alike
LOMO_BOUNDS = {"cortexA76": 0.10, "adreno640": 0.10, "adreno630": 0.10, "myriadvpu": 0.15}


@pytest.fixture(autouse=True)
def no_nnmeter_files(tmp_path, monkeypatch):
    # nn-Meter looks for its predictor files under $HOME: none here, so profiles answer
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture(scope="module")
def calibrations():
    return {device: calibrate(device) for device in LOMO_BOUNDS}


def test_fitted_devices_are_the_reference_devices():
    assert set(fitted_devices()) == set(LOMO_BOUNDS)


@pytest.mark.parametrize("device", sorted(LOMO_BOUNDS))
def test_lomo_error_within_bounds(calibrations, device):
    result = calibrations[device]
    assert list(result.lomo.columns) == ["model", "reference_ms", "predicted_ms", "rel_error"]
    assert len(result.lomo) == 11
    assert result.median_abs_rel_error == pytest.approx(result.lomo["rel_error"].abs().median())
    assert result.median_abs_rel_error <= LOMO_BOUNDS[device]
    lofo = result.validation["leave-one-family-out"]
    assert len(lofo) == 11 and lofo["family"].nunique() == 7
    assert lofo["rel_error"].abs().median() <= LOMO_BOUNDS[device]
    outside = result.profile["outside_fit"]
    assert outside == {"median_pct": pytest.approx(100 * lofo["rel_error"].abs().median(), abs=0.05),
                       "max_pct": pytest.approx(100 * lofo["rel_error"].abs().max(), abs=0.05),
                       "method": "leave-one-family-out", "models": 11}
    # the 2-fold split fits on 5-6 models: looser, but it must still generalise
    split = result.validation["family-stratified 2-fold"]
    assert split["rel_error"].abs().median() <= 1.5 * LOMO_BOUNDS[device]


@pytest.mark.parametrize("device", sorted(LOMO_BOUNDS))
def test_shipped_profile_is_what_calibration_produces(calibrations, device):
    shipped, produced = load_profile(profile_path(device)), calibrations[device].profile
    for name, constants in produced["classes"].items():
        for key, value in constants.items():
            assert shipped["classes"][name][key] == pytest.approx(value, rel=1e-3), (name, key)
    assert shipped["lomo"]["median_abs_rel_error"] == pytest.approx(
        produced["lomo"]["median_abs_rel_error"], abs=1e-3)
    assert shipped["op_classes"] == produced["op_classes"]
    assert shipped["fusion"] == produced["fusion"] and shipped["outside_fit"] == produced["outside_fit"]
    assert shipped["version"] == produced["version"]
    assert "nn-Meter" in shipped["source"] and "leave-one-model-out" in shipped["known_error"]
    assert "leave-one-family-out" in shipped["known_error"]


def test_predictor_reproduces_the_fit_in_sample(calibrations):
    # the shipped profile through the public predictor = the fit's own formula on the reference
    result = calibrations["cortexA76"]
    predictor = ProfilePredictor("cortexA76", profile=result.profile)
    for row in result.lomo.itertuples():
        constructor = {"shufflenet_v2": "shufflenet_v2_x1_0", "squeezenet": "squeezenet1_0",
                       "mnasnet": "mnasnet1_0"}.get(row.model, row.model)
        kernels = reference_kernels(f"torchvision.models.{constructor}", "1x3x224x224")
        in_sample = predictor.predict_kernels(nnmeter_view(kernels)).latency_ms
        # in-sample error is no worse than 1.5× the worst LOMO error (a fit that broke shows here)
        assert abs(in_sample / row.reference_ms - 1) <= 1.5 * result.lomo["rel_error"].abs().max()
        if row.model == "inception_v3":
            # predictions use the true kernels: its 1×7/7×1 convs cost less than nn-Meter says
            assert predictor.predict_kernels(kernels).latency_ms < 0.8 * in_sample


def test_calibrate_command_writes_a_loadable_profile(tmp_path):
    out = tmp_path / "cortexA76.yaml"
    result = CliRunner().invoke(cli, ["predictor", "calibrate", "cortexA76", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "median |rel. error|" in result.output and "inception_v3" in result.output
    written = yaml.safe_load(out.read_text())
    assert written["classes"] == load_profile(profile_path("cortexA76"))["classes"]
    assert ProfilePredictor("cortexA76", path=out).version == written["version"]


def test_calibrate_refuses_a_device_with_nothing_to_fit():
    with pytest.raises(QnasError, match="no reference latencies"):
        calibrate("host-cpu")


def test_a100_is_derived_from_h100_and_honest_about_it():
    predictor = get("a100")
    assert predictor.source == "profile"
    assert "unvalidated" in predictor.known_error and "derived from the h100" in predictor.basis
    assert predictor.outside_fit["median_pct"] is None      # never measured on an A100
    prediction = predictor.predict(nn.Conv2d(64, 64, 3, padding=1), "1x64x56x56")
    assert 0 < prediction.latency_ms < 1 and prediction.known_error == predictor.known_error
    # regenerated by code: the shipped file is what the derivation produces
    derived = calibrate("a100").profile
    assert derived["classes"] == load_profile(profile_path("a100"))["classes"]


def test_registry_lists_devices_and_uses_profiles_without_nnmeter_files():
    devices = list_devices()
    assert devices[:5] == ["cortexA76", "myriadvpu", "a100", "adreno640", "adreno630"]
    assert "host-cpu" in devices
    predictor = get("cortexa76")            # names match case-insensitively
    assert isinstance(predictor, ProfilePredictor) and predictor.device == "cortexA76"
    frame = describe_devices()
    assert {"device", "kind", "backend", "source", "version", "known_error", "note"} \
        <= set(frame.columns)
    row = frame.set_index("device").loc["cortexA76"]
    assert row.backend == "profile" and "install-nnmeter" in row.note
    assert "cortexA76cpu_tflite21" in row.note
    # every shipped profile states its error outside the fit, GPUs the file they were fitted to
    for device in ("cortexA76", "myriadvpu", "adreno640", "adreno630", "h100"):
        outside = get(device).outside_fit
        assert outside["method"] in ("leave-one-family-out", "leave-one-measurement-out")
        assert 0 < outside["median_pct"] <= outside["max_pct"] and outside["models"] >= 6
    assert get("h100").measurements == "h100_eager_measurements.csv"


def test_unknown_device_lists_known_ones():
    with pytest.raises(QnasError, match="unknown device 'pixel9'; known devices: cortexA76"):
        get("pixel9")
    with pytest.raises(QnasError, match="not installed"):
        get("cortexA76", backend="nn-meter")


def test_prediction_carries_source_and_kernel_table():
    prediction = get("myriadvpu").predict(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()),
                                          (1, 3, 32, 32))
    assert prediction.source == "profile" and prediction.version.startswith("fit2-")
    assert list(prediction.kernels.columns) == ["name", "op", "flops", "bytes", "ms"]
    assert math.isclose(prediction.kernels["ms"].sum(), prediction.latency_ms)
    assert "known error" in prediction.describe()


def test_latency_command_and_its_errors():
    runner = CliRunner()
    ok = runner.invoke(cli, ["latency", "--device", "cortexA76,a100", "--model", "resnet18",
                             "--top", "3"])
    assert ok.exit_code == 0, ok.output
    assert "cortexA76" in ok.output
    assert "LOFO" in ok.output or "leave-one-family-out" in ok.output
    assert "top 3 kernels on a100" in ok.output
    bad_device = runner.invoke(cli, ["latency", "--device", "nope", "--model", "resnet18"])
    assert isinstance(bad_device.exception, QnasError)
    assert "known devices: cortexA76" in str(bad_device.exception)
    bad_shape = runner.invoke(cli, ["latency", "resnet18", "--device", "a100", "--input-shape", "1x3x?"])
    assert isinstance(bad_shape.exception, QnasError) and "1x3x224x224" in str(bad_shape.exception)


def test_model_spec_errors_are_one_line():
    with pytest.raises(QnasError, match="does not exist"):
        model_from_spec("runs/x/best.json")
    with pytest.raises(QnasError, match="unknown model 'resnet1800'"):
        model_from_spec("resnet1800")
