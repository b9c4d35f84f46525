"""qnas export (child from best.json: .pt, ONNX, TorchScript, model card) and
qnas latency best.json --measure. Real onnxruntime and TorchScript, no mocks."""
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml

from qnas.cli import main
from qnas.deploy import (CARD_NAME, FILE_NAMES, export_child, load_child, measure_best,
                         parse_formats, read_child)
from qnas.errors import QnasError
from qnas.nas.best import load_best
from qnas.nas.supernet import load_supernet
from conftest import MIXED_OPS

# a child with real blocks in three stages and one identity layer (the tiny search itself may
# derive identity everywhere, which would leave no searched weights to copy)


def _copy_best(best_path: Path, folder: Path, **changes) -> Path:
    """best.json copied into ``folder`` (checkpoint path made absolute), fields replaced."""
    raw = json.loads(Path(best_path).read_text())
    raw["supernet_checkpoint"] = str(Path(best_path).parent / raw["supernet_checkpoint"])
    raw.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "best.json"
    path.write_text(json.dumps(raw, indent=2))
    return path


@pytest.fixture(scope="module")
def mixed(tiny_search, tmp_path_factory):
    """(best.json path, ExportResult) of MIXED_OPS, exported to the default folder."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = _copy_best(tiny_search.best_path, tmp_path_factory.mktemp("mixed"), ops=MIXED_OPS)
        return best, export_child(best)
    finally:
        torch.set_num_threads(before)


def _inputs(batch, resolution=32, seed=5):
    return torch.randn(batch, 3, resolution, resolution,
                       generator=torch.Generator().manual_seed(seed))


# --- the export ---------------------------------------------------------------------------------

def test_export_writes_every_format_into_the_default_folder(mixed):
    best, result = mixed
    out = best.parent / "export"
    assert result.out == out
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILE_NAMES.values(), CARD_NAME])
    assert set(result.files) == {"pt", "onnx", "torchscript", "card"}
    assert result.verification["passed"].all()
    assert len(result.verification) == 6          # child, ORT ×3 shapes, TorchScript ×2
    assert result.num_classes == 4 and result.resolution == 32
    assert result.params == sum(p.numel() for p in load_child(result.files["pt"]).parameters())
    assert result.macs > 0
    removed = result.layers[result.layers["op"] == "identity"]
    assert (removed["module"] == "(removed)").all() and (removed["params"] == 0).all()


def test_child_equals_supernet_under_its_architecture(mixed, single_thread):
    best, result = mixed
    arch = load_best(best)
    supernet = load_supernet(arch.supernet_checkpoint, space=arch.space)
    supernet.set_ops(MIXED_OPS)
    child = load_child(result.files["pt"])
    # identity layers are gone from the child, not kept as nn.Identity
    assert [len(stage) for stage in child.stages] == [1, 1, 0, 1]
    x = _inputs(3)
    with torch.no_grad():
        torch.testing.assert_close(child(x), supernet(x), atol=1e-5, rtol=0)
    assert result.verification.iloc[0]["max_abs_diff"] <= 1e-5


def test_onnx_matches_pytorch_at_two_batch_sizes(mixed, single_thread):
    _, result = mixed
    path = result.files["onnx"]
    model = onnx.load(str(path))
    assert max(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")) \
        >= 17
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value          # dynamic batch axis
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    child = load_child(result.files["pt"])
    for batch in (1, 3):
        x = _inputs(batch)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = child(x).numpy()
        assert got.shape == (batch, 4)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_torchscript_loads_runs_and_matches(mixed, single_thread):
    _, result = mixed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)     # torch.jit.load is deprecated
        scripted = torch.jit.load(str(result.files["torchscript"]))
    child = load_child(result.files["pt"])
    for batch in (1, 3):
        x = _inputs(batch)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), child(x), atol=1e-4, rtol=0)


def test_pt_round_trips_through_load_child(mixed):
    best, result = mixed
    record = read_child(result.files["pt"])
    arch = load_best(best)
    assert record["format"] == "qnas-child" and record["format_version"] == 1
    assert record["ops"] == MIXED_OPS
    assert record["space"]["name"] == "tinytest" and record["space"]["hash"] == arch.space.hash
    assert record["num_classes"] == 4 and record["resolution"] == 32
    assert record["input_shape"] == [1, 3, 224, 224] and record["qnas_version"]
    child = load_child(result.files["pt"])
    state = child.state_dict()
    assert state.keys() == record["state_dict"].keys()
    assert all(torch.equal(state[k], record["state_dict"][k]) for k in state)
    # the space definition travels inside the file: no YAML needed to rebuild
    assert load_child(result.files["pt"], drop_path_rate=0.1).training is False


def test_model_card_lists_every_device_with_its_source(mixed):
    best, result = mixed
    card = result.files["card"].read_text()
    raw = json.loads(best.read_text())
    assert card == result.card
    rows = {line.split("|")[1].strip(): line for line in card.splitlines()
            if line.startswith("| ") and "|" in line[2:]}
    target = rows[f"{raw['device']} (target)"]
    assert raw["predictor"]["source"] in target
    for device, info in raw["other_devices"].items():
        assert device in rows, device
        assert info.get("source", "unavailable") in rows[device]
    for op in ("k3e2", "k5e2", "identity"):
        assert f"| {op} |" in card
    assert f"{result.params:,}" in card and f"{result.macs:,}" in card
    assert "PREDICTIONS" in card and "onnxruntime vs PyTorch (batch 3)" in card
    assert f"{raw['val_top1']:.2f} %" in card


def test_cli_exports_the_tiny_search(tiny_search, tmp_path, capsys, single_thread):
    out = tmp_path / "exported"
    main(["export", str(tiny_search.best_path), "--out", str(out), "--formats", "onnx,pt"])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [FILE_NAMES["onnx"], FILE_NAMES["pt"], CARD_NAME])
    text = capsys.readouterr().out
    # the search's child.pt carries the inherited weights: no supernet needed
    assert f"weights: {tiny_search.child_path}" in text and "onnxruntime vs PyTorch" in text
    assert "child vs supernet" not in text and "TorchScript" not in text


def test_export_into_an_existing_folder_keeps_other_files(mixed, tmp_path):
    best, _ = mixed
    out = tmp_path / "existing"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = export_child(best, out=out, formats="pt")
    assert sorted(p.name for p in out.iterdir()) == sorted(["notes.txt", FILE_NAMES["pt"],
                                                            CARD_NAME])
    assert (out / "notes.txt").read_text() == "mine"
    assert set(result.files) == {"pt", "card"}


def test_formats_are_parsed():
    assert parse_formats("all") == ("pt", "onnx", "torchscript")
    assert parse_formats("torchscript, pt") == ("pt", "torchscript")
    with pytest.raises(QnasError, match="unknown export format 'tflite'"):
        parse_formats("pt,tflite")


def test_batchnorm_child_matches_the_searched_accuracy(tmp_path, single_thread):
    """mbconv children have BatchNorm: the export re-estimates its statistics exactly as the
    search did, so the exported child scores best.json's val_top1."""
    from qnas.nas.evaluator import epoch_loader, evaluate_top1, search_data
    from qnas.nas.config import SearchConfig
    from qnas.nas.search import VAL_DATA, search

    space = tmp_path / "mb.yaml"
    space.write_text(yaml.safe_dump({
        "name": "tinymb", "macro": "mbconv", "stem_width": 8, "first_block_width": 8,
        "widths": [8, 16], "depths": [2, 2], "strides": [2, 2], "head_width": 32,
        "candidates": ["k3e3", "k5e3", "zero"], "input_shape": [1, 3, 64, 64]}))
    run = search(SearchConfig(device="cortexA76", latency="10ms", space=str(space),
                              data="synthetic", epochs=1, warmup_epochs=1, batch_size=32,
                              loss="hinge", seed=3, lut_cache_dir=str(tmp_path / "lut")),
                 out=tmp_path / "run")
    result = export_child(run.best_path, formats="pt,onnx")
    assert result.batchnorm.startswith("re-estimated")
    assert result.verification["passed"].all()
    data = search_data("synthetic", 32, 3, 0.2)
    top1 = evaluate_top1(load_child(result.files["pt"]),
                         epoch_loader(data.val, 256, 3, 0, VAL_DATA, shuffle=False))
    assert top1 == pytest.approx(run.best["val_top1"])


# --- refusals: one line, non-zero, nothing written -----------------------------------------------

def _corrupt(path: Path) -> None:
    path.write_text(path.read_text()[:-40])


def _newer(path: Path) -> None:
    raw = json.loads(path.read_text())
    raw["schema_version"] = 99
    path.write_text(json.dumps(raw))


def _other_space(path: Path) -> None:
    raw = json.loads(path.read_text())
    raw["space"]["hash"] = "0123456789abcdef"
    path.write_text(json.dumps(raw))


def _no_checkpoint(path: Path) -> None:
    raw = json.loads(path.read_text())
    raw["supernet_checkpoint"] = str(path.parent / "gone" / "checkpoint.pt")
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize("spoil, message", [
    (_corrupt, "corrupt"), (_newer, "newer"), (_other_space, "was made for space"),
    (_no_checkpoint, "checkpoint.pt named in"),
])
@pytest.mark.parametrize("out_exists", [False, True])
def test_refusals_write_nothing(tiny_search, tmp_path, capsys, spoil, message, out_exists):
    best = _copy_best(tiny_search.best_path, tmp_path / "run")
    spoil(best)
    out = tmp_path / "out"
    if out_exists:
        out.mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(best), "--out", str(out)])
    assert exit_.value.code != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("qnas: error:")
    assert message in err and "Traceback" not in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (not out.exists()) if not out_exists else list(out.iterdir()) == []


def test_refuses_a_best_json_of_another_space(tiny_search, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", str(tiny_search.best_path), "--out", str(tmp_path / "o"),
              "--space", "quadranet"])
    err = capsys.readouterr().err
    assert err.startswith("qnas: error:") and "not for space 'quadranet'" in err
    assert not (tmp_path / "o").exists()


def test_refuses_an_out_under_a_file(tiny_search, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(tiny_search.best_path), "--out", str(blocker / "export")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("qnas: error: cannot export: --out") and "not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# --- qnas latency best.json --measure ------------------------------------------------------------

def test_latency_measure_prints_measurements_beside_the_prediction(tiny_search, capsys):
    main(["latency", str(tiny_search.best_path), "--measure", "--device", "host-cpu",
          "--input-shape", "1x3x32x32", "--repeats", "3"])
    text = capsys.readouterr().out
    rows = {line.split()[0]: line for line in text.splitlines()
            if line.split()[:1] in (["PyTorch"], ["onnxruntime"], ["host-cpu"])}
    assert "measured (PyTorch)" in rows["PyTorch"]
    assert "measured (onnxruntime)" in rows["onnxruntime"]
    (table_sum,) = [line for line in text.splitlines() if "per block (LUT)" in line]
    assert table_sum.strip().startswith("host-cpu table sum")
    assert "host-cpu table sum vs measured PyTorch:" in text and "relative error" in text
    assert "1x3x32x32" in text


def test_measure_best_returns_labelled_medians(mixed):
    best, _ = mixed
    result = measure_best(best, "1x3x32x32", repeats=3, warmup=1)
    table = result.table
    assert list(table["what"][:2]) == ["PyTorch", "onnxruntime"]
    assert "host-cpu table sum" in list(table["what"])
    assert list(table["source"][:2]) == ["measured (PyTorch)", "measured (onnxruntime)"]
    assert (table["latency_ms"][:3] > 0).all() and (table["repeats"][:2] == 3).all()
    assert result.threads == 1 and result.input_shape == (1, 3, 32, 32)
    assert "exported child" in result.child            # mixed exported to the default folder
    assert result.pytorch_ms > 0 and result.onnxruntime_ms > 0
    assert np.isfinite(result.prediction_error())


def test_measure_needs_a_best_json(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["latency", "quadranet_xxs", "--measure"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("qnas: error: --measure") and len(err.strip().splitlines()) == 1
