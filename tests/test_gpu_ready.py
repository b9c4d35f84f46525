"""The GPU-ready training paths, driven on the CPU: --precision (bf16 autocast; fp16 with a real
GradScaler), --channels-last, --compile, the loaders' workers, and running out of memory (one
line, exit 2, a checkpoint that --resume finishes). Tiny spaces, tiny images, short runs."""
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import TensorDataset

from qnas.errors import QnasError
from qnas.nas.config import OptimConfig, SearchConfig
from qnas.nas.evaluator import epoch_loader
from qnas.nas.proxyless import ProxylessStrategy
from qnas.nas.search import SearchRun, search
from qnas.nas.supernet import MixedOp, Supernet
from qnas.nn.quadra import QuadraConv2d
from qnas.runtime.checkpoints import CheckpointStore
from qnas.runtime.precision import (
    Precision,
    check_precision,
    loader_settings,
    resolve_precision,
    worker_count,
)
from qnas.space import load_space
from qnas.train import RetrainConfig, retrain
from qnas.train.retraining import LAST, RetrainRun
from conftest import exit_code

TINY = {"name": "tinytest", "width": 8, "depths": [1, 1, 1, 1],
        "candidates": ["k3e2", "k5e2", "identity"], "input_shape": [1, 3, 224, 224]}
OOM_TEXT = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
            "79.1 GiB of which 1.2 GiB is free.")


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu-ready") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def tiny_search(space, **changes) -> SearchConfig:
    settings = {"device": "cortexA76", "latency": "1.2ms", "space": str(space),
                "data": "synthetic", "epochs": 1, "warmup_epochs": 1, "batch_size": 32,
                "loss": "hinge", "seed": 3, "optim": OptimConfig(arch_lr=0.05, arch_every=2),
                "derive_candidates": 2, "threads": 1}
    settings.update(changes)
    return SearchConfig(**settings)


def tiny_retrain(**changes) -> RetrainConfig:
    settings = {"epochs": 2, "batch_size": 32, "data": "synthetic", "seed": 3, "threads": 1}
    settings.update(changes)
    return RetrainConfig(**settings)



# --- precision ---------------------------------------------------------------------------------

def test_precision_names_resolve_and_refuse_in_one_line():
    assert check_precision("BF16") == "bf16" and check_precision("float16") == "fp16"
    with pytest.raises(QnasError, match="unknown precision 'int8'; use one of auto, fp32"):
        check_precision("int8")
    # on a CPU auto stays fp32 (every CPU result as before); bf16 and fp16 run as asked
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    fp16 = Precision("fp16", "cpu")
    assert fp16.scaled and fp16.mixed and "slow" in fp16.note()
    assert not Precision("bf16", "cpu").scaled and Precision("bf16", "cpu").note() is None
    assert Precision("auto", "cpu").describe() == "fp32 (--precision auto)"
    if not torch.cuda.is_available():           # no GPU: auto on "cuda" cannot pick bf16
        assert resolve_precision("auto", "cuda") == "fp32"
    with pytest.raises(QnasError, match="unknown setting|unknown precision"):
        SearchConfig(precision="tf32")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("memory_efficient", [False, True])
def test_quadraconv_hand_written_backward_under_autocast(dtype, memory_efficient):
    """Autocast hands the hand-written backward 16-bit activations: it must still run (before
    the cast in QuadraConv2d.forward oneDNN refused the mixed dtypes) and agree with fp32."""
    torch.manual_seed(0)
    conv = QuadraConv2d(8, 3, memory_efficient=memory_efficient)
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    reference = conv(x)
    reference.square().sum().backward()
    expected = (x.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone())
    x.grad = conv.weight.grad = conv.bias.grad = None
    with torch.autocast("cpu", dtype=dtype):
        y = conv(x)
    assert y.dtype == dtype
    y.float().square().sum().backward()
    for got, want in zip((x.grad, conv.weight.grad, conv.bias.grad), expected):
        assert got.dtype == torch.float32            # fp32 weights get fp32 gradients
        assert torch.allclose(got, want, rtol=0.05, atol=0.05 * want.abs().max().item())


def test_alpha_gradient_under_bf16_and_fp16_is_finite_fp32_and_agrees(space):
    """The arch step's forward runs under autocast (16-bit outputs recorded), but the α
    gradient is formed in fp32/fp64: finite, fp32, and nearly the fp32 step's."""
    torch.manual_seed(0)
    net = Supernet(load_space(str(space)), 4)
    images, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 4, (16,))
    seen = []
    hooks = [op.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
             for op in net.modules() if isinstance(op, MixedOp)]
    grads = {}
    for name in ("fp32", "bf16", "fp16"):
        strategy = ProxylessStrategy(net, seed=0, precision=Precision(name, "cpu"))
        groups, valid = strategy.sample_group(3)
        seen.clear()
        grads[name], _stats = strategy.arch_gradient(images, labels, groups, valid)
        if name == "fp32":
            assert set(seen) == {torch.float32}
        else:      # the blocks' outputs are 16-bit (an identity passes its fp32 input on)
            assert {"bf16": torch.bfloat16, "fp16": torch.float16}[name] in seen
        assert grads[name].dtype == torch.float32 and torch.isfinite(grads[name]).all()
        assert grads[name].abs().sum() > 0
    for hook in hooks:
        hook.remove()
    for name in ("bf16", "fp16"):
        cosine = F.cosine_similarity(grads["fp32"].flatten(), grads[name].flatten(), dim=0)
        assert cosine > 0.99, (name, float(cosine))


def test_search_in_bf16_with_channels_last_runs_end_to_end(space, tmp_path):
    result = search(tiny_search(space, precision="bf16", channels_last=True,
                                lut_cache_dir=str(tmp_path / "lut")), out=tmp_path / "run")
    assert result.finished and result.best_path.exists()
    state = torch.load(CheckpointStore(tmp_path / "run").paths()[0], weights_only=False)
    assert torch.isfinite(state["supernet"]["alpha"]).all()
    assert state["precision"] == {"name": "bf16", "scaler": None}
    assert (result.log["arch_steps"] > 0).any() and result.log["arch_loss"].notna().any()
    assert "training on cpu in bf16 autocast, channels-last" in (tmp_path / "run" /
                                                                 "run.log").read_text()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["precision"] == "bf16" and config["channels_last"] is True


def test_precision_is_not_compared_on_resume_and_fp16_keeps_its_scaler(space, tmp_path):
    """A run stopped in fp32 resumes in fp16 (what an out-of-memory line suggests); the switch
    is noted; the fp16 checkpoints carry the GradScaler's state."""
    out = tmp_path / "run"
    config = tiny_search(space, lut_cache_dir=str(tmp_path / "lut"))
    first = search(config, out=out, stop_after_epochs=1)
    assert not first.finished
    assert "precision" not in config.identity() and "channels_last" not in config.identity()
    resumed = search(tiny_search(space, precision="fp16", lut_cache_dir=str(tmp_path / "lut")),
                     out=out, resume=True)
    assert resumed.finished
    log = (out / "run.log").read_text()
    assert "the checkpoint was trained in fp32, the run continues in fp16" in log
    assert "--precision fp16 on a CPU is slow" in log
    state = torch.load(CheckpointStore(out).paths()[0], weights_only=False)
    assert state["precision"]["name"] == "fp16"
    assert state["precision"]["scaler"]["scale"] > 0       # the scaler ran the weight steps
    # another seed is still refused: precision is left out of the comparison, nothing else
    with pytest.raises(QnasError, match="other settings .*seed"):
        search(tiny_search(space, seed=4, precision="bf16",
                           lut_cache_dir=str(tmp_path / "lut")), out=out, resume=True)


# --- retrain: precision, channels_last, compile ----------------------------------------------

def test_retrain_in_bf16_channels_last_and_fp16(mixed_best, tmp_path):
    plain = retrain(mixed_best, tiny_retrain(epochs=1), out=tmp_path / "fp32")
    bf16 = retrain(mixed_best, tiny_retrain(epochs=1, precision="bf16", channels_last=True),
                   out=tmp_path / "bf16")
    fp16 = retrain(mixed_best, tiny_retrain(epochs=1, precision="fp16"), out=tmp_path / "fp16")
    for result in (plain, bf16, fp16):
        assert result.finished and result.summary_path.exists()
    # the same training, computed in other arithmetic: close, not equal
    for result in (bf16, fp16):
        assert result.log["train_loss"].iloc[0] == pytest.approx(
            plain.log["train_loss"].iloc[0], rel=0.02)
        assert result.log["train_loss"].iloc[0] != plain.log["train_loss"].iloc[0]
    state = torch.load(fp16.last_path, weights_only=False)
    assert state["precision"]["name"] == "fp16" and state["precision"]["scaler"]["scale"] > 0
    summary = json.loads(bf16.summary_path.read_text())
    assert summary["config"]["precision"] == "bf16" and summary["config"]["channels_last"]


def test_retrain_compile_trains_like_eager(mixed_best, tmp_path):
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("gcc")):
        pytest.skip("torch.compile (inductor) needs a C++ compiler on a CPU; none is installed")
    eager = retrain(mixed_best, tiny_retrain(epochs=1), out=tmp_path / "eager")
    compiled = retrain(mixed_best, tiny_retrain(epochs=1, compile=True), out=tmp_path / "compiled")
    assert compiled.finished
    assert compiled.log["train_loss"].iloc[0] == pytest.approx(eager.log["train_loss"].iloc[0],
                                                               rel=1e-4)
    assert "torch.compile" in (tmp_path / "compiled" / "run.log").read_text()
    # the checkpoint holds the child's own weights (no compiler wrapper in the names)
    state = torch.load(compiled.last_path, weights_only=False)
    assert state["model"].keys() == torch.load(eager.last_path, weights_only=False)[
        "model"].keys()


def test_cli_options_come_from_the_configs(capsys):
    for command in (["search"], ["train-supernet"], ["retrain", "x.json"]):
        assert exit_code([*command, "--precision", "bf16", "--channels-last", "--workers", "2",
                           "--print-config"]) == 0
        config = json.loads(capsys.readouterr().out)
        assert (config["precision"], config["channels_last"], config["workers"]) == \
            ("bf16", True, 2)
    assert exit_code(["retrain", "x.json", "--compile", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["compile"] is True
    assert exit_code(["search", "--precision", "fp8", "--print-config"]) == 2
    assert "fp8" in capsys.readouterr().err


# --- loaders -------------------------------------------------------------------------------------

def test_worker_processes_give_the_same_batches():
    data = TensorDataset(torch.arange(40.0).view(40, 1), torch.arange(40))
    plain = [batch[1].tolist() for batch in epoch_loader(data, 8, 1, 2, 0)]
    loader = epoch_loader(data, 8, 1, 2, 0, loading={"workers": 2, "pin_memory": False})
    assert loader.num_workers == 2
    assert [batch[1].tolist() for batch in loader] == plain
    # the CPU path adds nothing; in-memory data needs no workers, files do
    assert loader_settings("cpu") == {}
    assert worker_count(data, None) == 0 and worker_count(data, 3) == 3
    assert epoch_loader(data, 8, 1, 2, 0).num_workers == 0


# --- out of memory -------------------------------------------------------------------------------

def _fail_in_epoch(cls, monkeypatch, epoch: int, step: int = 0, error=None):
    """``cls.step`` raises ``error`` (default: CUDA's out-of-memory error) at (epoch, step)."""
    original = cls.step

    def step_or_fail(self, batch, at_epoch, index):
        if (at_epoch, index) == (epoch, step):
            raise error if error is not None else torch.OutOfMemoryError(OOM_TEXT)
        return original(self, batch, at_epoch, index)

    monkeypatch.setattr(cls, "step", step_or_fail)


def test_out_of_memory_in_retrain_is_one_line_and_resume_finishes(mixed_best, tmp_path,
                                                                   monkeypatch, capsys):
    full = retrain(mixed_best, tiny_retrain(), out=tmp_path / "full")
    out = tmp_path / "oom"
    argv = ["retrain", str(mixed_best), "--out", str(out), "--epochs", "2", "--batch-size",
            "32", "--data", "synthetic", "--seed", "3", "--threads", "1", "-q"]
    with monkeypatch.context() as patch:
        _fail_in_epoch(RetrainRun, patch, epoch=1, step=1)
        assert exit_code(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    checkpoint = CheckpointStore(out, prefix=LAST).paths()[0]
    assert err[0] == (
        f"qnas: error: ran out of CPU memory (tried to allocate 2.00 GiB) in a training step of "
        f"the retraining run at epoch 2, step 2, batch 32 per process; the last good "
        f"checkpoint is {checkpoint}: continue it with --resume --out {out} --precision bf16 "
        f"(half the activation memory), or start a new --out with a smaller --batch-size")
    assert err[0].removeprefix("qnas: error: ") in (out / "run.log").read_text()
    # the one-line remedy works: resume (here in bf16) and finish
    assert exit_code([*argv, "--resume", "--precision", "bf16"]) == 0
    assert json.loads((out / "retrain.json").read_text())["val_top1"] >= 0
    # with the same precision the resumed run ends exactly where an uninterrupted one does
    shutil.rmtree(out)
    with monkeypatch.context() as patch:
        _fail_in_epoch(RetrainRun, patch, epoch=1, step=1)
        with pytest.raises(QnasError, match="ran out of CPU memory"):
            retrain(mixed_best, tiny_retrain(), out=out)
    resumed = retrain(mixed_best, tiny_retrain(), out=out, resume=True)
    drop = ["seconds"]
    assert resumed.log.drop(columns=drop).equals(full.log.drop(columns=drop))


def test_out_of_memory_in_a_search_and_in_its_first_epoch(space, tmp_path, monkeypatch):
    config = tiny_search(space, lut_cache_dir=str(tmp_path / "lut"))
    full = search(config, out=tmp_path / "full")
    out = tmp_path / "oom"
    with monkeypatch.context() as patch:
        _fail_in_epoch(SearchRun, patch, epoch=1, step=2)    # in the search phase
        with pytest.raises(QnasError) as caught:
            search(config, out=out)
    message = str(caught.value)
    assert message.startswith("ran out of CPU memory (tried to allocate 2.00 GiB) in a training "
                              "step of the search at epoch 2, step 3, batch 32 per process")
    assert "\n" not in message and "--precision bf16" in message
    resumed = search(config, out=out, resume=True)
    assert resumed.best["ops"] == full.best["ops"]
    assert resumed.best["val_top1"] == full.best["val_top1"]
    # in the first epoch nothing can be resumed yet: say so; other errors pass unchanged
    with monkeypatch.context() as patch:
        _fail_in_epoch(SearchRun, patch, epoch=0, step=0)
        with pytest.raises(QnasError, match="no checkpoint was written yet: start again with a "
                                            "smaller --batch-size or --precision bf16$"):
            search(config, out=tmp_path / "first")
    with monkeypatch.context() as patch:
        _fail_in_epoch(SearchRun, patch, epoch=0, step=0, error=RuntimeError("a bug"))
        with pytest.raises(RuntimeError, match="^a bug$"):
            search(config, out=tmp_path / "bug")
    # the CPU allocator's failure is recognised too, and a bf16 run is not told to use bf16
    with monkeypatch.context() as patch:
        _fail_in_epoch(SearchRun, patch, epoch=0, step=0, error=RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 1099511627776 bytes."))
        with pytest.raises(QnasError, match="^ran out of CPU memory .*smaller --batch-size$"):
            search(tiny_search(space, precision="bf16", lut_cache_dir=str(tmp_path / "lut")),
                   out=tmp_path / "cpu-alloc")
