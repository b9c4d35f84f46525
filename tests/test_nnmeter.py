"""qnas's nn-Meter backend, driven through the REAL nn-meter 2.0 package, offline.

Everything that imports nn_meter runs in a subprocess whose HOME is a temporary folder:
``import nn_meter`` fixes ``~/.nn_meter`` at import time and writes there. The subprocess is
this very file run as a script (``python tests/test_nnmeter.py SCENARIO OUT``); it writes what
it saw to OUT/result.json and the tests below check it.

The predictors used here are built on the fly in nn-Meter's own format (random forests per
kernel + fusion_rules.json), some pickled in scikit-learn 0.23's tree layout, registered with
the real ``nn-meter register`` or installed as nn-Meter's published cortexA76 predictor.
"""
from __future__ import annotations

import copyreg
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve()

# the feature lengths nn-Meter's prediction code computes per kernel predictor
FEATURE_LENGTHS = {
    "conv-bn-relu": 7, "dwconv-bn-relu": 7, "fc": 4, "global-avgpool": 2, "hswish": 2,
    "relu": 2, "se": 2, "split": 2, "add": 3, "addrelu": 3, "maxpool": 5, "avgpool": 5,
    "bn": 2, "bnrelu": 2, "channelshuffle": 2, "concat": 6,
}
TEST_PREDICTOR = "qnastest_cpu"
TEST_KERNELS = ("conv-bn-relu", "dwconv-bn-relu", "fc", "add", "relu", "bn", "global-avgpool")
LEGACY_KERNELS = ("conv-bn-relu", "add")         # pickled in the scikit-learn 0.23 layout
MODEL_SHAPE = (1, 3, 32, 32)


# --- scikit-learn 0.23.1 pickles ---------------------------------------------------------------
def _legacy_estimator_state(est) -> dict:
    """``est.__dict__`` as scikit-learn 0.23.1 had it (old names, no post-0.23 attributes)."""
    state = dict(est.__getstate__())
    renames = {"estimator": "base_estimator", "estimator_": "base_estimator_",
               "n_features_in_": "n_features_"}
    for new, old in renames.items():
        if new in state:
            state[old] = state.pop(new)
    state.pop("monotonic_cst", None)
    if state.get("criterion") == "squared_error":
        state["criterion"] = "mse"
    state["min_impurity_split"] = None
    if "tree_" in state:
        state["presort"] = "deprecated"
    if "estimator_params" in state:
        state["estimator_params"] = (
            "criterion", "max_depth", "min_samples_split", "min_samples_leaf",
            "min_weight_fraction_leaf", "max_features", "max_leaf_nodes",
            "min_impurity_decrease", "min_impurity_split", "random_state", "ccp_alpha")
    state["_sklearn_version"] = "0.23.1"
    return state


class _LegacyPickler(pickle.Pickler):
    """Writes fitted forests as scikit-learn 0.23.1 did: tree nodes WITHOUT missing_go_to_left."""

    def reducer_override(self, obj):
        from sklearn.base import BaseEstimator
        from sklearn.tree._tree import Tree

        if isinstance(obj, Tree):
            cls, args, state = obj.__reduce__()
            nodes = state["nodes"]
            fields = [n for n in nodes.dtype.names if n != "missing_go_to_left"]
            old = np.empty(nodes.shape, dtype=[(n, nodes.dtype.fields[n][0]) for n in fields])
            for name in fields:
                old[name] = nodes[name]
            return cls, args, dict(state, nodes=old)
        if isinstance(obj, BaseEstimator):
            return copyreg.__newobj__, (type(obj),), _legacy_estimator_state(obj)
        return NotImplemented


def legacy_pickle_bytes(estimator) -> bytes:
    buffer = io.BytesIO()
    _LegacyPickler(buffer, protocol=2).dump(estimator)
    # numpy 1.x (2020) pickled its reconstructors from numpy.core
    return buffer.getvalue().replace(b"cnumpy._core.", b"cnumpy.core.")


def _forest(n_features: int, seed: int):
    """A small fitted forest with a smooth positive response (milliseconds)."""
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(seed)
    x = rng.uniform(1, 64, size=(40, n_features))
    y = 0.01 + 0.002 * x.sum(axis=1)
    return RandomForestRegressor(n_estimators=4, random_state=seed).fit(x, y), x


def write_predictor_folder(folder: Path, kernels, legacy=()) -> None:
    """An nn-Meter predictor folder: one <kernel>.pkl per kernel + fusion_rules.json."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, kernel in enumerate(kernels):
        model, _ = _forest(FEATURE_LENGTHS[kernel], seed=i)
        data = legacy_pickle_bytes(model) if kernel in legacy else pickle.dumps(model)
        (folder / f"{kernel}.pkl").write_bytes(data)
    rules = {"BF_conv_relu": {"obey": True}, "BF_conv_bn": {"obey": True},
             "BF_bn_relu": {"obey": True}}
    (folder / "fusion_rules.json").write_text(json.dumps(rules))


# --- in-process test: no nn_meter import needed ------------------------------------------------
def test_compat_unpickler_loads_sklearn_023_pickle_with_identical_predictions():
    from sklearn.tree._tree import Tree

    from qnas.predictors import sklearn_compat

    model, x = _forest(7, seed=3)
    data = legacy_pickle_bytes(model)
    with pytest.raises(ValueError, match="incompatible dtype"):
        pickle.loads(data)                          # what scikit-learn >= 1.3 does by itself
    loaded = sklearn_compat.loads(data)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    probe = np.random.default_rng(9).uniform(-10, 100, size=(25, 7))
    np.testing.assert_array_equal(loaded.predict(probe), model.predict(probe))
    tree = loaded.estimators_[0].tree_
    assert type(tree) is Tree                      # no stand-in class is left behind
    nodes = tree.__getstate__()["nodes"]
    assert "missing_go_to_left" in nodes.dtype.names and not nodes["missing_go_to_left"].any()
    assert loaded.criterion == "squared_error" and loaded.n_features_in_ == 7
    assert not hasattr(loaded, "base_estimator_")
    # the upgraded forest is an ordinary current estimator again
    again = pickle.loads(pickle.dumps(loaded))
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    assert "RandomForestRegressor" in repr(loaded)


# --- subprocess scenarios ----------------------------------------------------------------------
def _run_scenario(name: str, tmp_path: Path) -> dict:
    home, out = tmp_path / "home", tmp_path / "out"
    home.mkdir()
    out.mkdir()
    env = dict(os.environ, HOME=str(home), PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, str(HERE), name, str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"scenario {name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    result = json.loads((out / "result.json").read_text())
    result["home"] = str(home)
    result["stdout"] = done.stdout
    return result


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    return _run_scenario("registered", tmp_path_factory.mktemp("registered"))


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return _run_scenario("published", tmp_path_factory.mktemp("published"))


def test_missing_files_say_how_to_install_and_what_is_used_instead(registered):
    before = registered["missing"]
    assert before["available"] is False
    assert before["error_type"] == "QnasError"
    message = before["message"]
    assert "qnas predictor install-nnmeter" in message
    assert "cortexA76cpu_tflite21" in message
    assert "calibrated profile" in message and "instead" in message
    assert "\n" not in message
    # checking for the files neither imported nn-Meter's downloader path nor wrote anything
    assert before["nn_meter_imported"] is False


def test_registered_predictor_is_found_by_qnas(registered):
    assert registered["available_after_register"] is True
    assert registered["registered_names"].count(TEST_PREDICTOR) == 1


def test_quadranet_prediction_is_nnmeter_plus_profile_costs_of_ignored_ops(registered):
    r = registered["quadranet"]
    # the nn-Meter half is exactly nn-Meter's own IR-level prediction
    assert r["nnmeter_ms"] == pytest.approx(r["nnmeter_own_ms"], rel=1e-12)
    assert r["nnmeter_ms"] > 0
    # the other half is the calibrated profile's cost of exactly the ignored kernels
    assert set(r["ignored_ops"]) >= {"layernorm", "gelu", "mul"}
    assert not set(r["ignored_ops"]) & {"conv", "pwconv", "dwconv", "add", "linear"}
    assert r["extra_ms"] == pytest.approx(r["expected_extra_ms"], rel=1e-12)
    assert r["extra_ms"] > 0
    assert r["latency_ms"] == pytest.approx(r["nnmeter_own_ms"] + r["expected_extra_ms"],
                                            rel=1e-12)
    # the breakdown keeps the two apart and adds up
    assert r["source"] == "nn-meter"
    assert TEST_PREDICTOR in r["version"] and "nn-Meter" in r["version"]
    assert "±10%" in r["known_error"]
    assert r["backends"]["nn-meter"] == pytest.approx(r["nnmeter_ms"], rel=1e-9)
    assert sum(v for k, v in r["backends"].items() if k != "nn-meter") == \
        pytest.approx(r["extra_ms"], rel=1e-9)
    assert r["frame_sum_ms"] == pytest.approx(r["latency_ms"], rel=1e-9)
    # nn-Meter's own loader read the 0.23-layout pickles through qnas's unpickler
    assert r["legacy_pickles_loaded"] is True


def test_nnmeter_half_matches_nnmeter_reading_an_onnx_file(registered):
    """For a model without 5-D tensors, nn-Meter's own ONNX-file path gives the same number."""
    r = registered["convnet"]
    assert r["nnmeter_ms"] == pytest.approx(r["nnmeter_onnx_file_ms"], rel=1e-12)
    assert r["nnmeter_ms"] > 0


def test_nothing_printed_by_nnmeter(registered):
    assert "(nn-Meter)" not in registered["stdout"]


def test_install_published_predictor_from_zip_and_from_folder(published):
    assert published["available_before"] is False
    assert published["zip"]["available"] is True
    assert set(published["zip"]["files"]) == {f"{k}.pkl" for k in FEATURE_LENGTHS} | \
        {"fusion_rules.json"}
    assert published["zip"]["latency_ms"] > 0 and published["zip"]["source"] == "nn-meter"
    assert "cortexA76cpu_tflite21" in published["zip"]["version"]
    assert published["folder"]["available"] is True
    assert published["folder"]["latency_ms"] == pytest.approx(published["zip"]["latency_ms"],
                                                              rel=1e-12)
    # the registry picks nn-Meter for cortexA76 once the files are there
    assert published["registry_source"] == "nn-meter"


def test_incomplete_published_files_never_trigger_a_download(published):
    broken = published["broken"]
    assert broken["available"] is False
    assert "lacks" in broken["message"] and "install-nnmeter" in broken["message"]
    assert broken["nn_meter_load_error"] == "QnasError"
    assert "never downloads" in broken["nn_meter_load_message"]


def test_install_refuses_a_folder_without_predictors(tmp_path):
    from qnas.errors import QnasError
    from qnas.predictors.nnmeter_files import install_nnmeter_predictors

    (tmp_path / "empty").mkdir()
    with pytest.raises(QnasError, match="no nn-Meter predictor found"):
        install_nnmeter_predictors(tmp_path / "empty")


# --- the scenarios (run in the subprocess) -----------------------------------------------------
def _scenario_registered(out: Path) -> dict:
    import torch

    from qnas.errors import QnasError
    from qnas.predictors import nnmeter_backend as nb
    from qnas.predictors import nnmeter_files as nf

    result: dict = {}
    # 1. no nn-Meter files at all: a one-line QnasError that says what to do
    try:
        nb.NNMeterPredictor("cortexA76")
        result["missing"] = {"error_type": None}
    except QnasError as err:
        result["missing"] = {"error_type": type(err).__name__, "message": str(err)}
    result["missing"]["available"] = nf.nnmeter_available("cortexA76")
    result["missing"]["nn_meter_imported"] = "nn_meter" in sys.modules

    # 2. a customised predictor in nn-Meter's format, registered with the real CLI
    folder = Path(os.environ["HOME"]) / "predictors" / TEST_PREDICTOR
    write_predictor_folder(folder, TEST_KERNELS, legacy=LEGACY_KERNELS)
    meta = {"name": TEST_PREDICTOR, "version": 1.0, "category": "cpu",
            "package_location": str(folder), "kernel_predictors": list(TEST_KERNELS)}
    import yaml

    (folder / "meta.yaml").write_text(yaml.safe_dump(meta))
    cli = Path(sys.executable).with_name("nn-meter")
    done = subprocess.run([str(cli), "register", "--predictor", str(folder / "meta.yaml")],
                          capture_output=True, text=True, check=True)
    assert "Successfully register predictor" in done.stdout, done.stdout + done.stderr
    result["available_after_register"] = nf.nnmeter_available(TEST_PREDICTOR)
    result["registered_names"] = [c["name"] for c in nf.predictor_configs()]

    # 3. a QuadraNet through qnas's nn-Meter backend vs nn-Meter's own prediction + profile
    from qnas.models import QuadraNet
    from qnas.predictors.kernels import decompose
    from qnas.predictors.profile import ProfilePredictor

    profile = ProfilePredictor("cortexA76")
    predictor = nb.NNMeterPredictor(TEST_PREDICTOR, profile=profile)
    model = QuadraNet(width=8, depths=(1, 1, 1, 1), num_classes=10).eval()
    prediction = predictor.predict(model, MODEL_SHAPE)
    parts = predictor.predict_parts(model, MODEL_SHAPE)

    import nn_meter

    own = nn_meter.load_latency_predictor(TEST_PREDICTOR)     # nn-Meter's own loader
    legacy_loaded = all(hasattr(own.kernel_predictors[k], "estimators_") for k in LEGACY_KERNELS)
    nnmeter_own = float(own.predict(nb.nnmeter_ir(model, MODEL_SHAPE), "nnmeter-ir"))
    ignored_ops = sorted({k.op for k in parts.ignored_kernels})
    expected_kernels = [k for k in decompose(model, MODEL_SHAPE) if k.op in ignored_ops]
    expected_extra = float(sum(profile.cost_kernels(expected_kernels)))
    frame = prediction.kernels
    result["quadranet"] = {
        "latency_ms": prediction.latency_ms, "source": prediction.source,
        "version": prediction.version, "known_error": prediction.known_error,
        "nnmeter_ms": parts.nnmeter_ms, "extra_ms": parts.extra_ms,
        "nnmeter_own_ms": nnmeter_own, "expected_extra_ms": expected_extra,
        "ignored_ops": ignored_ops,
        "backends": {str(k): float(v) for k, v in frame.groupby("backend")["ms"].sum().items()},
        "frame_sum_ms": float(frame["ms"].sum()),
        "legacy_pickles_loaded": legacy_loaded,
    }

    # 4. a net without 5-D tensors: nn-Meter reading the ONNX file itself gives the same
    convnet = QuadraNet(width=8, depths=(1, 1, 1, 1), num_classes=10, block="conv").eval()
    onnx_path = out / "convnet.onnx"
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(convnet, (torch.zeros(*MODEL_SHAPE),), buffer, dynamo=False,
                          opset_version=20)
    import onnx
    import onnxsim

    simplified, ok = onnxsim.simplify(onnx.load_from_string(buffer.getvalue()))
    assert ok
    onnx.save(simplified, str(onnx_path))
    result["convnet"] = {
        "nnmeter_ms": predictor.predict_parts(convnet, MODEL_SHAPE).nnmeter_ms,
        "nnmeter_onnx_file_ms": float(own.predict(str(onnx_path), "onnx")),
    }
    return result


def _scenario_published(out: Path) -> dict:
    import shutil

    from qnas.errors import QnasError
    from qnas.models import QuadraNet
    from qnas.predictors import nnmeter_backend as nb
    from qnas.predictors import nnmeter_files as nf
    from qnas.predictors.profile import ProfilePredictor
    from qnas.predictors.registry import get

    name = "cortexA76cpu_tflite21"
    result: dict = {"available_before": nf.nnmeter_available("cortexA76")}
    # a stand-in for nn-Meter's release zip: the folder <name>/ with every kernel predictor
    source = out / "release"
    write_predictor_folder(source / name, FEATURE_LENGTHS, legacy=("conv-bn-relu", "fc"))
    archive = out / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted((source / name).iterdir()):
            handle.write(path, f"{name}/{path.name}")
    model = QuadraNet(width=8, depths=(1, 1, 1, 1), num_classes=10).eval()
    profile = ProfilePredictor("cortexA76")

    def use() -> dict:
        nb._LOADED.clear()
        files = nf.nnmeter_files("cortexA76")
        prediction = nb.NNMeterPredictor("cortexA76", profile=profile).predict(model, MODEL_SHAPE)
        return {"available": files.available, "folder": str(files.folder),
                "files": sorted(p.name for p in files.folder.iterdir()),
                "latency_ms": prediction.latency_ms, "source": prediction.source,
                "version": prediction.version}

    (installed,) = nf.install_nnmeter_predictors(archive)
    assert installed == nf.builtin_predictor_folder(name)
    result["zip"] = use()
    result["registry_source"] = get("cortexA76").source
    shutil.rmtree(installed)
    nf.install_nnmeter_predictors(source)          # the unpacked folder holding <name>/
    result["folder"] = use()

    # one kernel predictor missing: qnas says so, and nn-Meter is not allowed to download
    (installed / "fc.pkl").unlink()
    files = nf.nnmeter_files("cortexA76")
    broken = {"available": files.available, "message": nf.missing_message("cortexA76", files)}
    nn_meter = nf.import_nn_meter()
    try:
        nn_meter.load_latency_predictor(name)
        broken["nn_meter_load_error"] = None
    except QnasError as err:
        broken["nn_meter_load_error"] = type(err).__name__
        broken["nn_meter_load_message"] = str(err)
    result["broken"] = broken
    return result


if __name__ == "__main__":
    scenario, out_dir = sys.argv[1], Path(sys.argv[2])
    outcome = {"registered": _scenario_registered, "published": _scenario_published}[scenario](
        out_dir)
    (out_dir / "result.json").write_text(json.dumps(outcome, indent=2))
