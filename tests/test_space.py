"""Search spaces: the YAML is the single source; hashes are stable; the budgets bind."""
import pytest
import torch
import yaml

from qnas.errors import QnasError
from qnas.space import load_space
from qnas.nas.latency import table_view
from qnas.space import space_from_dict
from qnas.predictors import build_lut
from qnas.resources import data_dir

# the paper's budgets at the deployment shape (issue 4)
MISSION_BUDGETS_MS = {"cortexA76": 300.0, "myriadvpu": 30.0, "a100": 3.0}


def test_default_space_is_the_yaml():
    space = load_space()
    raw = yaml.safe_load((data_dir("search_spaces") / "quadranet.yaml").read_text())
    assert space.name == "quadranet" and space.macro == "quadranet"
    assert space.width == raw["width"] and space.depths == raw["depths"]
    assert space.candidates == ["k3e2", "k3e4", "k5e2", "k5e4", "k7e2", "k7e4", "identity"]
    assert space.input_shape == (1, 3, 224, 224)
    assert space.num_layers == sum(raw["depths"]) == len(space.layers)
    assert all(slot.ops == tuple(space.candidates) for slot in space.layers)


def test_hash_is_stable_and_tracks_content(tmp_path):
    first, second = load_space("quadranet"), load_space("quadranet")
    assert first.hash == second.hash and len(first.hash) == 16
    raw = yaml.safe_load((data_dir("search_spaces") / "quadranet.yaml").read_text())
    # key order and comments do not matter; content does
    path = tmp_path / "same.yaml"
    path.write_text(yaml.safe_dump(dict(reversed(list(raw.items())))))
    assert load_space(path).hash == first.hash
    path.write_text(yaml.safe_dump({**raw, "width": raw["width"] + 8}))
    assert load_space(path).hash != first.hash


@pytest.mark.parametrize("device", sorted(MISSION_BUDGETS_MS))
def test_budgets_bind_in_the_default_space(device, tmp_path):
    """The largest child exceeds the paper's budget and the smallest fits, from the LUTs."""
    space = load_space("quadranet")
    table = table_view(build_lut(space, device, cache_dir=tmp_path), space.allowed_mask())
    budget = MISSION_BUDGETS_MS[device]
    smallest, largest = table.min_ms(), table.max_ms()
    assert smallest < budget < largest, (device, smallest, budget, largest)
    # inside the range, not at an edge (a100: 3 ms lies at 10% of 0.37–26 ms, since eager
    # dispatch, ~33 µs a kernel, dominates the deep children)
    position = (budget - smallest) / (largest - smallest)
    assert 0.08 < position < 0.85, (device, position)


def test_proxyless_mbconv_space_matches_proxylessnas():
    space = load_space("proxyless_mbconv")
    assert space.macro == "mbconv"
    assert space.candidates == ["k3e3", "k3e6", "k5e3", "k5e6", "k7e3", "k7e6", "zero"]
    assert space.num_layers == 21
    for slot in space.layers:
        first_changes = slot.position == 0 and (slot.stride != 1 or slot.in_dim != slot.dim)
        assert ("zero" in slot.ops) == (not first_changes), slot
    # the 80 → 96 stage has stride 1 but changes width: no zero op either
    stage3 = [s for s in space.layers if s.stage == 3]
    assert stage3[0].stride == 1 and "zero" not in stage3[0].ops
    assert space.allowed_mask().sum().item() == 21 * 7 - 6


@pytest.mark.parametrize("name", ["quadranet", "proxyless_mbconv"])
def test_layer_input_shapes_are_what_the_layers_see(name):
    space = load_space(name)
    ops = [slot.ops[0] for slot in space.layers]          # no identity: every layer runs
    child = space.build_child(ops, num_classes=10, keep_identity=True).eval()
    seen = {}
    hooks = [child.get_submodule(space.layer_path(i)).register_forward_pre_hook(
        lambda module, args, i=i: seen.__setitem__(i, tuple(args[0].shape)))
        for i in range(space.num_layers)]
    shape = (1, 3, 64, 64)
    with torch.no_grad():
        assert child(torch.zeros(shape)).shape == (1, 10)
    for hook in hooks:
        hook.remove()
    assert [seen[i] for i in range(space.num_layers)] == space.layer_input_shapes(shape)


def test_children_drop_identity_layers_and_refuse_disallowed_ops():
    space = load_space("proxyless_mbconv")
    ops = space.smallest_ops()
    child = space.build_child(ops, num_classes=10)
    assert sum(len(stage) for stage in child.stages) == sum(
        1 for op in ops if op != "zero")
    bad = list(ops)
    bad[0] = "zero"
    with pytest.raises(QnasError, match="cannot be 'zero'"):
        space.build_child(bad)
    with pytest.raises(QnasError, match="not allowed"):
        space.build_layer_op(0, "zero")


def test_bad_space_files_are_one_line_errors(tmp_path):
    good = {"name": "t", "width": 8, "depths": [1, 1, 1, 1], "candidates": ["k3e2", "identity"]}
    for raw, match in [({**good, "macro": "resnet"}, "unknown macro"),
                       ({k: v for k, v in good.items() if k != "width"}, "missing keys"),
                       ({**good, "colour": 1}, "unknown keys"),
                       ({**good, "candidates": ["k3e2", "k4x"]}, "unknown layer op"),
                       ({**good, "candidates": ["k3e2"]}, "fewer than two"),
                       ({**good, "depths": [1, 1, 1]}, "4 stages")]:
        with pytest.raises(QnasError, match=match) as err:
            space_from_dict(raw)
        assert "\n" not in str(err.value)
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed")
    with pytest.raises(QnasError, match="not valid YAML"):
        load_space(path)
    with pytest.raises(QnasError, match="known spaces: .*proxyless_mbconv.*quadranet"):
        load_space("nope")
