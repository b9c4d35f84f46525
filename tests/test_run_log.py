"""What a run prints and leaves: run.log (timestamps, every message, the summary), -q/-v,
no ``\\r`` lines in redirected output, --format table|json|csv, --tensorboard."""
import importlib.util
import io
import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import TINY_SPACE

from qnas.cli import main
from qnas.nas.best import load_best

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|DEBUG|WARNING)(\s|$)")


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    path = tmp_path_factory.mktemp("runlog") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SPACE))
    return path


def _search_argv(space, out, *extra):
    return ["search", "--device", "cortexA76", "--latency", "2ms", "--space", str(space),
            "--data", "synthetic", "--epochs", "1", "--warmup-epochs", "1", "--batch-size", "32",
            "--seed", "1", "--threads", "1", "--out", str(out), *extra]


def test_a_quiet_search_still_logs_everything_with_timestamps(space, tmp_path, capsys):
    out = tmp_path / "run"
    main(_search_argv(space, out, "-q", "--stop-after", "1"))
    printed = capsys.readouterr().out
    assert "epoch   1" not in printed                   # -q: no per-epoch lines ...
    main(_search_argv(space, out, "-q", "--resume"))
    printed = capsys.readouterr().out
    assert "validation top-1" in printed and "best.json:" in printed   # ... but the summary
    lines = (out / "run.log").read_text().splitlines()
    assert lines and all(STAMP.match(line) for line in lines), lines[:3]
    text = "\n".join(lines)
    # both invocations, in order: the epochs, the resume, the derivation and the summary
    assert text.count("epoch   1 warmup") == 1 and text.count("epoch   2 search") == 1
    assert text.index("epoch   1 warmup") < text.index("resumed from") < \
        text.index("epoch   2 search") < text.index("most probable child")
    assert "best.json:" in text and "validation top-1 (inherited weights)" in text
    assert "DEBUG   checkpoint" in text                  # details are in the log, not on screen


def test_verbose_shows_debug_lines_and_json_keeps_stdout_clean(space, tmp_path, capsys):
    main(_search_argv(space, tmp_path / "run", "-v", "--format", "json"))
    captured = capsys.readouterr()
    summary = json.loads(captured.out)                   # nothing else on stdout
    best = load_best(tmp_path / "run" / "best.json")
    assert summary["ops"] == best.ops and summary["child_weights"]["file"] == "child.pt"
    assert summary["files"]["run_log"].endswith("run.log")
    assert "debug: checkpoint" in captured.err and "epoch   1 warmup" in captured.err


def test_csv_prints_the_per_epoch_log(space, tmp_path, capsys):
    main(_search_argv(space, tmp_path / "run", "-q", "--format", "csv"))
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(frame["epoch"]) == [1, 2] and "expected_ms" in frame.columns


def test_retrain_logs_its_lr_first_and_prints_json(tiny_search, tmp_path, capsys):
    out = tmp_path / "retrain"
    main(["retrain", str(tiny_search.best_path), "--data", "synthetic", "--epochs", "1",
          "--batch-size", "64", "--lr", "1e-3", "--threads", "1", "--out", str(out),
          "--format", "json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["effective_lr"] == 1e-3 and summary["config"]["lr"] == 1e-3
    first = (out / "run.log").read_text().splitlines()[0]
    assert STAMP.match(first) and "at lr 0.001 (--lr), batch 64" in first
    # without --lr: the base rate scaled to the batch, and the line says how
    out = tmp_path / "scaled"
    main(["retrain", str(tiny_search.best_path), "--data", "synthetic", "--epochs", "1",
          "--batch-size", "32", "--lr-base", "0.1", "--lr-base-size", "256", "--threads", "1",
          "--out", str(out), "-q"])
    capsys.readouterr()
    first = (out / "run.log").read_text().splitlines()[0]
    assert "at lr 0.0125 (--lr-base 0.1 × batch 32 / 256)" in first
    assert json.loads((out / "retrain.json").read_text())["effective_lr"] == 0.0125


def test_redirected_output_has_no_carriage_returns(space, tmp_path):
    """Progress bars only on a terminal: a run whose output goes to files writes lines."""
    done = subprocess.run([sys.executable, "-m", "qnas", *_search_argv(space, tmp_path / "r")],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "epoch   1 warmup" in done.stdout
    assert "\r" not in done.stdout and "\r" not in done.stderr
    assert "\r" not in (tmp_path / "r" / "run.log").read_text()


def test_tensorboard_scalars_or_one_line_saying_how_to_get_them(space, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _search_argv(space, out, "-q", "--tensorboard")
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "pip install tensorboard" in err
        assert not out.exists()                           # refused before anything is written
        return
    main(argv)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "latency/expected_ms", "latency/argmax_ms", "alpha/entropy"} <= tags
    assert [e.step for e in events.Scalars("latency/expected_ms")] == [1, 2]
