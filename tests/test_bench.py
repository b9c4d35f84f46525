"""``qnas bench blocks``: the measurement functions on a tiny config, the CSV, the CLI errors."""
import subprocess
import sys

import pandas as pd
import pytest
import torch

from qnas.bench import blocks
from qnas.bench.blocks import BLOCK_COLUMNS, BLOCK_KINDS, build_stack, run_block_bench
from qnas.bench.config import BlockBenchConfig
from qnas.bench.measure import saved_bytes
from qnas.bench.quadraconv import QUADRACONV_COLUMNS, QUADRACONV_IMPLS, run_quadraconv_bench
from qnas.cli import main
from qnas.errors import QnasError

TINY = dict(channels=(8,), layers=2, resolution=14, batch=2, repeats=1, threads=1)


@pytest.fixture(scope="module")
def block_table():
    return run_block_bench(BlockBenchConfig(**TINY), progress=False)


def test_block_table_has_every_kind_and_column(block_table):
    assert list(block_table.columns) == BLOCK_COLUMNS
    assert list(block_table["kind"]) == list(BLOCK_KINDS)
    assert block_table[BLOCK_COLUMNS[:19]].notna().all().all()
    for figure in ("train_img_s", "infer_img_s"):         # the interquartile range brackets it
        assert (block_table[f"{figure}_low"] <= block_table[figure]).all()
        assert (block_table[figure] <= block_table[f"{figure}_high"]).all()
    assert (block_table[["saved_bytes", "train_img_s", "infer_img_s", "macs_per_image"]] > 0) \
        .all().all()


def test_quadra_is_the_reference_of_every_ratio(block_table):
    quadra = block_table.set_index("kind").loc["quadra"]
    for ratio in [c for c in BLOCK_COLUMNS if c.endswith("_vs_quadra")]:
        assert quadra[ratio] == pytest.approx(1.0)
    hor = block_table.set_index("kind").loc["hor"]
    assert hor["saved_vs_quadra"] == pytest.approx(hor["saved_bytes"] / quadra["saved_bytes"])
    assert hor["train_vs_quadra"] == pytest.approx(hor["train_img_s"] / quadra["train_img_s"])


def test_params_are_the_stacks_parameter_counts(block_table):
    for row in block_table.itertuples():
        stack = build_stack(row.kind, 8, layers=2, kernel_size=7, hor_order=2)
        assert row.params == sum(p.numel() for p in stack.parameters())
    # QuadraBlock: 8C² + 161C per layer
    assert block_table.set_index("kind").loc["quadra", "params"] == 2 * (8 * 64 + 161 * 8)


def test_macs_count_convolutions_and_products_exactly(block_table):
    macs = block_table.set_index("kind")["macs_per_image"]
    hw, c, k = 14 * 14, 8, 7
    # per layer: 1×1 convs 8C², depthwise terms 3k²C (QuadraConv) or k²C (ConvBlock)
    assert macs["quadra"] == 2 * hw * (8 * c * c + 3 * k * k * c)
    assert macs["conv"] == 2 * hw * (8 * c * c + k * k * c)
    assert macs["skip"] == 2 * hw * 8 * c * c
    assert macs["quadra-me"] == macs["quadra"]


def test_memory_efficient_quadra_saves_exactly_two_maps_less_per_layer(block_table):
    saved = block_table.set_index("kind")["saved_bytes"]
    one_map = 2 * 8 * 14 * 14 * 4                      # batch × C × H × W float32
    assert saved["quadra-me"] < saved["quadra"]
    assert saved["quadra"] - saved["quadra-me"] == 2 * 2 * one_map   # A⋆x+a, B⋆x+b per layer
    assert saved["skip"] < saved["quadra-me"]


def test_saved_bytes_counts_each_storage_once_at_full_size():
    a = torch.randn(4, 5, requires_grad=True)
    b = torch.randn(4, 5, requires_grad=True)
    assert saved_bytes(lambda: a * b) == 2 * 80
    assert saved_bytes(lambda: a * a.t().t()) == 80             # two views, one storage
    assert saved_bytes(lambda: a[:2] * b[:2]) == 2 * 80         # a slice keeps all of it alive
    assert saved_bytes(lambda: a * b, exclude=[b]) == 80


def test_csv_is_written_atomically_and_reads_back(block_table, tmp_path):
    path = blocks.write_csv_atomic(block_table, tmp_path / "sub" / "blocks.csv")
    assert [p.name for p in path.parent.iterdir()] == ["blocks.csv"]   # no temporary left
    back = pd.read_csv(path)
    assert list(back.columns) == BLOCK_COLUMNS
    assert list(back["kind"]) == list(BLOCK_KINDS)
    pd.testing.assert_series_equal(back["saved_bytes"], block_table["saved_bytes"])
    assert blocks.companion_path(path).name == "blocks_quadraconv.csv"


def test_goal_summary_compares_quadra_with_hor(block_table):
    lines = blocks.goal_summary(block_table)
    assert len(lines) == 2 and lines[0].startswith("C=8 quadra: saved bytes")
    ratio = block_table.set_index("kind")["saved_bytes"]
    assert f"{ratio['quadra'] / ratio['hor']:.3f}× HorBlock's" in lines[0]


def test_quadraconv_part_compares_with_the_naive_three_convs():
    table = run_quadraconv_bench(BlockBenchConfig(**TINY), progress=False, repeats=1)
    assert list(table.columns) == QUADRACONV_COLUMNS
    assert list(table["impl"]) == list(QUADRACONV_IMPLS)
    rows = table.set_index("impl")
    assert rows.loc["naive-3conv", "time_vs_naive"] == 1.0
    assert rows.loc["naive-3conv", "saved_vs_naive"] == 1.0
    one_map = 2 * 8 * 14 * 14 * 4
    assert rows.loc["quadraconv-me", "saved_bytes"] == one_map                  # x only
    assert rows.loc["naive-3conv", "saved_bytes"] == 3 * one_map                # x, a, b
    assert rows.loc["grouped-autograd", "saved_bytes"] == 4 * one_map           # x, [a b c]
    assert rows.loc["quadraconv", "saved_bytes"] <= rows.loc["naive-3conv", "saved_bytes"]
    assert (table["fwd_bwd_ms"] > 0).all()


@pytest.mark.parametrize("setting, message", [
    (dict(kinds="quadra,bogus"), "unknown block kind 'bogus'"),
    (dict(channels="64,0"), "channels must be positive integers"),
    (dict(kernel_size=4), "kernel-size must be odd"),
    (dict(resolution=0), "resolution must be a positive integer"),
    (dict(device="tpu"), "unknown device 'tpu'"),
])
def test_bad_settings_raise_qnas_errors(setting, message):
    with pytest.raises(QnasError, match=message):
        BlockBenchConfig(**setting)


def test_kinds_always_include_the_reference():
    assert BlockBenchConfig(kinds="hor").kinds == ("quadra", "hor")


@pytest.mark.parametrize("args, message", [
    (["--kinds", "quadra,bogus"], "unknown block kind 'bogus'; choose from quadra, quadra-me"),
    (["--channels", "-8"], "channels must be positive integers like 64,128; got '-8'"),
    (["--kernel-size", "6"], "kernel-size must be odd"),
    (["--resolution", "0"], "resolution must be a positive integer, got 0"),
])
def test_cli_bad_input_is_one_line_and_non_zero(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "blocks", *args])
    assert exit_.value.code != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qnas: error: ") and message in err


def test_cli_subprocess_bad_kind():
    done = subprocess.run([sys.executable, "-m", "qnas", "bench", "blocks", "--kinds", "bogus"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "qnas: error: unknown block kind 'bogus'; choose from quadra, quadra-me, hor, conv, "
        "swin, skip"]


def test_cli_runs_a_tiny_bench_and_writes_both_csvs(tmp_path, capsys):
    out = tmp_path / "b.csv"
    main(["bench", "blocks", "--channels", "8", "--layers", "1", "--resolution", "14",
          "--batch-size", "1", "--repeats", "1", "--warmup", "0", "--threads", "1",
          "--kinds", "quadra,hor", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "quadra" in printed and "hor" in printed and "wall time" in printed
    assert list(pd.read_csv(out)["kind"]) == ["quadra", "hor"]
    assert list(pd.read_csv(tmp_path / "b_quadraconv.csv")["impl"]) == list(QUADRACONV_IMPLS)
