"""Small artefacts: a search leaves best.json + child.pt (the child's inherited weights) and one
supernet checkpoint; export and retrain need only the first two; an unfinished run keeps what
it resumes from; old best.json and retraining configs still work."""
import json
import shutil

import pytest
import torch
import yaml
from conftest import TINY_SPACE

from qnas.cli import main
from qnas.deploy import export_child, load_child
from qnas.errors import QnasError
from qnas.nas.best import CHILD_FILE, load_best, read_child
from qnas.nas.config import SearchConfig
from qnas.nas.search import search, train_supernet
from qnas.nas.supernet import load_supernet
from qnas.runtime.checkpoints import CheckpointStore
from qnas.train import RetrainConfig, load_retrained, retrain
from qnas.train.retraining import LAST


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    path = tmp_path_factory.mktemp("artefacts") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SPACE))
    return path


def _config(space, **changes):
    # a budget that admits blocks, so that child.pt holds searched weights
    settings = {"device": "cortexA76", "latency": "2ms", "space": str(space),
                "data": "synthetic", "epochs": 1, "warmup_epochs": 1, "batch_size": 32,
                "seed": 2, "threads": 1}
    settings.update(changes)
    return SearchConfig(**settings)


@pytest.fixture(scope="module")
def finished(space, tmp_path_factory):
    before = torch.get_num_threads()
    try:
        return search(_config(space), out=tmp_path_factory.mktemp("run") / "search")
    finally:
        torch.set_num_threads(before)


def test_a_finished_search_keeps_one_checkpoint_and_writes_child_pt(finished):
    out = finished.out
    (kept,) = CheckpointStore(out).paths()                      # --keep-checkpoints 1
    assert not (out / "checkpoint-00000000.pt").exists()
    assert finished.removed_checkpoints and not finished.removed_checkpoints[0].exists()
    best = json.loads(finished.best_path.read_text())
    assert best["supernet_checkpoint"] == kept.name
    record = best["child_weights"]
    assert record["file"] == CHILD_FILE and record["bytes"] == (out / CHILD_FILE).stat().st_size
    # child.pt is the supernet's child of the derived ops, weight for weight
    arch = load_best(finished.best_path)
    supernet = load_supernet(kept, space=arch.space)
    expected = supernet.child_state_dict(arch.ops)
    child = read_child(out / CHILD_FILE, sha256=record["sha256"])
    assert child["ops"] == best["ops"] and child["num_classes"] == 4
    assert child["state_dict"].keys() == expected.keys()
    assert all(torch.equal(child["state_dict"][k], expected[k]) for k in expected)
    assert child["best"]["val_top1"] == best["val_top1"]
    # and a far smaller file than the checkpoint (which holds the supernet — with shared
    # candidates, the largest one per layer — and the optimiser's momentum as large again)
    assert record["bytes"] < kept.stat().st_size / 2


def test_export_and_retrain_need_only_best_json_and_child_pt(finished, tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("best.json", CHILD_FILE):
        shutil.copy(finished.out / name, alone / name)
    best = alone / "best.json"
    result = export_child(best, formats="pt,onnx")
    assert result.weights == str(alone / CHILD_FILE)
    assert result.verification["passed"].all() and len(result.verification) == 3
    exported = load_child(result.files["pt"]).state_dict()
    inherited = read_child(alone / CHILD_FILE)["state_dict"]
    assert all(torch.equal(exported[k], inherited[k]) for k in inherited)
    trained = retrain(best, RetrainConfig(epochs=1, batch_size=32, data="synthetic", seed=2,
                                          threads=1, init="inherit", lr=1e-9, drop_path_rate=0.0),
                      out=alone / "retrain")
    state = load_retrained(trained.last_path).state_dict()
    assert all(torch.allclose(state[k], inherited[k], atol=1e-6) for k in inherited
               if inherited[k].is_floating_point())
    assert (alone / "retrain" / "run.log").read_text().count(f"from {alone / CHILD_FILE}") == 1


def test_a_changed_child_pt_is_refused_in_one_line(finished, tmp_path):
    for name in ("best.json", CHILD_FILE):
        shutil.copy(finished.out / name, tmp_path / name)
    data = bytearray((tmp_path / CHILD_FILE).read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / CHILD_FILE).write_bytes(bytes(data))
    with pytest.raises(QnasError, match="does not match the checksum") as err:
        export_child(tmp_path / "best.json", out=tmp_path / "export")
    assert "\n" not in str(err.value) and not (tmp_path / "export").exists()


def test_best_json_of_an_older_qnas_falls_back_to_the_supernet(finished, tmp_path):
    raw = json.loads(finished.best_path.read_text())
    del raw["child_weights"]                                     # as qnas < 0.2 wrote it
    raw["supernet_checkpoint"] = str(finished.out / raw["supernet_checkpoint"])
    (tmp_path / "best.json").write_text(json.dumps(raw))
    result = export_child(tmp_path / "best.json", formats="pt")
    assert result.weights == raw["supernet_checkpoint"]
    assert result.verification["check"].iloc[0] == "child vs supernet (same ops)"
    exported = load_child(result.files["pt"]).state_dict()
    inherited = read_child(finished.out / CHILD_FILE)["state_dict"]
    assert all(torch.equal(exported[k], inherited[k]) for k in inherited)
    # neither child.pt nor a supernet: one line naming both
    raw["supernet_checkpoint"] = str(tmp_path / "gone.pt")
    raw["child_weights"] = json.loads(finished.best_path.read_text())["child_weights"]
    (tmp_path / "best.json").write_text(json.dumps(raw))
    with pytest.raises(QnasError, match=r"neither .*child\.pt nor the supernet checkpoint"):
        export_child(tmp_path / "best.json", out=tmp_path / "x")


def test_keep_zero_leaves_no_checkpoint_only_after_the_run_is_complete(space, tmp_path,
                                                                       capsys):
    out = tmp_path / "run"
    argv = ["search", "--device", "cortexA76", "--latency", "2ms", "--space", str(space),
            "--data", "synthetic", "--epochs", "1", "--warmup-epochs", "1", "--batch-size",
            "32", "--seed", "2", "--threads", "1", "--keep-checkpoints", "0", "--out", str(out),
            "-q"]
    main([*argv, "--stop-after", "1"])
    # unfinished: the checkpoint a resume needs stays, whatever --keep-checkpoints says
    assert len(CheckpointStore(out).paths()) == 1 and not (out / "best.json").exists()
    main([*argv, "--resume"])
    assert CheckpointStore(out).paths() == []
    best = json.loads((out / "best.json").read_text())
    assert best["supernet_checkpoint"] == ""
    assert "checkpoints kept: none" in capsys.readouterr().out
    result = export_child(out / "best.json", formats="pt")
    assert result.files["pt"].is_file()


def test_train_supernet_keeps_its_checkpoints_as_told(space, tmp_path):
    config = _config(space, device=None, latency=None, keep_checkpoints=0)
    path = train_supernet(config, out=tmp_path / "warm")
    assert path.is_file() and CheckpointStore(tmp_path / "warm").paths() == []


def test_a_retraining_config_and_checkpoint_of_an_older_qnas_still_work(finished, tmp_path,
                                                                        capsys):
    # config.json: 'lr' was the base rate at batch 4096
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"epochs": 2, "batch_size": 32, "lr": 0.256, "data": "synthetic",
                               "threads": 1}))
    main(["retrain", str(finished.best_path), "--config", str(old), "--print-config"])
    captured = capsys.readouterr()
    config = json.loads(captured.out)
    assert (config["lr"], config["lr_base"], config["lr_base_size"]) == (None, 0.256, 4096)
    assert "written by an older qnas" in captured.err and captured.err.count("\n") == 1
    upgraded = RetrainConfig(**{k: v for k, v in config.items()})
    assert upgraded.effective_lr == pytest.approx(0.256 * 32 / 4096)
    # a checkpoint of such a run resumes (its recorded settings are mapped the same way)
    out = tmp_path / "retrain"
    base = {"epochs": 2, "batch_size": 32, "data": "synthetic", "seed": 2, "threads": 1}
    retrain(finished.best_path, RetrainConfig(**base, lr_base=0.256), out=out,
            stop_after_epochs=1)
    store = CheckpointStore(out, prefix=LAST)
    state = torch.load(store.paths()[0], weights_only=False)
    recorded = dict(state["config"])
    recorded["lr"] = recorded.pop("lr_base")
    del recorded["lr_base_size"]
    state["config"] = recorded
    store.save(state, int(state["steps"]))
    resumed = retrain(finished.best_path, RetrainConfig(**base, lr_base=0.256), out=out,
                      resume=True)
    assert resumed.finished and len(resumed.log) == 2
