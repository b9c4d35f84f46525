"""One error style for every command: bad input gives ONE line on stderr that says what is wrong
and what would work, a non-zero exit code, no traceback, and leaves no files behind.

Each case runs the real CLI (``qnas.cli.main``) in a fresh working folder; afterwards that folder
holds exactly what the test put there.
"""
import json
import os
from pathlib import Path

import pytest

from qnas.cli import main

# (name, argv, what the message must contain) — {best} {foreign} {corrupt} {newer} {missing}
# {file} {cifar} are replaced by paths the fixture makes
CASES = [
    ("search: unknown device",
     ["search", "--device", "pixel9", "--latency", "300ms"], "known devices: cortexA76"),
    ("search: bad latency unit",
     ["search", "--device", "cortexA76", "--latency", "300xs"], "300ms, 0.3s or 300000us"),
    ("search: negative budget",
     ["search", "--device", "cortexA76", "--latency", "-5ms"], "300ms, 0.3s or 300000us"),
    ("search: infeasible budget",
     ["search", "--device", "cortexA76", "--latency", "0.1ms", "--space", "{space}",
      "--data", "synthetic"], "smallest architecture"),
    ("search: unknown space",
     ["search", "--device", "cortexA76", "--latency", "300ms", "--space", "nospace"],
     "known spaces: proxyless_mbconv, quadranet"),
    ("search: missing data path",
     ["search", "--device", "cortexA76", "--latency", "300ms", "--data", "cifar10:{missing}"],
     "does not exist"),
    ("search: unknown dataset",
     ["search", "--device", "cortexA76", "--latency", "300ms", "--data", "mnist"],
     "use one of: digit-pairs, digits, synthetic"),
    ("search: output is a file",
     ["search", "--device", "cortexA76", "--latency", "1.2ms", "--space", "{space}",
      "--data", "synthetic", "--out", "{file}"], "is a file"),
    ("search: resolution too small",
     ["search", "--device", "cortexA76", "--latency", "300ms", "--resolution", "8"],
     "use --resolution 32 or more"),
    ("search: resume with nothing to resume",
     ["search", "--device", "cortexA76", "--latency", "1.2ms", "--space", "{space}",
      "--data", "synthetic", "--resume", "--out", "run"], "nothing to resume"),
    ("train-supernet: missing imagefolder",
     ["train-supernet", "--data", "imagefolder:{missing}"], "does not exist"),
    ("train-supernet: zero batch",
     ["train-supernet", "--batch-size", "0"], "batch_size must be a positive integer"),
    ("export: missing best.json", ["export", "{missing}.json"], "does not exist"),
    ("export: corrupt best.json", ["export", "{corrupt}"], "corrupt"),
    ("export: best.json of another space", ["export", "{foreign}"], "was made for space"),
    ("export: newer schema", ["export", "{newer}"], "newer than this qnas"),
    ("retrain: corrupt best.json", ["retrain", "{corrupt}"], "corrupt"),
    ("retrain: missing data path", ["retrain", "{best}", "--data", "cifar10:{missing}"],
     "does not exist"),
    ("retrain: unknown init", ["retrain", "{best}", "--init", "pretrained"],
     "'pretrained' is not one of 'scratch', 'inherit'"),
    ("latency: unknown device", ["latency", "--model", "quadranet_t", "--device", "pixel9"],
     "known devices"),
    ("latency: malformed input shape", ["latency", "--model", "quadranet_t", "--input-shape",
                                     "1x3xa"],
     "1x3x224x224"),
    ("latency: wrong input shape", ["latency", "--model", "quadranet_t", "--input-shape",
                                 "1x3x224"],
     "check the shape"),
    ("latency: unknown model", ["latency", "--model", "resnet999"], "resnet999"),
    ("latency: --measure without a best.json", ["latency", "--model", "quadranet_t",
                                                "--measure"], "give MODEL as a best.json"),
    ("devices: unknown option", ["devices", "--bogus"], "see 'qnas devices --help'"),
    ("predictor calibrate: measured device", ["predictor", "calibrate", "host-cpu"],
     "no reference latencies"),
    ("predictor lut: unknown device", ["predictor", "lut", "--device", "pixel9"],
     "known devices"),
    ("predictor install-nnmeter: missing path", ["predictor", "install-nnmeter", "{missing}"],
     "does not exist"),
    ("bench blocks: unknown kind", ["bench", "blocks", "--kinds", "quadra,mlp"], "mlp"),
]


@pytest.fixture(scope="module")
def inputs(tiny_search, tmp_path_factory):
    """best.json variants next to the tiny search (kept outside the working folders)."""
    root = tmp_path_factory.mktemp("inputs")
    raw = json.loads(tiny_search.best_path.read_text())
    raw["supernet_checkpoint"] = str(tiny_search.out / raw["supernet_checkpoint"])
    best = root / "best.json"
    best.write_text(json.dumps(raw))
    foreign = root / "foreign.json"
    foreign.write_text(json.dumps({**raw, "space": {**raw["space"], "hash": "0" * 16}}))
    newer = root / "newer.json"
    newer.write_text(json.dumps({**raw, "schema_version": 99}))
    corrupt = root / "corrupt.json"
    corrupt.write_text(json.dumps(raw)[:200])
    space = Path(raw["space"]["source"])
    return {"best": best, "foreign": foreign, "newer": newer, "corrupt": corrupt,
            "space": space, "missing": root / "does-not-exist"}


@pytest.mark.parametrize("name, argv, needle", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_nonzero_and_leaves_nothing(name, argv, needle, inputs, tmp_path,
                                                          monkeypatch, capsys, single_thread):
    work = tmp_path / "work"
    work.mkdir()
    (work / "a-file").write_text("not a folder\n")
    monkeypatch.chdir(work)
    monkeypatch.setenv("QNAS_CACHE_DIR", str(tmp_path / "cache"))   # caches are not outputs
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    paths = {**{key: str(value) for key, value in inputs.items()}, "file": "a-file"}
    argv = [part.format(**paths) for part in argv]
    before = sorted(str(p.relative_to(work)) for p in work.rglob("*"))
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code not in (0, None)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("qnas: error: ") and "Traceback" not in err
    assert needle in err, err
    assert "internal error" not in err
    after = sorted(str(p.relative_to(work)) for p in work.rglob("*"))
    assert after == before, f"{name} left files: {set(after) - set(before)}"
    # inputs are never modified
    assert sorted(os.listdir(inputs["best"].parent)) == ["best.json", "corrupt.json",
                                                          "foreign.json", "newer.json"]


def test_there_are_enough_cases_across_the_commands():
    commands = {case[1][0] for case in CASES}
    assert len(CASES) >= 15
    assert {"search", "train-supernet", "export", "retrain", "latency", "devices",
            "predictor"} <= commands
