"""torchrun with 2 processes (real torch.distributed, gloo) against one process with the same
global batch: the same architecture and α, one set of files."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from qnas.runtime.checkpoints import CheckpointStore
from qnas.nas.config import SearchConfig
from qnas.nas.search import search

from conftest import MIXED_OPS, TINY_SPACE


def _config(space, batch_size):
    return SearchConfig(device="cortexA76", latency="1.2ms", space=str(space), data="digits",
                        resolution=32, epochs=1, warmup_epochs=1, batch_size=batch_size, seed=7)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    space = root / "tiny.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "qnas", "search",
               "--device", "cortexA76", "--latency", "1.2ms", "--space", str(space),
               "--data", "digits", "--resolution", "32", "--epochs", "1", "--warmup-epochs", "1",
               "--batch-size", "16", "--seed", "7", "--out", str(root / "ddp"), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env,
                            cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    before = torch.get_num_threads()
    try:
        single = search(_config(space, 32), out=root / "single", threads=1)
    finally:
        torch.set_num_threads(before)
    return root, result, single


def test_two_processes_find_what_one_process_finds_with_the_same_global_batch(runs):
    root, _, single = runs
    best = json.loads((root / "ddp" / "best.json").read_text())
    assert best["ops"] == single.best["ops"]
    assert best["val_top1"] == pytest.approx(single.best["val_top1"])
    ddp_state = torch.load(CheckpointStore(root / "ddp").paths()[0], weights_only=False)
    one_state = torch.load(CheckpointStore(root / "single").paths()[0], weights_only=False)
    assert ddp_state["world_size"] == 2 and one_state["world_size"] == 1
    assert ddp_state["weight_steps"] == one_state["weight_steps"]
    assert torch.allclose(ddp_state["supernet"]["alpha"], one_state["supernet"]["alpha"],
                          atol=1e-5)
    assert not torch.equal(one_state["supernet"]["alpha"],
                           torch.zeros_like(one_state["supernet"]["alpha"]))
    for name, tensor in one_state["supernet"].items():
        if tensor.is_floating_point():
            assert torch.allclose(ddp_state["supernet"][name], tensor, atol=1e-4), name
    ddp_log = ddp_state["rows"][-1]
    one_log = one_state["rows"][-1]
    for key in ("train_loss", "arch_loss", "expected_ms"):
        assert ddp_log[key] == pytest.approx(one_log[key], rel=1e-4), key


def test_only_rank_zero_writes_and_reports(runs):
    root, result, _ = runs
    files = sorted(p.name for p in (root / "ddp").iterdir())
    assert files.count("best.json") == 1 and files.count("config.json") == 1
    assert files.count("child.pt") == 1 and files.count("run.log") == 1
    # the finished run keeps its newest checkpoint only (--keep-checkpoints 1)
    assert len(CheckpointStore(root / "ddp").paths()) == 1
    # run.log is written by rank 0 alone: each epoch line once
    log = (root / "ddp" / "run.log").read_text()
    assert log.count("epoch   1 warmup") == 1 and log.count("epoch   2 search") == 1
    assert not [p for p in (root / "ddp").iterdir() if p.name.endswith(".tmp")]
    # the final report is printed once, not once per rank
    assert result.stdout.count("best.json:") == 1




def test_retrain_with_two_processes_matches_one_process(runs, tmp_path):
    """DDP retraining (2 × 16 images a step) against one process (32 a step): the same
    weights and top-1. DropPath is off: its masks are drawn per rank (seed + rank)."""
    from qnas.train import RetrainConfig, retrain

    root, _, _ = runs
    raw = json.loads((root / "ddp" / "best.json").read_text())
    raw["ops"] = MIXED_OPS
    raw["supernet_checkpoint"] = str(root / "ddp" / raw["supernet_checkpoint"])
    best = tmp_path / "best.json"
    best.write_text(json.dumps(raw))
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "qnas", "retrain",
         str(best), "--data", "digits", "--epochs", "1", "--batch-size", "16",
         "--drop-path", "0", "--out", str(tmp_path / "ddp"), "--quiet"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("validation top-1") == 1          # rank 0 reports
    before = torch.get_num_threads()
    try:
        single = retrain(best, RetrainConfig(epochs=1, batch_size=32, drop_path_rate=0.0,
                                             data="digits", threads=1), out=tmp_path / "single")
    finally:
        torch.set_num_threads(before)
    ddp = json.loads((tmp_path / "ddp" / "retrain.json").read_text())
    assert ddp["val_top1"] == pytest.approx(single.top1)
    a = torch.load(CheckpointStore(tmp_path / "ddp", prefix="last").paths()[0],
                   weights_only=False)
    b = torch.load(single.last_path, weights_only=False)
    assert a["world_size"] == 2 and b["world_size"] == 1
    for name, tensor in b["model"].items():
        if tensor.is_floating_point():
            assert torch.allclose(a["model"][name], tensor, atol=1e-4), name
