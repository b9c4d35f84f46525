"""Latency measured on this host, and the nn-Meter-format predictor built from such timings."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qnas.errors import QnasError
from qnas.nn import QuadraBlock
from qnas.predictors.measured import MeasuredPredictor

HERE = Path(__file__).resolve()
BLOCK_SHAPE = (1, 16, 8, 8)


@pytest.fixture(scope="module")
def host_cpu():
    return MeasuredPredictor("host-cpu", threads=1, warmup=2, repeats=5)


def test_measured_block_latency_is_a_positive_measurement(host_cpu):
    block = QuadraBlock(16, kernel_size=3, expansion=2)
    block.train()
    threads_before = torch.get_num_threads()
    prediction = host_cpu.predict(block, BLOCK_SHAPE)
    assert prediction.latency_ms > 0
    assert prediction.source == "measured" and prediction.device == "host-cpu"
    assert torch.__version__ in prediction.version and "1 thread" in prediction.version
    assert "IQR" in prediction.known_error
    # timing leaves the module's mode and torch's thread count as they were
    assert block.training and torch.get_num_threads() == threads_before
    # the breakdown shares the measured total out over qnas's kernels and says so
    frame = prediction.kernels
    assert list(frame.columns) == ["name", "op", "flops", "bytes", "ms", "ms_basis"]
    assert {"dwconv", "pwconv", "layernorm", "gelu"} <= set(frame["op"])
    assert frame["ms"].sum() == pytest.approx(prediction.latency_ms, rel=1e-9)
    assert frame["ms_basis"].str.contains("not timed per kernel").all()


def test_measurements_are_cached_and_stable_in_type_and_shape(host_cpu):
    first = host_cpu.predict(QuadraBlock(16, kernel_size=5, expansion=2), BLOCK_SHAPE)
    # another instance of the same architecture and shape: served from the cache
    second = host_cpu.predict(QuadraBlock(16, kernel_size=5, expansion=2), BLOCK_SHAPE)
    assert second.latency_ms == first.latency_ms
    assert type(second) is type(first) and isinstance(first.latency_ms, float)
    assert second.kernels.shape == first.kernels.shape
    assert list(second.kernels.dtypes) == list(first.kernels.dtypes)
    # a different shape is a different measurement
    wider = host_cpu.predict(QuadraBlock(16, kernel_size=5, expansion=2), (1, 16, 16, 16))
    assert wider.kernels.shape == first.kernels.shape and wider.latency_ms > 0
    assert len(host_cpu._cache) >= 2


def test_host_cuda_needs_a_gpu():
    if torch.cuda.is_available():
        prediction = MeasuredPredictor("host-cuda", repeats=3).predict(
            QuadraBlock(16, kernel_size=3, expansion=2), BLOCK_SHAPE)
        assert prediction.latency_ms > 0 and prediction.source == "measured"
        assert "CUDA" in prediction.version
    else:
        with pytest.raises(QnasError, match="host-cpu"):
            MeasuredPredictor("host-cuda")


def test_bad_thread_setting_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("QNAS_HOST_THREADS", "many")
    with pytest.raises(QnasError, match="QNAS_HOST_THREADS"):
        MeasuredPredictor("host-cpu")
    with pytest.raises(QnasError, match="host-cpu"):
        MeasuredPredictor("host-tpu", threads=1)


# --- the builder: host timings -> a registrable nn-Meter predictor (subprocess, temp HOME) ---
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("builder")
    home, out = tmp / "home", tmp / "out"
    home.mkdir()
    out.mkdir()
    env = dict(os.environ, HOME=str(home), PYTHONWARNINGS="ignore", QNAS_HOST_THREADS="1")
    done = subprocess.run([sys.executable, str(HERE), str(out)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"builder scenario failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return json.loads((out / "result.json").read_text())


def test_builder_writes_and_registers_an_nnmeter_predictor(built):
    assert built["available_before"] is False
    assert {"conv-bn-relu.pkl", "dwconv-bn-relu.pkl", "fc.pkl", "add.pkl", "fusion_rules.json",
            "meta.yaml", "qnas_op_costs.yaml"} <= set(built["files"])
    # `nn-meter register` put it in nn-Meter's own predictor list
    assert built["registered"] == ["qnas_host_cpu"]
    assert built["available_after"] is True
    assert built["meta"]["qnas"]["device"] == "host-cpu"
    assert built["meta"]["qnas"]["threads"] == 1
    # nn-Meter itself loads it and predicts an IR with it
    assert built["nnmeter_own_ms"] > 0
    # and qnas predicts through it, nn-Meter half + fitted costs of the ignored ops
    assert built["prediction"]["source"] == "nn-meter"
    assert built["prediction"]["latency_ms"] > 0
    assert built["prediction"]["nnmeter_ms"] == pytest.approx(built["nnmeter_own_ms"], rel=1e-12)
    assert built["prediction"]["extra_ms"] > 0
    assert "qnas_host_cpu" in built["prediction"]["version"]
    assert built["calibration_networks"] == 1


def _build_scenario(out: Path) -> dict:
    import yaml

    from qnas.predictors import nnmeter_backend as nb
    from qnas.predictors import nnmeter_files as nf
    from qnas.predictors.builder import build_host_predictor

    result = {"available_before": nf.nnmeter_available("host-cpu")}
    built = build_host_predictor("host-cpu", samples=3, n_estimators=3, op_samples=2,
                                 space="quadranet", input_shape=(1, 3, 32, 32),
                                 calibration_networks=1)
    result["files"] = sorted(p.name for p in built.folder.iterdir())
    result["registered"] = [c["name"] for c in nf.predictor_configs()
                            if c["name"].startswith("qnas_")]
    result["available_after"] = nf.nnmeter_available("host-cpu")
    result["meta"] = yaml.safe_load((built.folder / "meta.yaml").read_text())
    costs = yaml.safe_load((built.folder / "qnas_op_costs.yaml").read_text())
    result["calibration_networks"] = costs["calibration"]["networks"]

    import nn_meter

    block = QuadraBlock(32, kernel_size=3, expansion=2).eval()
    shape = (1, 32, 8, 8)
    own = nn_meter.load_latency_predictor("qnas_host_cpu")
    result["nnmeter_own_ms"] = float(own.predict(nb.nnmeter_ir(block, shape), "nnmeter-ir"))
    predictor = nb.NNMeterPredictor("host-cpu")
    prediction = predictor.predict(block, shape)
    parts = predictor.predict_parts(block, shape)
    result["prediction"] = {"source": prediction.source, "latency_ms": prediction.latency_ms,
                            "version": prediction.version, "nnmeter_ms": parts.nnmeter_ms,
                            "extra_ms": parts.extra_ms}
    return result


if __name__ == "__main__":
    out_dir = Path(sys.argv[1])
    (out_dir / "result.json").write_text(json.dumps(_build_scenario(out_dir), indent=2))
