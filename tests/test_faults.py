"""Runs that survive faults: SIGKILL + --resume, a damaged newest checkpoint, SIGINT/SIGTERM,
a diverging loss. Real processes, real signals, real files."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from qnas.cli import main
from qnas.errors import QnasError
from qnas.runtime.checkpoints import CheckpointStore, checksum_path, load_verified
from qnas.nas.config import SearchConfig
from qnas.nas.search import search

from conftest import TINY_SPACE

# digits at 32×32 on the tiny space: ~36 quick steps an epoch, so a signal lands mid-epoch
ARGS = ["--device", "cortexA76", "--latency", "1.2ms", "--data", "digits", "--resolution", "32",
        "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "32", "--seed", "4",
        "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SPACE))
    return path


def _config(space):
    """ARGS as a SearchConfig (the in-process twin of the CLI runs)."""
    return SearchConfig(device="cortexA76", latency="1.2ms", space=str(space), data="digits",
                        resolution=32, epochs=2, warmup_epochs=1, batch_size=32, seed=4)


@pytest.fixture(scope="module")
def reference(space, tmp_path_factory):
    """The same search, uninterrupted (in this process; same code, same single thread)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    before = torch.get_num_threads()
    try:
        return search(_config(space), out=out, threads=1).best
    finally:
        torch.set_num_threads(before)


def _resume(space, out, **kwargs):
    before = torch.get_num_threads()
    try:
        return search(_config(space), out=out, resume=True, threads=1, **kwargs)
    finally:
        torch.set_num_threads(before)


def _start(argv):
    return subprocess.Popen([sys.executable, "-m", "qnas", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(out, process, count=1, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(CheckpointStore(out).paths()) >= count and all(
                checksum_path(p).exists() for p in CheckpointStore(out).paths()):
            return
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def test_sigkill_mid_epoch_then_resume_ends_like_an_uninterrupted_run(space, reference,
                                                                      tmp_path):
    out = tmp_path / "run"
    process = _start(["search", *ARGS, "--space", str(space), "--out", str(out)])
    _wait_for_checkpoint(out, process)
    time.sleep(0.15)                            # into the second epoch
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "best.json").exists(), "the run finished before it was killed"
    messages = []
    best = _resume(space, out, echo=messages.append).best
    assert any("resumed from" in m for m in messages)
    assert best["ops"] == reference["ops"]
    assert best["val_top1"] == reference["val_top1"]
    # a finished run keeps only its newest checkpoint (--keep-checkpoints 1, the default)
    assert len(CheckpointStore(out).paths()) == 1


def test_truncated_newest_checkpoint_falls_back_to_the_previous(space, reference, tmp_path,
                                                                single_thread):
    out = tmp_path / "run"
    search(_config(space), out=out, stop_after_epochs=2, threads=1)
    newest, previous = CheckpointStore(out).paths()
    with open(newest, "r+b") as stream:                     # a crash mid-copy, a full disk …
        stream.truncate(newest.stat().st_size // 2)
    with pytest.raises(QnasError, match="damaged"):
        load_verified(newest)
    messages = []
    result = search(_config(space), out=out, resume=True, threads=1, echo=messages.append)
    assert any(f"skipping checkpoint {newest}" in m for m in messages)
    assert any(f"resumed from {previous}" in m for m in messages)
    assert result.best["ops"] == reference["ops"]


def test_no_usable_checkpoint_is_one_clear_error(space, tmp_path, capsys, single_thread):
    out = tmp_path / "run"
    search(_config(space), out=out, stop_after_epochs=1, threads=1)
    (only,) = CheckpointStore(out).paths()
    only.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as exit_:
        main(["search", *ARGS, "--space", str(space), "--out", str(out), "--resume"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qnas: error: no usable checkpoint") and "\n" not in err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_resumable_checkpoint_and_says_how_to_resume(space, reference, tmp_path,
                                                                    signum):
    out = tmp_path / "run"
    process = _start(["search", *ARGS, "--space", str(space), "--out", str(out)])
    _wait_for_checkpoint(out, process)
    time.sleep(0.15)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum
    lines = [line for line in stderr.strip().splitlines() if line.startswith("qnas:")]
    assert len(lines) == 1 and "Traceback" not in stderr
    assert f"stopped by {signal.Signals(signum).name}" in lines[0]
    assert "--resume" in lines[0] and str(out) in lines[0]
    # run.log has what the run printed up to the stop, and the stop itself
    log = (out / "run.log").read_text()
    assert "epoch   1 warmup" in log and f"stopped by {signal.Signals(signum).name}" in log
    assert not (out / "best.json").exists()
    newest = load_verified(CheckpointStore(out).paths()[0])
    assert newest["step_in_epoch"] > 0                      # saved mid-epoch
    assert _resume(space, out).best["ops"] == reference["ops"]


def test_diverging_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(space, tmp_path,
                                                                           single_thread):
    config = SearchConfig(device="cortexA76", latency="1.2ms", space=str(space), data="synthetic",
                          epochs=2, warmup_epochs=1, batch_size=32, seed=1)
    out = tmp_path / "run"
    search(config, out=out, stop_after_epochs=1)
    (good,) = CheckpointStore(out).paths()
    state = torch.load(good, weights_only=False)
    # poison the weights of the stored run: the next step's loss is NaN
    state["supernet"] = {k: v.fill_(float("nan")) if k.startswith("net.stem") else v
                         for k, v in state["supernet"].items()}
    CheckpointStore(out).save(state, state["weight_steps"])
    with pytest.raises(QnasError, match=r"loss became nan at epoch 2, step 1: training "
                                        r"diverged; the last good checkpoint is"):
        search(config, out=out, resume=True)
    assert CheckpointStore(out).paths() == [good]           # nothing written after the NaN
    assert not (out / "best.json").exists()


def test_elastic_restart_resumes_automatically(space, tmp_path, monkeypatch, single_thread):
    config = SearchConfig(device="cortexA76", latency="1.2ms", space=str(space), data="synthetic",
                          epochs=1, warmup_epochs=1, batch_size=32, seed=1)
    out = tmp_path / "run"
    search(config, out=out, stop_after_epochs=1)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # what torchrun sets on a restart
    result = search(config, out=out)
    assert result.finished and list(result.log["epoch"]) == [1, 2]
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    with pytest.raises(QnasError, match="already holds a run"):
        search(config, out=out)


def test_retrain_sigterm_mid_epoch_then_resume_ends_like_an_uninterrupted_run(space, reference,
                                                                             tmp_path):
    from qnas.train import RetrainConfig, retrain

    raw = dict(reference)
    raw["ops"] = ["k3e2", "k5e2", "identity", "k5e2"]
    raw["supernet_checkpoint"] = "unused-by-scratch-init.pt"
    best = tmp_path / "best.json"
    best.write_text(json.dumps(raw))
    config = dict(epochs=3, batch_size=32, threads=1)
    before = torch.get_num_threads()
    try:
        uninterrupted = retrain(best, RetrainConfig(**config), out=tmp_path / "reference")
    finally:
        torch.set_num_threads(before)
    out = tmp_path / "run"
    process = _start(["retrain", str(best), "--epochs", "3", "--batch-size", "32",
                      "--threads", "1", "--out", str(out), "--quiet"])
    deadline = time.time() + 120
    while not CheckpointStore(out, prefix="last").exists():
        assert process.poll() is None and time.time() < deadline, process.communicate()[1]
        time.sleep(0.02)
    time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr and "--resume" in stderr and "Traceback" not in stderr
    assert not (out / "retrain.json").exists()
    try:
        resumed = retrain(best, RetrainConfig(**config), out=out, resume=True)
    finally:
        torch.set_num_threads(before)
    assert resumed.top1 == uninterrupted.top1
    a = torch.load(resumed.last_path, weights_only=False)["model"]
    b = torch.load(uninterrupted.last_path, weights_only=False)["model"]
    assert all(torch.equal(a[name], b[name]) for name in b)


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_says_so(space, reference,
                                                                       tmp_path, single_thread):
    """A real failed write: the resumed run may only write files of a few KB
    (RLIMIT_FSIZE; SIGXFSZ ignored, so the kernel answers EFBIG as on a full disk)."""
    import resource

    out = tmp_path / "run"
    search(_config(space), out=out, stop_after_epochs=1, threads=1)
    (previous,) = CheckpointStore(out).paths()

    def small_files_only():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_384, 16_384))

    process = subprocess.Popen(
        [sys.executable, "-m", "qnas", "search", *ARGS, "--space", str(space), "--out", str(out),
         "--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=small_files_only, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, stderr[-2000:]
    lines = [line for line in stderr.strip().splitlines() if line.startswith("qnas:")]
    assert len(lines) == 1 and "Traceback" not in stderr
    assert "could not write" in lines[0] and "File too large" in lines[0]
    assert f"the previous checkpoint {previous} is intact" in lines[0]
    assert "--resume" in lines[0]
    # the previous checkpoint is the only one, it verifies, and no temporary file is left
    assert CheckpointStore(out).paths() == [previous]
    assert load_verified(previous)["epoch"] == 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    # and the run resumes from it to the same end as an uninterrupted one
    assert _resume(space, out).best["ops"] == reference["ops"]
