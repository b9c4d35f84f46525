"""``qnas bench gpu``: refused without CUDA in one line; every part driven on the CPU at toy
sizes (``--accelerator cpu --tiny``) through the real pipeline, its files and columns checked;
the latency CSV read by the GPU profile fit's reader; the goals' verdicts."""
import json

import pandas as pd
import pytest
import torch

from qnas.bench.blocks import BLOCK_COLUMNS
from qnas.bench.gpu import (
    E2E_COLUMNS,
    OPTIONS_COLUMNS,
    PARTS,
    QUADRACONV_COLUMNS,
    STARTED,
    goals,
    write_report,
)
from qnas.bench.profile_check import check_against
from qnas.predictors.calibrate import MEASUREMENT_COLUMNS, measured_kernels, read_measurements
from conftest import exit_code


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Every part, on the CPU at toy sizes, through the command line."""
    out = tmp_path_factory.mktemp("bench-gpu") / "gpu"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = exit_code(["bench", "gpu", "--out", str(out), "--accelerator", "cpu", "--tiny"])
    finally:
        torch.set_num_threads(before)
    assert code == 0
    return out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_cuda_it_says_so_in_one_line(tmp_path, capsys):
    assert exit_code(["bench", "gpu", "--out", str(tmp_path / "gpu")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("qnas: error: qnas bench gpu needs a CUDA GPU and none is visible here "
                    "(torch.cuda.is_available() is False); run it on a machine with an NVIDIA "
                    "GPU, e.g. scripts/gpu_check.sh")]
    assert not (tmp_path / "gpu").exists()
    assert exit_code(["bench", "gpu", "--out", str(tmp_path), "--parts", "blocks,warp"]) == 2
    assert "unknown part 'warp'" in capsys.readouterr().err


def test_every_part_runs_and_is_reported(tiny_run):
    parts = json.loads((tiny_run / "parts.json").read_text())
    assert list(parts) == list(PARTS)
    assert all(part["status"] == "ok" for part in parts.values()), parts
    env = json.loads((tiny_run / "environment.json").read_text())
    for key in ("gpu", "driver", "cuda", "cudnn", "torch", "qnas", "host_cpu", "date"):
        assert env[key], key
    assert env["device"] == "cpu" and env["tiny"] is True
    report = (tiny_run / "report.md").read_text()
    assert "NOT a GPU measurement" in report.split("\n## ")[0]
    for section in ("## Goals", "## Table II", "## QuadraConv2d", "## Supernet steps",
                    "## Search and retrain", "## Latency", "## What --precision"):
        assert section in report, section
    assert "**Driver / CUDA / cuDNN / torch:**" in report


def test_blocks_and_quadraconv_tables(tiny_run):
    blocks = pd.read_csv(tiny_run / "blocks.csv")
    assert list(blocks.columns) == BLOCK_COLUMNS
    assert set(blocks["kind"]) == {"quadra", "quadra-me", "hor", "conv"}
    assert (blocks["train_img_s"] > 0).all() and (blocks["saved_bytes"] > 0).all()
    profile = pd.read_csv(tiny_run / "blocks_profile.csv")
    assert set(profile["kind"]) == {"quadra", "hor"} and profile["op"].notna().all()
    assert (tiny_run / "blocks.png").stat().st_size > 1000
    conv = pd.read_csv(tiny_run / "quadraconv.csv")
    assert list(conv.columns) == QUADRACONV_COLUMNS
    assert set(conv["layout"]) == {"nchw", "channels_last"}
    timed = conv[conv["fwd_bwd_ms"].notna()]
    assert set(timed["impl"]) == {"naive-3conv", "grouped-autograd", "quadraconv",
                                  "quadraconv-me"}
    # the hand-written backward agrees with autograd (fp32) and, in bf16, to bf16's precision
    fp32 = conv[~conv["impl"].str.contains("bf16")]
    assert (fp32["max_rel_diff"] < 1e-5).all()
    scale = conv[conv["impl"] == "naive-3conv"]["max_abs_diff_grad_w"]   # 0: the reference
    assert (scale == 0).all()
    assert (conv[conv["impl"] == "quadraconv vs grouped-autograd"]["max_abs_diff_grad_x"]
            < 1e-4).all()
    bf16 = conv[conv["impl"] == "quadraconv (bf16 autocast)"]
    assert len(bf16) == 2 and (bf16["max_rel_diff"] < 0.05).all()
    by_impl = timed[timed["layout"] == "nchw"].set_index("impl")
    assert by_impl.loc["quadraconv-me", "saved_bytes"] < by_impl.loc["quadraconv",
                                                                      "saved_bytes"]


def test_supernet_e2e_and_options_tables(tiny_run):
    supernet = pd.read_csv(tiny_run / "supernet.csv")
    assert set(supernet["precision"]) == {"fp32", "bf16"}
    assert set(supernet["step"]) == {"child weight step", "supernet weight step",
                                     "supernet arch step"}
    assert {"time_ratio", "saved_ratio", "peak_MiB", "peak_ratio"} <= set(supernet.columns)
    e2e = pd.read_csv(tiny_run / "e2e.csv")
    assert list(e2e.columns) == E2E_COLUMNS and len(e2e) == 3
    search, retrained, reference = e2e.to_dict("records")
    assert search["finished"] and search["epochs_run"] == search["epochs_total"] == 2
    assert retrained["finished"] and 0 <= retrained["val_top1"] <= 100
    # the CPU reference times the search's own steps and projects the whole search
    assert reference["run"].startswith("search on cpu") and "reference" in reference["run"]
    assert reference["projected_total_s"] > reference["epoch_s_warmup"] > 0
    assert reference["epoch_s_search"] > 0 and "steps" in reference["projection"]
    assert (tiny_run / "e2e" / "search-cpu" / "best.json").exists()
    options = pd.read_csv(tiny_run / "options.csv")
    assert list(options.columns) == OPTIONS_COLUMNS
    assert set(zip(options["precision"], options["channels_last"])) == {
        ("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)}
    assert (options["step_ms"] > 0).all() and options["loss"].notna().all()


def test_latency_csv_is_what_the_gpu_profile_fit_reads(tiny_run):
    table = read_measurements(tiny_run / "latency_eager_fp32.csv")
    assert list(table.columns) == list(MEASUREMENT_COLUMNS)
    blocks, models = table[table["kind"] == "block"], table[table["kind"] == "model"]
    # the tiny space: 2 QuadraBlock candidates × 4 layer shapes, at batch 1 and 2
    assert len(blocks) == 2 * 4 * 2 and set(table["batch"]) == {1, 2}
    assert list(models["timed"].unique()) == ["quadranet_xxs"]
    assert (table["latency_ms"] > 0).all()
    for row in table.itertuples():         # each row decomposes as the fit decomposes it
        assert measured_kernels(row.kind, row.timed, row.input_shape)
    assert check_against("h100", str(tiny_run / "latency_eager_fp32.csv")).table["predicted"] \
        .gt(0).all()
    assert len(pd.read_csv(tiny_run / "latency_vs_profiles.csv")) > 0
    both = pd.read_csv(tiny_run / "latency.csv")
    assert set(zip(both["mode"], both["precision"])) == {("eager", "fp32"), ("eager", "bf16")}
    assert (tiny_run / "latency_eager_bf16.csv").exists()


def test_goals_and_a_part_stopped_from_outside(tiny_run, tmp_path):
    """The verdicts on numbers of a GPU (a copy of the tiny run's files, set to say so)."""
    out = tmp_path / "gpu"
    out.mkdir()
    env = json.loads((tiny_run / "environment.json").read_text())
    (out / "environment.json").write_text(json.dumps({**env, "device": "cuda", "tiny": False}))
    blocks = pd.read_csv(tiny_run / "blocks.csv")
    blocks.loc[blocks["kind"] == "hor", "peak_bytes"] = \
        blocks.loc[blocks["kind"] == "quadra", "peak_bytes"].to_numpy() * 2.0     # 0.5×: met
    blocks.loc[blocks["kind"] == "hor", "train_img_s"] = \
        blocks.loc[blocks["kind"] == "quadra", "train_img_s"].to_numpy()          # 1.0×: missed
    blocks.to_csv(out / "blocks.csv", index=False)
    verdicts = goals(out).set_index("goal")["verdict"]
    assert verdicts["QuadraBlock / HorBlock peak training memory, C=8"] == "met"
    assert verdicts["QuadraBlock / HorBlock training throughput, C=8"] == "missed"
    assert verdicts["supernet weight step / child step"] == "not measured"
    assert verdicts["default-size search: 2 CPU cores / the GPU"] == "not measured"
    # a part killed at its time limit stays 'started' and the report says so
    (out / "parts.json").write_text(json.dumps({"e2e": {"status": STARTED, "seconds": None,
                                                        "notes": [], "finished": ""}}))
    report = write_report(out).read_text()
    assert f"| e2e | {STARTED} |" in report and "| blocks | not run |" in report
    assert "NOT a GPU measurement" not in report
    # --parts report rewrites it from the files, on any machine
    assert exit_code(["bench", "gpu", "--out", str(out), "--parts", "report"]) == 0
