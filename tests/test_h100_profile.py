"""The h100 datasheet profile and the profile-vs-measurement benchmark (CPU only, no timings)."""
import pandas as pd
import pytest
from click.testing import CliRunner
from torch import nn

from qnas.bench.profile_check import block_cases, check_profile, relation
import qnas.cli.bench  # noqa: F401 -- registers "qnas bench profile"
from qnas.cli import cli
from qnas.errors import QnasError
from qnas.space import load_space
from qnas.nn import build_block
from qnas.predictors import get, list_devices
from qnas.predictors.profile import load_profile, profile_path


def test_h100_is_a_listed_datasheet_profile_with_a_stated_error():
    assert "h100" in list_devices()
    predictor = get("h100")
    assert predictor.source == "profile"
    raw = load_profile(profile_path("h100"))
    assert raw["kind"] == "datasheet" and "fit" not in raw and "not fitted" in predictor.basis
    assert predictor.known_error.strip() and "PENDING" not in predictor.known_error
    # the same method as a100: same op classes, same assumed per-kernel overhead
    a100 = load_profile(profile_path("a100"))
    assert raw["op_classes"] == a100["op_classes"]
    assert {name: c["overhead_us"] for name, c in raw["classes"].items()} == \
        {name: c["overhead_us"] for name, c in a100["classes"].items()}
    prediction = predictor.predict(build_block("quadra", 64, kernel_size=7, expansion=4),
                                   "1x64x28x28")
    assert prediction.source == "profile" and prediction.latency_ms > 0
    assert prediction.known_error == predictor.known_error


def test_h100_predicts_a_compute_bound_conv_faster_than_a100():
    conv = nn.Conv2d(256, 256, 3, padding=1)
    shape = "32x256x56x56"           # ~0.9 TFLOP: compute-bound on both rooflines
    h100, a100 = (get(name).predict(conv, shape) for name in ("h100", "a100"))
    assert 0 < h100.latency_ms < a100.latency_ms


def test_block_cases_cover_each_candidate_at_each_distinct_layer_shape():
    space = load_space("quadranet")
    cases = block_cases(space, (1, 3, 224, 224))
    ops = [op for op in space.candidates if op != "identity"]
    shapes = sorted({shape for _, _, shape, _ in cases})
    assert shapes == sorted({tuple(s) for s in space.layer_input_shapes((1, 3, 224, 224))})
    assert len(cases) == len(ops) * len(shapes) == 24


def test_relation_labels_other_hardware_a_cross_check():
    assert relation("h100", "NVIDIA H100 80GB HBM3") == "validation"
    assert relation("a100", "NVIDIA H100 80GB HBM3") == "cross-check"


def test_profile_bench_on_cpu_writes_its_table(tmp_path):
    result = check_profile("h100,a100", measure="host-cpu", batches=(1,), models=(),
                           resolution=16, repeats=1, warmup=0)
    table = result.table
    assert set(table["profile"]) == {"h100", "a100"} and set(table["relation"]) == {"cross-check"}
    assert (table["predicted_ms"] > 0).all() and (table["measured_ms"] > 0).all()
    # both profiles are set beside the same measurement of each block
    by_case = table.groupby(["op", "shape"])["measured_ms"].nunique()
    assert (by_case == 1).all() and len(by_case) == 24
    assert any("NOT a validation of h100" in note for note in result.notes)
    out = tmp_path / "check.csv"
    run = CliRunner().invoke(cli, ["bench", "profile", "h100", "--measure", "host-cpu",
                                   "--resolution", "16", "--models", "", "--repeats", "1",
                                   "--warmup", "0", "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "median |rel error| of 24 blocks" in run.output
    assert list(pd.read_csv(out).columns)[:6] == ["profile", "relation", "batch", "kind", "op",
                                                  "shape"]


def test_profile_bench_refuses_user_mistakes():
    with pytest.raises(QnasError, match="not a profile"):
        check_profile("host-cpu", measure="host-cpu")
    with pytest.raises(QnasError, match="unknown device"):
        check_profile("h200", measure="host-cpu")
    with pytest.raises(QnasError, match="positive"):
        check_profile("h100", measure="host-cpu", batches=(0,))
