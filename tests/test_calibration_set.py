"""The calibration set: its shipped definition is small and well spread, it exports as ONNX that
onnxruntime runs, and a filled measurements CSV is read back with one-line errors."""
import re

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from qnas.errors import QnasError
from qnas.models.ops import is_identity, parse_op
from qnas.predictors.calibrate import TimedModel
from qnas.predictors.calibration_set import (
    CSV_COLUMNS,
    load_calibration_set,
    parse_calibration_set,
    read_measurements,
    tflite_converter,
    write_calibration_set,
)

TINY_SPACE = """\
name: tinyq
macro: quadranet
width: 8
depths: [2, 2, 3, 2]
candidates: [k3e2, k3e4, k5e2, k5e4, k7e2, k7e4, identity]
input_shape: [1, 3, 32, 32]
num_classes: 10
"""


def tiny_set_text(space_path) -> str:
    children = {"a": "[k3e2, k3e2, k3e2, k3e2]", "b": "[k7e4*2, k7e4, k7e4*3, k7e4]",
                "c": "[k5e2, '', k5e4*2, k3e4]", "d": "[k3e4*2, k7e2*2, k5e2, '']",
                "e": "[k5e4, k3e2 k7e4, k3e2 k5e2 k7e2, k5e4*2]",
                "f": "['', k5e4, k7e4*3, k3e2]"}
    lines = ["name: tiny-calibration", "version: 1", "input_shape: [1, 3, 32, 32]",
             "num_classes: 10", "models:",
             "  - {name: sq, model: squeezenet1_1, why: a torchvision model}"]
    lines += [f"  - {{name: {name}, space: {space_path}, stages: {stages}}}"
              for name, stages in children.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny calibration set (width-8 children at 32×32) written once, as the CLI would."""
    root = tmp_path_factory.mktemp("calibration")
    (root / "tinyq.yaml").write_text(TINY_SPACE)
    (root / "tiny_set.yaml").write_text(tiny_set_text(root / "tinyq.yaml"))
    written = write_calibration_set(root / "set", root / "tiny_set.yaml", tflite=False)
    return root, written


# --- the shipped set ----------------------------------------------------------------------------
def test_shipped_set_is_small_and_well_spread():
    cset = load_calibration_set()
    assert 8 <= len(cset.models) <= 20
    assert cset.input_shape == (1, 3, 224, 224)
    children = [m for m in cset.models if m.kind == "child"]
    others = [m for m in cset.models if m.kind == "model"]
    assert len(children) >= 8 and len(others) >= 3          # mostly what qnas predicts
    kernels, expansions, depths = set(), set(), set()
    for child in children:
        blocks = [parse_op(op)[1] for op in child.ops() if not is_identity(op)]
        kernels |= {b["kernel_size"] for b in blocks}
        expansions |= {b["expansion"] for b in blocks}
        depths.add(len(blocks))
    assert kernels == {3, 5, 7} and expansions == {2, 4}
    assert len(depths) >= 5 and min(depths) <= 6 and max(depths) >= 15
    assert len({tuple(c.ops()) for c in children}) == len(children)


def test_set_models_decompose_to_kernels():
    cset = load_calibration_set()
    ops = {k.op for k in cset.kernels("resnet18")}
    assert {"conv", "batchnorm", "relu", "add", "linear"} <= ops
    child = cset.kernels(cset.models[-1].name)
    assert {"dwconv", "pwconv", "layernorm", "gelu", "mul"} <= {k.op for k in child}
    # a different input shape is a different workload
    small = cset.kernels("resnet18", (1, 3, 64, 64))
    assert sum(k.flops for k in small) < sum(k.flops for k in cset.kernels("resnet18")) / 10


@pytest.mark.parametrize("text, message", [
    ("models: []", "non-empty 'models:'"),
    ("models:\n  - {name: x}", "either 'model'"),
    ("models:\n  - {name: x, model: resnet18, space: quadranet, stages: []}", "either 'model'"),
    ("models:\n  - {name: x, model: resnet18}\n  - {name: X, model: resnet34}", "repeated"),
    ("models:\n  - {name: 'a b', model: resnet18}", "not a plain file name"),
    ("bogus: 1\nmodels:\n  - {name: x, model: resnet18}", "unknown keys"),
    ("models: [", "not valid YAML"),
])
def test_malformed_sets_are_refused_in_one_line(text, message):
    with pytest.raises(QnasError, match=message) as error:
        parse_calibration_set(text, "bad.yaml")
    assert "\n" not in str(error.value)


def test_bad_stages_are_refused():
    cset = parse_calibration_set(
        "models:\n  - {name: x, space: quadranet, stages: [k3e2*9, k3e2, k3e2, k3e2]}\n"
        "  - {name: y, space: quadranet, stages: [k3e2*0, k3e2, k3e2, k3e2]}\n"
        "  - {name: z, space: quadranet, stages: [k3e2, k3e2, k3e2]}", "bad.yaml")
    with pytest.raises(QnasError, match="stage 0 of space 'quadranet' has 4 layers, got 9"):
        cset.models[0].ops()
    with pytest.raises(QnasError, match="bad stage token 'k3e2\\*0'"):
        cset.models[1].ops()
    with pytest.raises(QnasError, match="has 4 stages, 'stages' lists 3"):
        cset.models[2].ops()


# --- exporting it -------------------------------------------------------------------------------
def test_written_set_runs_in_onnxruntime_and_has_a_template(tiny):
    root, written = tiny
    folder = root / "set"
    assert written.folder == folder and len(written.table) == 7
    assert sorted(p.name for p in folder.iterdir()) == ["README.txt", "calibration_set.yaml",
                                                        "measurements.csv", "models"]
    for row in written.table.itertuples():
        session = ort.InferenceSession(str(folder / row.file),
                                       providers=["CPUExecutionProvider"])
        (value,) = session.get_inputs()
        assert value.name == "input" and value.shape == [1, 3, 32, 32]    # a fixed shape
        out = session.run(None, {"input": np.zeros((1, 3, 32, 32), np.float32)})[0]
        assert out.shape == (1, 10) and np.isfinite(out).all()
        assert row.ort_max_abs_diff < 1e-3
    template = pd.read_csv(folder / "measurements.csv", dtype=str, keep_default_na=False)
    assert list(template.columns) == CSV_COLUMNS
    assert list(template["model"]) == ["sq", "a", "b", "c", "d", "e", "f"]
    assert (template["latency_ms"] == "").all() and (template["input_shape"] == "1x3x32x32").all()
    readme = (folder / "README.txt").read_text()
    for tool in ("benchmark_model", "benchmark_app", "trtexec", "onnxruntime",
                 "qnas predictor calibrate"):
        assert tool in readme
    assert (folder / "calibration_set.yaml").read_text() == (root / "tiny_set.yaml").read_text()


@pytest.mark.skipif(tflite_converter() is not None, reason="litert-torch is installed here")
def test_without_the_converter_the_set_is_onnx_only_and_says_so(tiny):
    _, written = tiny
    assert written.tflite == "" and not list((written.folder / "models").glob("*.tflite"))
    assert "pip install qnas[tflite]" in (written.folder / "README.txt").read_text()


def test_a_non_empty_folder_is_not_overwritten(tiny, tmp_path):
    root, _ = tiny
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(QnasError, match="is not empty"):
        write_calibration_set(tmp_path, root / "tiny_set.yaml")
    assert (tmp_path / "mine.txt").read_text() == "keep"


# --- reading measurements -----------------------------------------------------------------------
def _filled(tiny, tmp_path, edit=None):
    root, _ = tiny
    frame = pd.read_csv(root / "set" / "measurements.csv", dtype=str, keep_default_na=False)
    frame["latency_ms"] = [str(1.5 + i) for i in range(len(frame))]
    if edit is not None:
        frame = edit(frame)
    path = tmp_path / "measurements.csv"
    frame.to_csv(path, index=False)
    (tmp_path / "calibration_set.yaml").write_text((root / "tiny_set.yaml").read_text())
    return path


def test_filled_measurements_become_timed_models(tiny, tmp_path):
    read = read_measurements(_filled(tiny, tmp_path))
    assert [t.model for t in read.timed] == ["sq", "a", "b", "c", "d", "e", "f"]
    assert all(isinstance(t, TimedModel) and t.kernels for t in read.timed)
    assert [t.latency_ms for t in read.timed] == [1.5 + i for i in range(7)]
    assert read.calibration_set.name == "tiny-calibration"       # the one beside the CSV
    assert set(read.table["kernels_from"]) == {"set"}


def test_latencies_may_carry_a_unit(tiny, tmp_path):
    def units(frame):
        frame.loc[0, "latency_ms"] = "1500us"
        frame.loc[1, "latency_ms"] = " 2.5 ms"
        return frame

    read = read_measurements(_filled(tiny, tmp_path, units))
    assert [t.latency_ms for t in read.timed[:2]] == [1.5, 2.5]


def _drop_column(frame):
    return frame.drop(columns="latency_ms")


def _unfill(frame):
    frame.loc[[1, 2], "latency_ms"] = ""
    return frame


def _bad_value(frame):
    frame.loc[3, "latency_ms"] = "fast"
    return frame


def _negative(frame):
    frame.loc[3, "latency_ms"] = "-1"
    return frame


def _unknown(frame):
    frame.loc[0, "model"] = "resnet9000"
    return frame


def _twice(frame):
    frame.loc[1, "model"] = "sq"
    return frame


def _few(frame):
    return frame.head(3)


def _bad_shape(frame):
    frame.loc[2, "input_shape"] = "1x3xbig"
    return frame


@pytest.mark.parametrize("edit, message", [
    (_drop_column, "lacks the column(s) latency_ms"),
    (_unfill, "no latency_ms for 2 model(s) (a, b); fill them in, or delete the rows"),
    (_bad_value, "line 5: latency_ms 'fast' of 'c' is not a positive number"),
    (_negative, "line 5: latency_ms '-1' of 'c' is not a positive number"),
    (_unknown, "line 2: model 'resnet9000' is not in calibration set tiny-calibration v1"),
    (_twice, "line 3: model 'sq' is listed twice"),
    (_few, "3 timed model(s); a fit needs at least 5"),
    (_bad_shape, "line 4: input shape '1x3xbig'"),
])
def test_bad_measurements_are_one_line_errors(tiny, tmp_path, edit, message):
    with pytest.raises(QnasError, match=re.escape(message)) as error:
        read_measurements(_filled(tiny, tmp_path, edit))
    assert "\n" not in str(error.value)


def test_a_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(QnasError, match="qnas predictor calibration-set --out DIR"):
        read_measurements(tmp_path / "nope.csv")


def test_a_row_outside_the_set_is_costed_from_its_onnx_file(tiny, tmp_path):
    root, _ = tiny
    onnx_file = root / "set" / "models" / "b.onnx"

    def extra(frame):
        row = {"model": "my_model", "file": str(onnx_file), "input_shape": "1x3x32x32",
               "latency_ms": "9.5"}
        return pd.concat([frame, pd.DataFrame([row])], ignore_index=True)

    read = read_measurements(_filled(tiny, tmp_path, extra))
    mine = {t.model: t for t in read.timed}
    assert mine["my_model"].latency_ms == 9.5
    # the ONNX graph of child b costs what child b's own kernels cost (same FLOPs)
    assert sum(k.flops for k in mine["my_model"].kernels) == pytest.approx(
        sum(k.flops for k in mine["b"].kernels), rel=0.01)
    assert read.table.set_index("model").loc["my_model", "kernels_from"] == "onnx"
