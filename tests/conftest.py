"""Shared test setup."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded():
    # every test draws the same random numbers whatever ran before it
    torch.manual_seed(0)


@pytest.fixture
def single_thread():
    """Run torch on one thread: on the 2 shared cores of the test machines, two OpenMP threads
    wait on each other whenever either is descheduled, which made small ops ~20× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# A tiny search space and a finished tiny search, shared by the tests of everything that starts
# from a best.json (export, retrain, latency --measure, reports). Built once per session.
TINY_SPACE = {"name": "tinytest", "width": 8, "depths": [1, 1, 1, 1],
              "candidates": ["k3e2", "k5e2", "identity"], "input_shape": [1, 3, 224, 224]}


@pytest.fixture(scope="session")
def tiny_search(tmp_path_factory):
    """A finished search on the tiny space (synthetic data, 4 classes): returns the
    :class:`qnas.nas.search.SearchResult`; ``result.best_path`` is its best.json."""
    import yaml

    from qnas.nas.config import OptimConfig
    from qnas.nas.config import SearchConfig
    from qnas.nas.search import search

    root = tmp_path_factory.mktemp("tiny-search")
    space = root / "tiny.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    config = SearchConfig(device="cortexA76", latency="1.2ms", space=str(space), data="synthetic",
                          epochs=2, warmup_epochs=1, batch_size=32, loss="hinge", seed=3,
                          optim=OptimConfig(arch_lr=0.05, arch_every=2),
                          lut_cache_dir=str(root / "lut"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return search(config, out=root / "run")
    finally:
        torch.set_num_threads(before)


# blocks in a tiny-space child: the tiny search's own child, under its tight budget, is all
# identity
MIXED_OPS = ["k3e2", "k5e2", "identity", "k5e2"]


@pytest.fixture(scope="session")
def mixed_best(tiny_search, tmp_path_factory):
    """The tiny search's best.json with blocks in it: same space and supernet checkpoint, ops
    MIXED_OPS."""
    import json

    from qnas.nas.best import load_best

    raw = json.loads(tiny_search.best_path.read_text())
    raw["ops"] = MIXED_OPS
    raw["layers"] = [{**layer, "op": op} for layer, op in zip(raw["layers"], MIXED_OPS)]
    raw["supernet_checkpoint"] = str(load_best(tiny_search.best_path).supernet_checkpoint)
    path = tmp_path_factory.mktemp("mixed") / "best.json"
    path.write_text(json.dumps(raw))
    return path


def exit_code(argv) -> int:
    """Run the qnas CLI in-process; its exit code (0 when it returns)."""
    from qnas.cli import main

    try:
        main(argv)
    except SystemExit as exit_:
        return exit_.code or 0
    return 0
