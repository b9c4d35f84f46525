"""Experiments, reports and Pareto search, end to end on shrunken configurations (tiny spaces,
synthetic data, 1–2 epochs): Table III, IV and II runs, report.md with PNG plots, a Pareto
search over three budgets (API and ``qnas search --latency a,b,c``), and one-line errors."""
import json
import re
import os

import pandas as pd
import pytest
import torch
import yaml

from qnas.cli import main
from qnas.errors import QnasError
from qnas.experiments import (list_experiments, load_experiment, pareto_front, pareto_search,
                              run_experiment, write_report)
from qnas.nas.config import OptimConfig, SearchConfig
from qnas.units import parse_budgets

PNG = b"\x89PNG\r\n\x1a\n"

# children take 0.48–3.05 ms on cortexA76 and 0.22–4.88 ms on myriadvpu
TINY_Q = {"name": "tinyq", "width": 8, "depths": [1, 1, 1, 1],
          "candidates": ["k3e2", "k5e2", "identity"], "input_shape": [1, 3, 224, 224]}
# children take 1.91–3.42 ms on cortexA76 and 3.56–4.70 ms on myriadvpu
TINY_M = {"name": "tinym", "macro": "mbconv", "stem_width": 8, "first_block_width": 8,
          "widths": [8, 16], "depths": [2, 1], "strides": [2, 2], "head_width": 32,
          "candidates": ["k3e3", "k5e3", "zero"], "input_shape": [1, 3, 224, 224]}
# 3.1 ms on cortexA76: binds for tinym, not for tinyq; 3 ms on myriadvpu: binds for tinyq,
# cannot be met by tinym (recorded as infeasible)
TABLE3 = {"kind": "nas", "name": "t3", "description": "shrunken Table III", "data": "synthetic",
          "resolution": 32, "spaces": ["tinyq.yaml", "tinym.yaml"],
          "targets": [{"device": "cortexA76", "latency": "3.1ms"},
                      {"device": "myriadvpu", "latency": "3ms"}],
          "search": {"warmup_epochs": 1, "epochs": 1, "batch_size": 32},
          "retrain_epochs": 1, "retrain": {"batch_size": 32}, "checkpoints": "last"}
TABLE4 = {"kind": "ablation", "name": "t4", "data": "synthetic", "resolution": 32, "width": 8,
          "depths": [1, 1, 1, 1], "kernels": [3, 5], "devices": ["cortexA76", "a100"],
          "train": {"epochs": 1, "batch_size": 32}}
TABLE2 = {"kind": "blocks", "name": "t2",
          "bench": {"kinds": ["quadra", "hor"], "channels": [8], "layers": 2, "batch": 2,
                    "resolution": 8, "repeats": 1, "warmup": 0, "threads": 1}}


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    (root / "tinyq.yaml").write_text(yaml.safe_dump(TINY_Q))
    (root / "tinym.yaml").write_text(yaml.safe_dump(TINY_M))
    before = os.environ.get("QNAS_CACHE_DIR")
    os.environ["QNAS_CACHE_DIR"] = str(root / "cache")
    yield root
    if before is None:
        os.environ.pop("QNAS_CACHE_DIR", None)
    else:
        os.environ["QNAS_CACHE_DIR"] = before


def _write(root, name, raw):
    path = root / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _pngs(folder):
    found = sorted(folder.glob("*.png"))
    for path in found:
        assert path.read_bytes()[:8] == PNG, path
    return found


@pytest.fixture(scope="module")
def table3(workspace):
    import torch

    torch.set_num_threads(1)
    path = _write(workspace, "t3.yaml", TABLE3)
    messages = []
    out = run_experiment(path, out=workspace / "t3", echo=messages.append)
    return out, messages


def test_table3_shrunken_end_to_end(table3):
    out, messages = table3
    results = pd.read_csv(out / "results.csv")
    # both spaces per device, at the same budget
    for device in ("cortexA76", "myriadvpu"):
        assert sorted(results[results["device"] == device]["space"]) == ["tinym", "tinyq"]
    ok = results[results["status"] == "ok"]
    assert len(ok) == 3 and ok["within_budget"].all()
    assert (ok["predicted_ms"] <= ok["budget_ms"]).all()
    for column in ("val_top1", "retrain_top1", "macs_M", "params_M", "ms_cortexA76",
                   "ms_myriadvpu", "ms_a100"):
        assert ok[column].notna().all(), column
    infeasible = results[results["status"] != "ok"]
    assert len(infeasible) == 1
    assert infeasible.iloc[0]["space"] == "tinym" and infeasible.iloc[0]["device"] == "myriadvpu"
    smallest = re.fullmatch(r"infeasible \(smallest ([\d.]+) ms\)", infeasible.iloc[0]["status"])
    assert smallest and float(smallest.group(1)) > infeasible.iloc[0]["budget_ms"]
    binds = results.set_index(["space", "device"])["budget_binds"]
    assert not binds[("tinyq", "cortexA76")] and binds[("tinym", "cortexA76")]
    # one warm-up per space, shared by its searches
    assert all((out / space / "warmup").is_dir() for space in ("tinym", "tinyq"))
    assert sum("warm-up:" in m for m in messages) == 2
    for best in ok["best_json"]:
        record = json.loads((out / best).read_text())
        assert record["search"]["supernet"].endswith("supernet.pt")
        assert record["search"]["warmup_epochs"] == 0
        # checkpoints: last — only the one best.json names is kept
        kept = sorted(p.name for p in (out / best).parent.glob("checkpoint-*.pt"))
        assert kept == [record["supernet_checkpoint"]]
    for space in ("tinyq", "tinym"):
        warm = out / space / "warmup"
        assert (warm / "supernet.pt").is_file() and not list(warm.glob("checkpoint-*"))
    # provenance
    manifest = json.loads((out / "experiment.json").read_text())
    assert manifest["status"] == "finished" and manifest["wall_seconds"] > 0
    assert manifest["command"].startswith("qnas experiment run ")
    assert {"cpu", "cores", "torch", "torch_threads"} <= set(manifest["machine"])
    assert manifest["resolved"]["search"]["loss"] == "hinge"


def test_table3_report(table3):
    out, _ = table3
    report = write_report(out)
    text = report.read_text()
    assert len(_pngs(out)) >= 4
    for name in ("latency_accuracy.png", "search_curves.png", "architectures.png", "alpha.png"):
        assert f"]({name})" in text and (out / name).is_file()
    assert "qnas experiment run" in text and "Machine:" in text and "wall time" in text
    # the comparison table: per device, each space's top-1, MACs and latency side by side
    header = next(line for line in text.splitlines() if line.startswith("| device | budget"))
    for space in ("tinyq", "tinym"):
        for column in ("top-1", "MMACs", "latency"):
            assert f"{space} {column}" in header
    status = pd.read_csv(out / "results.csv").query("status != 'ok'")["status"].iloc[0]
    assert status.startswith("infeasible (smallest ") and status in text
    assert "Every chosen architecture is within its budget." in text
    # every search run has its own report with four plots
    for run in [p.parent for p in out.glob("*/*/best.json")]:
        assert (run / "report.md").is_file()
        assert {p.name for p in _pngs(run)} == {"alpha.png", "search_curves.png",
                                               "architecture.png", "latency_accuracy.png"}
    # and a warm-up-only folder gets a report too
    assert "warm-up" in write_report(out / "tinyq" / "warmup").read_text().lower()


def test_resume_reuses_a_finished_experiment(table3, workspace, capsys):
    out, _ = table3
    messages = []
    run_experiment(workspace / "t3.yaml", out=out, resume=True, echo=messages.append,
                   report=False)
    assert sum("reusing" in m for m in messages) == 5      # 2 warm-ups + 3 searches
    with pytest.raises(SystemExit) as exit_:                # not empty, no --resume
        main(["experiment", "run", str(workspace / "t3.yaml"), "--out", str(out), "--quiet"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "already holds an experiment" in err and "--resume" in err and "\n" not in err
    # other settings are refused on resume
    with pytest.raises(QnasError, match="other settings"):
        run_experiment(workspace / "t3.yaml", out=out, resume=True, overrides={"epochs": 2})


def test_table4_shrunken(workspace):
    path = _write(workspace, "t4.yaml", TABLE4)
    out = run_experiment(path, out=workspace / "t4")
    results = pd.read_csv(out / "results.csv")
    assert list(results["kernel"]) == [3, 5]
    assert results["top1"].between(0, 100).all()
    k3, k5 = results.iloc[0], results.iloc[1]
    assert k5["params_M"] > k3["params_M"] and k5["macs_M"] > k3["macs_M"]
    assert k5["ms_cortexA76"] > k3["ms_cortexA76"] and k3["ms_a100"] > 0
    text = (out / "report.md").read_text()
    assert "| k |" in text and len(_pngs(out)) >= 4


def test_table2_shrunken(workspace):
    path = _write(workspace, "t2.yaml", TABLE2)
    out = run_experiment(path, out=workspace / "t2")
    table = pd.read_csv(out / "blocks.csv")
    assert sorted(table["kind"]) == ["hor", "quadra"]
    assert (out / "blocks_quadraconv.csv").is_file()
    assert "## Blocks" in (out / "report.md").read_text() and len(_pngs(out)) >= 3


def _tiny_search(workspace, **changes):
    settings = dict(device="cortexA76", latency="1ms", space=str(workspace / "tinyq.yaml"),
                    data="synthetic", epochs=2, warmup_epochs=1, batch_size=32, loss="hinge",
                    seed=0, optim=OptimConfig(arch_lr=0.05, arch_every=1, grad_clip=5.0))
    settings.update(changes)
    return SearchConfig(**settings)


@pytest.fixture(scope="module")
def pareto(workspace):
    # budgets over the tiny space's range on cortexA76 (0.42–2.21 ms): the tightest admits only
    # the all-identity child, the middle one children with at most one block
    out = workspace / "pareto"
    result = pareto_search(_tiny_search(workspace, latency="0.5ms,0.9ms,2.3ms"), out=out)
    return out, result.best_paths


def test_pareto_search_three_budgets(pareto):
    out, paths = pareto
    assert [p.parent.name for p in paths] == ["0.5ms", "0.9ms", "2.3ms"]
    records = [json.loads(p.read_text()) for p in paths]
    budgets = [r["target_latency_ms"] for r in records]
    latencies = [r["predicted_latency_ms"] for r in records]
    assert all(lat <= budget for lat, budget in zip(latencies, budgets))
    assert latencies == sorted(latencies)                 # ordered like the budgets
    assert all(r["search"]["supernet"] == str(out / "warmup" / "supernet.pt") for r in records)
    frame = pd.read_csv(out / "pareto.csv")
    assert len(frame) == 3 and frame["on_front"].any()
    assert (out / "pareto.png").read_bytes()[:8] == PNG
    assert "Pareto search" in (out / "report.md").read_text()


def test_cli_search_with_several_budgets(pareto, workspace, capsys):
    out, _ = pareto
    supernet = out / "warmup" / "supernet.pt"
    target = workspace / "pareto-cli"
    main(["search", "--device", "cortexA76", "--latency", "0.5ms,2.3ms,0.9ms", "--space",
          str(workspace / "tinyq.yaml"), "--data", "synthetic", "--epochs", "1",
          "--batch-size", "32", "--supernet", str(supernet), "--out", str(target), "--quiet"])
    printed = capsys.readouterr().out
    summary = [line for line in printed.splitlines() if line.startswith("budget ")]
    assert len(summary) == 3 and "pareto.csv" in printed
    for name in ("0.5ms", "0.9ms", "2.3ms"):
        record = json.loads((target / name / "best.json").read_text())
        assert record["predicted_latency_ms"] <= record["target_latency_ms"]
    assert not (target / "warmup").exists()                # --supernet: no warm-up
    with pytest.raises(SystemExit) as exit_:
        main(["search", "--device", "cortexA76", "--latency", "0.5ms,0.1ms", "--space",
              str(workspace / "tinyq.yaml"), "--data", "synthetic", "--out",
              str(workspace / "pareto-bad"), "--quiet"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "0.1 ms" in err and "smallest architecture" in err and "\n" not in err
    assert not (workspace / "pareto-bad").exists()


def test_budgets_and_front():
    assert parse_budgets("300ms, 0.2s,120000us") == [300.0, 200.0, 120.0]
    for bad, needle in (("300ms,,200ms", "empty"), ("300ms,300ms", "twice"),
                        ("300ms,20", "300ms, 0.3s or 300000us")):
        with pytest.raises(QnasError, match=needle):
            parse_budgets(bad)
    # (latency, accuracy): (2, 90) is beaten by (1, 95); (3, 95) by (1, 95)
    assert pareto_front([1, 2, 3, 4], [95, 90, 95, 97]) == [0, 3]


def test_shipped_experiments_load_and_list(capsys):
    names = {item["path"].stem for item in list_experiments()}
    assert {"table2", "table3", "table4"} <= names
    table3 = load_experiment("table3")
    assert table3.kind == "nas" and len(table3.settings.targets) == 3
    assert set(table3.settings.space_names) == {"quadranet", "proxyless_mbconv"}
    assert load_experiment("table4").settings.kernels == [3, 5, 7, 9]
    assert load_experiment("table2").kind == "blocks"
    overridden = load_experiment("table3", {"epochs": 2, "warmup_epochs": 1,
                                            "retrain_epochs": 3, "data": "synthetic"})
    assert overridden.settings.search.epochs == 2 and overridden.settings.retrain_epochs == 3
    main(["experiment", "list"])
    assert "table3" in capsys.readouterr().out


@pytest.mark.parametrize("change, needle", [
    ({"kind": "tables"}, "unknown kind 'tables'; use one of blocks, nas, ablation"),
    ({"targets": None}, "missing key(s) 'targets'"),
    ({"colour": "red"}, "unknown key(s) 'colour'"),
    ({"targets": [{"device": "pixel9", "latency": "3ms"}]}, "unknown device 'pixel9'"),
    ({"targets": [{"device": "cortexA76", "latency": "3"}]}, "300ms, 0.3s or 300000us"),
    ({"spaces": ["nospace"]}, "unknown search space 'nospace'"),
    ({"search": {"epochs": 1, "colour": 1}}, "search: unknown setting(s) 'colour'"),
    ({"data": "mnist"}, "unknown dataset 'mnist'"),
])
def test_bad_experiment_files_fail_in_one_line(change, needle, workspace, capsys, tmp_path):
    raw = {**TABLE3, **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    path = _write(tmp_path, "bad.yaml", raw)
    for name in ("tinyq.yaml", "tinym.yaml"):
        (tmp_path / name).write_text((workspace / name).read_text())
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(["experiment", "run", str(path), "--out", str(out), "--quiet"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qnas: error:") and needle in err and "\n" not in err, err
    assert "Traceback" not in err and not out.exists()


def test_other_refusals(workspace, capsys, tmp_path):
    blocks = _write(tmp_path, "t2.yaml", TABLE2)
    cases = [
        (["experiment", "run", str(blocks), "--epochs", "3"], "--epochs applies only to nas"),
        (["experiment", "run", "table9"], "experiment table9 not found"),
        (["report", str(tmp_path)], "holds no search run"),
    ]
    for argv, needle in cases:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err, err
    with pytest.raises(QnasError, match="kernels must be a non-empty list of odd"):
        run_experiment(_write(tmp_path, "t4.yaml", {**TABLE4, "kernels": [3, 4]}),
                       out=tmp_path / "t4")
    assert not (tmp_path / "t4").exists()


def test_an_interrupted_experiment_says_how_to_resume(workspace, tmp_path, monkeypatch):
    import signal

    import qnas.nas.sweep as sweep_module
    from qnas.errors import Interrupted

    def interrupted(*args, **kwargs):
        raise Interrupted("stopped by SIGINT at epoch 1, step 2; checkpoint c.pt; resume with "
                          "the same command and --resume --out somewhere", signal.SIGINT)

    monkeypatch.setattr(sweep_module, "train_supernet", interrupted)
    path = _write(workspace, "t3i.yaml", TABLE3)
    with pytest.raises(Interrupted) as caught:
        run_experiment(path, out=tmp_path / "run")
    message = str(caught.value)
    assert message.startswith("stopped by SIGINT at epoch 1, step 2; continue the experiment "
                              "with: qnas experiment run ")
    assert message.endswith("--resume") and "--out somewhere" not in message
    assert caught.value.exit_code == 128 + signal.SIGINT
    manifest = json.loads((tmp_path / "run" / "experiment.json").read_text())
    assert manifest["status"].startswith("failed: Interrupted")


def test_resume_continues_an_interrupted_training(workspace, tmp_path, monkeypatch):
    """Table IV with --resume after the training of its kernel stopped half-way."""
    import qnas.experiments.runner as runner

    raw = {**TABLE4, "kernels": [3], "train": {"epochs": 2, "batch_size": 32}}
    path = _write(tmp_path, "t4.yaml", raw)
    out = tmp_path / "run"
    original = runner.retrain
    monkeypatch.setattr(runner, "retrain", lambda *args, **kwargs: original(
        *args, **{**kwargs, "stop_after_epochs": 1}))
    with pytest.raises(QnasError, match="stopped early; continue the experiment with --resume"):
        run_experiment(path, out=out)
    assert list((out / "runs" / "k3-s0" / "retrain").glob("last*.pt"))
    monkeypatch.setattr(runner, "retrain", original)
    run_experiment(path, out=out, resume=True)
    log = pd.read_csv(out / "runs" / "k3-s0" / "retrain" / "retrain_log.csv")
    assert list(log["epoch"]) == [1, 2]


SVR = {"kind": "search_vs_random", "name": "svr", "data": "synthetic", "resolution": 32,
       "space": "tinyq.yaml", "target": {"device": "cortexA76", "latency": "1.5ms"},
       "search": {"warmup_epochs": 1, "epochs": 1, "batch_size": 32, "derive_candidates": 4},
       "search_seeds": [0, 1], "random_children": 3, "band": 0.5,
       "retrain": {"epochs": 1, "batch_size": 32}, "seeds": [0, 1]}


def test_search_vs_random_shrunken(workspace):
    path = _write(workspace, "svr.yaml", SVR)
    out = run_experiment(path, out=workspace / "svr")
    results = pd.read_csv(out / "results.csv")
    children = pd.read_csv(out / "children.csv")
    groups = children["group"].value_counts()
    assert groups["searched"] == 2 and groups["random"] == 3 and groups["hand-designed"] == 1
    # ProxylessNAS's child of each search, where alpha+eval chose another one
    most_probable = children[children["group"] == "most-probable"]
    for seed in (0, 1):
        best = json.loads((out / f"search-s{seed}" / "best.json").read_text())
        assert best["derivation"]["method"] == "alpha+eval"
        differs = best["derivation"]["most_probable"]["ops"] != best["ops"]
        assert (f"most-probable-s{seed}" in set(most_probable["child"])) == differs
    assert (children["seeds"] == 2).all()
    assert len(results) == 2 * len(children) and results["top1"].between(0, 100).all()
    random = children[children["group"] == "random"]
    assert random["latency_ms"].between(0.75, 1.5).all()          # [0.5 T, T]
    assert len(set(results[results["group"] == "random"]["ops"])) == 3
    assert children.set_index("group").loc["hand-designed", "latency_ms"] <= 1.5
    text = (out / "report.md").read_text()
    assert "Kendall τ" in text and "rank" in text and "![search vs random]" in text
    assert "Per retraining seed" in text
    assert (out / "search_vs_random.png").read_bytes()[:8] == PNG


def test_search_vs_random_scores_the_children_on_a_test_split(workspace):
    """With ``test: N`` every retrained child's final weights are scored on N new canvases of
    the held-out handwriting; that score is what the groups, ranks and τ compare."""
    from qnas.data import load_test_split
    from qnas.train.retraining import load_retrained, score_on_test

    raw = {**SVR, "name": "svr-test", "data": "digit-pairs:val=60,split=0", "search_seeds": [0],
           "random_children": 2, "seeds": [0], "test": 150}
    out = run_experiment(_write(workspace, "svr_test.yaml", raw), out=workspace / "svr-test")
    results = pd.read_csv(out / "results.csv")
    assert (results["top1"] == results["test_top1"]).all()
    assert results["val_top1"].between(0, 100).all()
    test = load_test_split(raw["data"], 32, seed=0, size=150)
    for run in results["run"]:
        folder = out / run
        cached = json.loads((folder / "test.json").read_text())
        assert cached["size"] == 150 and cached["split"] == "digit-pairs:val=60,split=0 test=150"
        # the cached score is the final weights' top-1 on those canvases
        model = load_retrained(folder / cached["weights"])
        with torch.no_grad():
            right = (model(test.tensors[0]).argmax(1) == test.tensors[1]).float().mean()
        assert cached["test_top1"] == pytest.approx(100 * float(right))
    row = results.iloc[0]
    assert score_on_test(out / row["run"], test, "another split name") == row["test_top1"]
    text = (out / "report.md").read_text()
    assert "top-1 on 150 test canvases" in text and "On the validation canvases" in text
    with pytest.raises(QnasError, match="only digit-pairs draws a test split"):
        run_experiment(_write(workspace, "svr_bad.yaml", {**SVR, "test": 100}),
                       out=workspace / "svr-bad")


def test_resolving_power_compares_children_with_seed_noise():
    from qnas.experiments.search_vs_random import resolving_power

    # three random children, two seeds each: seed-to-seed differences of 2 points, means 60/61/62
    frame = pd.DataFrame({"child": ["a", "a", "b", "b", "c", "c"], "group": ["random"] * 6,
                          "top1": [59.0, 61.0, 60.0, 62.0, 61.0, 63.0]})
    power = resolving_power(frame)
    assert power["seeds"] == 2
    assert power["seed_std"] == pytest.approx(2 ** 0.5)          # var of (x, x+2) is 2
    assert power["random_means_std"] == pytest.approx(1.0)
    assert power["noise_only_std"] == pytest.approx(1.0)         # √2 / √2


def test_small_p_values_keep_their_digits():
    from qnas.experiments.search_vs_random import _p_value

    # a significant result must not read "p = 0.00"
    assert [_p_value(v) for v in (0.0025, 0.07, 0.5, float("nan"))] == ["0.0025", "0.07",
                                                                       "0.50", "–"]


def test_per_seed_compares_the_groups_within_each_seed():
    from qnas.experiments.search_vs_random import per_seed

    frame = pd.DataFrame({"seed": [0, 0, 0, 1, 1, 1, 0, 1],
                          "group": ["searched", "random", "random"] * 2 + ["hand-designed"] * 2,
                          "top1": [90.0, 88.0, 86.0, 91.0, 92.0, 90.0, 50.0, 50.0]})
    table = per_seed(frame)
    assert table["seed"].tolist() == [0, 1]
    assert table["searched − random"].tolist() == pytest.approx([3.0, 0.0])
