"""Latency tables: correct against whole-child predictions, fast, costed once per shape, cached."""
import random
import time

import pytest
import torch

from qnas.errors import QnasError
from qnas.space import load_space
from qnas.predictors import LatencyTable, build_lut
from qnas.predictors.lut import default_cache_dir
from qnas.predictors.registry import profile_predictor


@pytest.fixture(scope="module")
def cortex():
    return profile_predictor("cortexA76")


@pytest.fixture(scope="module")
def space():
    return load_space("quadranet")


def test_default_space_builds_fast_then_loads_from_cache(space, cortex, tmp_path):
    started = time.perf_counter()
    table = build_lut(space, cortex, cache_dir=tmp_path)
    assert time.perf_counter() - started <= 10.0
    assert not table.from_cache
    assert table.ms.dtype == torch.float64
    assert tuple(table.ms.shape) == (space.num_layers, len(space.candidates))
    # identical (op, input shape) pairs are costed once: one shape per stage
    assert table.costed == len(space.depths) * len(space.candidates)
    again = build_lut(space, cortex, cache_dir=tmp_path)
    assert again.from_cache and again.key == table.key
    assert torch.equal(again.ms, table.ms) and again.fixed_ms == table.fixed_ms
    assert again.version == cortex.version and again.known_error == cortex.known_error


def test_table_agrees_with_whole_child_prediction(space, cortex, tmp_path):
    table = build_lut(space, cortex, cache_dir=tmp_path)
    rng = random.Random(0)
    for _ in range(2):
        ops = [rng.choice(space.candidates) for _ in space.layers]
        child = cortex.predict(space.build_child(ops), space.input_shape).latency_ms
        assert table.latency_of(ops) == pytest.approx(child, rel=1e-9)
    smallest = space.smallest_ops()
    assert table.min_ms() == pytest.approx(table.latency_of(smallest)) == table.fixed_ms
    assert table.max_ms() == pytest.approx(table.latency_of(["k7e4"] * space.num_layers))
    assert table.fixed_ms > 0 and table.max_ms() > table.min_ms()


def test_masked_space_marks_disallowed_ops(cortex, tmp_path):
    mbconv = load_space("proxyless_mbconv")
    table = build_lut(mbconv, cortex, cache_dir=tmp_path)
    assert torch.equal(table.allowed, mbconv.allowed_mask())
    assert table.ms[~table.allowed].isnan().all() and not table.ms[table.allowed].isnan().any()
    rng = random.Random(1)
    ops = [rng.choice(slot.ops) for slot in mbconv.layers]
    child = cortex.predict(mbconv.build_child(ops), mbconv.input_shape).latency_ms
    assert table.latency_of(ops) == pytest.approx(child, rel=1e-9)
    first = mbconv.layers[0]
    with pytest.raises(QnasError, match="not allowed"):
        table.latency_of(["zero"] + [slot.ops[0] for slot in mbconv.layers[1:]])
    assert "zero" not in first.ops


def test_cache_key_tracks_shape_and_device(space, cortex, tmp_path):
    base = build_lut(space, cortex, cache_dir=tmp_path)
    smaller = build_lut(space, cortex, input_shape="1x3x160x160", cache_dir=tmp_path)
    other = build_lut(space, profile_predictor("a100"), cache_dir=tmp_path)
    assert len({base.key, smaller.key, other.key}) == 3
    assert not smaller.from_cache and smaller.max_ms() < base.max_ms()
    assert other.source == "profile" and "unvalidated" in other.known_error


def test_save_load_roundtrip_and_corrupt_files(space, cortex, tmp_path):
    table = build_lut(space, cortex, cache_dir=tmp_path)
    path = table.save(tmp_path / "t.json")
    loaded = LatencyTable.load(path)
    assert torch.equal(loaded.ms, table.ms) and loaded.layer_names == table.layer_names
    assert loaded.input_shape == table.input_shape and loaded.candidates == table.candidates
    path.write_text("{not json")
    with pytest.raises(QnasError, match="corrupt"):
        LatencyTable.load(path)
    # a corrupt cache entry is rebuilt, not trusted
    (tmp_path / f"{table.key}.json").write_text("garbage")
    rebuilt = build_lut(space, cortex, cache_dir=tmp_path)
    assert not rebuilt.from_cache and torch.equal(rebuilt.ms, table.ms)


def test_a_space_given_as_a_yaml_file(cortex, tmp_path):
    yaml_path = tmp_path / "tiny.yaml"
    yaml_path.write_text("name: tiny\nmacro: quadranet\nwidth: 8\ndepths: [1, 1, 2, 1]\n"
                         "candidates: [k3e2, identity]\ninput_shape: [1, 3, 64, 64]\n")
    space = load_space(yaml_path)
    table = build_lut(str(yaml_path), cortex, cache_dir=tmp_path)
    assert table.space == "tiny" and table.layer_names == [slot.name for slot in space.layers]
    # identity costs nothing; each (op, layer input) pair is costed once: one shape per stage
    assert table.costed == 4 * 2 and table.ms[:, 1].eq(0).all() and table.ms[:, 0].gt(0).all()
    # the fixed part is the child with identity everywhere (stem, downsamples, head)
    identity_child = space.build_child(["identity"] * space.num_layers)
    assert table.fixed_ms == pytest.approx(
        cortex.predict(identity_child, (1, 3, 64, 64)).latency_ms)
    assert build_lut(yaml_path, cortex, cache_dir=tmp_path).from_cache


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("QNAS_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "lut"
    monkeypatch.delenv("QNAS_CACHE_DIR")
    assert default_cache_dir().parts[-3:] == (".cache", "qnas", "lut")
