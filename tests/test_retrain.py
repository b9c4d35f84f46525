"""``qnas retrain``: the recipe, run folder and checkpoints, resume, --init inherit, datasets,
and the refusals (one line, exit 2, nothing written). All on the tiny search of conftest."""
import json
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from qnas.cli import main
from qnas.data import load_dataset
from qnas.errors import QnasError
from qnas.nas.best import SCHEMA_VERSION, load_best
from qnas.nas.evaluator import epoch_loader, evaluate_top1
from qnas.nas.supernet import load_supernet
from qnas.train import RetrainConfig, load_retrained, retrain
from qnas.runtime.checkpoints import CheckpointStore
from qnas.train.retraining import BEST, LAST, LOG, SUMMARY, RetrainRun
from conftest import MIXED_OPS


def tiny(**changes) -> RetrainConfig:
    """Synthetic data of the tiny search (its seed: the same classes), one thread."""
    settings = dict(epochs=2, batch_size=32, data="synthetic", seed=3, threads=1)
    settings.update(changes)
    return RetrainConfig(**settings)



@pytest.fixture(scope="module")
def full_run(mixed_best, tmp_path_factory):
    """Two epochs with everything on (DropPath, EMA, augmentation), uninterrupted."""
    out = tmp_path_factory.mktemp("retrain") / "full"
    return retrain(mixed_best, tiny(ema=True, augment=True), out=out)


def test_retrain_writes_checkpoints_log_and_summary(full_run):
    result = full_run
    assert result.finished and result.out.is_dir()
    for name in (BEST, LOG, SUMMARY):
        assert (result.out / name).exists(), name
    newest, previous = CheckpointStore(result.out, prefix=LAST).paths()   # the newest two
    assert newest == result.last_path and previous.name < newest.name
    assert (result.out / (result.last_path.name + ".sha256")).exists()
    log = pd.read_csv(result.out / LOG)
    assert list(log["epoch"]) == [1, 2]
    for column in ("train_loss", "val_top1", "ema_top1", "lr", "seconds"):
        assert column in log.columns and log[column].notna().all(), column
    assert 0 <= result.top1 <= 100 and result.ema_top1 is not None
    assert result.best_top1 == log["ema_top1"].max()          # best.pt is chosen on the EMA
    summary = json.loads((result.out / SUMMARY).read_text())
    assert summary["val_top1"] == result.top1 and summary["dataset"] == "synthetic"
    assert summary["ops"] == MIXED_OPS and summary["config"]["drop_path_rate"] == 0.1
    assert summary["effective_lr"] == pytest.approx(RetrainConfig().lr_base * 32 / 4096)
    # the checkpoints load back into networks without best.json
    model = load_retrained(result.last_path, ema=False)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    state = torch.load(result.last_path, weights_only=False)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state["model"][name]), name
    ema_model = load_retrained(result.last_path)               # default: the EMA's weights
    assert any(not torch.equal(a, b) for a, b in zip(ema_model.state_dict().values(),
                                                     model.state_dict().values()))
    best_state = torch.load(result.best_path, weights_only=False)
    assert best_state["epoch"] == result.best_epoch and best_state["best_top1"] == result.best_top1


def test_resume_after_one_epoch_ends_like_an_uninterrupted_run(full_run, mixed_best, tmp_path):
    out = tmp_path / "resumed"
    config = tiny(ema=True, augment=True)
    first = retrain(mixed_best, config, out=out, stop_after_epochs=1)
    assert not first.finished and len(first.log) == 1 and not (out / SUMMARY).exists()
    # a folder holding a run is refused without --resume; --resume needs the same settings
    with pytest.raises(QnasError, match="already holds a retraining run"):
        retrain(mixed_best, config, out=out)
    with pytest.raises(QnasError, match="other settings .*lr"):
        retrain(mixed_best, tiny(ema=True, augment=True, lr=1.0), out=out,
                resume=True)
    with pytest.raises(QnasError, match="nothing to resume"):
        retrain(mixed_best, config, out=tmp_path / "empty", resume=True)
    assert not (tmp_path / "empty").exists()

    second = retrain(mixed_best, config, out=out, resume=True)
    assert second.finished
    assert second.top1 == full_run.top1 and second.ema_top1 == full_run.ema_top1
    columns = ["epoch", "lr", "train_loss", "train_top1", "val_top1", "ema_top1"]
    pd.testing.assert_frame_equal(second.log[columns], full_run.log[columns])
    resumed = torch.load(CheckpointStore(out, prefix=LAST).paths()[0], weights_only=False)
    uninterrupted = torch.load(full_run.last_path, weights_only=False)
    for part in ("model", "ema"):
        for name, value in uninterrupted[part].items():
            assert torch.equal(resumed[part][name], value), (part, name)


def test_init_inherit_starts_from_the_supernet_weights(mixed_best, tmp_path):
    best = load_best(mixed_best)
    supernet = load_supernet(best.supernet_checkpoint, space=best.space)
    expected = supernet.child_state_dict(best.ops)
    # a vanishing learning rate: the trained child is still (to 1e-6) the inherited one
    result = retrain(mixed_best, tiny(epochs=1, init="inherit", lr=1e-9), out=tmp_path / "inherit")
    model = load_retrained(result.last_path)
    state = model.state_dict()
    assert set(state) == set(expected)
    block = "stages.1.0.spatial.weight"                    # the k5e2 of stage 1
    assert block in expected
    for name in ("stem.0.weight", block, "stages.3.0.mlp.pw1.weight", "head.fc.weight"):
        assert name in expected, name
        assert torch.allclose(state[name], expected[name], atol=1e-6), name
    # ... and it scores what the supernet's child scores on the same validation split
    data = load_dataset("synthetic", resolution=32, seed=3)
    inherited = evaluate_top1(supernet.child(best.ops), epoch_loader(data.val, 256, 3, 0, 0,
                                                                     shuffle=False))
    assert result.top1 == pytest.approx(inherited)
    scratch = retrain(mixed_best, tiny(epochs=1, lr=1e-9), out=tmp_path / "scratch")
    fresh = load_retrained(scratch.last_path).state_dict()
    assert not torch.allclose(fresh[block], expected[block], atol=1e-3)


def _write_cifar(root, per_batch=24, seed=0):
    rng = np.random.default_rng(seed)

    def batch(n):
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "labels": [int(v) for v in rng.integers(0, 10, n)], "batch_label": "tiny"}

    root.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as handle:
            pickle.dump(batch(per_batch), handle)
    return root


def test_cifar10_folder(tiny_search, tmp_path, capsys):
    data = _write_cifar(tmp_path / "cifar")
    out = tmp_path / "run"
    main(["retrain", str(tiny_search.best_path), "--data", f"cifar10:{data}", "--epochs", "1",
          "--out", str(out), "--threads", "1", "--quiet"])
    printed = capsys.readouterr().out
    assert "validation top-1:" in printed and "cifar10 (24 images)" in printed
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["dataset"] == "cifar10" and summary["train_size"] == 120
    assert summary["config"]["augment"] is True          # the CIFAR recipe: crop + flip
    assert CheckpointStore(out, prefix=LAST).exists() and (out / BEST).exists()


def test_default_out_folder_is_next_to_best_json(tiny_search, tmp_path):
    best = tmp_path / "copy" / "best.json"
    best.parent.mkdir()
    shutil.copy(tiny_search.best_path, best)
    result = retrain(best, tiny(epochs=1))
    assert result.out == best.parent / "retrain" and result.last_path.exists()


def test_the_recipe_is_adamw_cosine_smoothing_and_clipping(tiny_search):
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.scheduler import CosineLRScheduler

    config = RetrainConfig()
    assert (config.weight_decay, config.clip_grad, config.smoothing) == (0.05, 5.0, 0.1)
    assert config.lr is None
    assert config.effective_lr == pytest.approx(config.lr_base * config.batch_size / 4096)
    best = load_best(tiny_search.best_path)
    config = tiny(drop_path_rate=0.0).resolved(best)
    data = load_dataset("synthetic", resolution=32, seed=3)
    run = RetrainRun(best, config, data, tiny_search.out / "unused", echo=lambda _: None)
    assert not (tiny_search.out / "unused").exists()

    # AdamW, wd 0.05 on weights, none on biases / norms / layer scale, lr-base × batch / 4096
    assert type(run.optimizer) is torch.optim.AdamW
    decays = {group["weight_decay"] for group in run.optimizer.param_groups}
    assert decays == {0.0, 0.05}
    for group in run.optimizer.param_groups:
        assert all((p.ndim > 1) == (group["weight_decay"] == 0.05) for p in group["params"])
    assert run.optimizer.defaults["lr"] == pytest.approx(config.effective_lr)

    # linear warm-up over the first epoch, then cosine down to min_lr
    assert isinstance(run.scheduler, CosineLRScheduler)
    lrs = []
    for step in range(run.total_steps + 1):
        run.scheduler.step_update(step)
        lrs.append(run.optimizer.param_groups[0]["lr"])
    warm = run.steps_per_epoch
    assert lrs[0] == pytest.approx(config.warmup_lr)
    assert np.all(np.diff(lrs[:warm + 1]) > 0) and lrs[warm] == pytest.approx(config.effective_lr)
    assert np.all(np.diff(lrs[warm:]) <= 0) and lrs[-1] == pytest.approx(config.min_lr, abs=1e-8)

    # label smoothing 0.1: timm's loss, the same numbers as torch's label_smoothing
    assert isinstance(run.criterion, LabelSmoothingCrossEntropy) and run.criterion.smoothing == 0.1
    logits, labels = torch.randn(8, 4), torch.randint(0, 4, (8,))
    assert run.criterion(logits, labels) == pytest.approx(
        F.cross_entropy(logits, labels, label_smoothing=0.1).item(), rel=1e-5)

    # gradient clipping at norm 5: a raw gradient far larger than 5 is clipped to norm 5
    images, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 4, (16,))
    with torch.no_grad():
        run.model.head.fc.weight.mul_(1e3)          # large logits: large gradients upstream
    run.model.zero_grad()
    run.criterion(run.model(images), labels).backward()
    raw = torch.norm(torch.stack([p.grad.norm() for p in run.model.parameters()
                                  if p.grad is not None]))
    assert raw > 10
    run.step((images, labels), epoch=0, index=0)
    clipped = torch.norm(torch.stack([p.grad.norm() for p in run.model.parameters()
                                      if p.grad is not None]))
    assert clipped == pytest.approx(5.0, rel=1e-4)


def _refuse(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qnas: error:") and "\n" not in err and "Traceback" not in err
    return err


def _variant(tiny_search, tmp_path, kind):
    raw = json.loads(tiny_search.best_path.read_text())
    path = tmp_path / f"{kind}.json"
    if kind == "corrupt":
        path.write_text(tiny_search.best_path.read_text()[:-50])
    elif kind == "newer":
        path.write_text(json.dumps({**raw, "schema_version": SCHEMA_VERSION + 1}))
    elif kind == "foreign":       # another space: the default quadranet, with tinytest's hash
        path.write_text(json.dumps({**raw, "space": {**raw["space"], "name": "quadranet",
                                                     "source": ""}}))
    return path


@pytest.mark.parametrize("kind, needle", [("corrupt", "corrupt"), ("newer", "newer"),
                                          ("foreign", "made for space"),
                                          ("missing", "does not exist")])
def test_bad_best_json_is_refused_in_one_line_without_files(kind, needle, tiny_search, tmp_path,
                                                            capsys):
    best = _variant(tiny_search, tmp_path, kind)
    out = tmp_path / "out"
    err = _refuse(["retrain", str(best), "--data", "synthetic", "--out", str(out), "--quiet"],
                  capsys)
    assert needle in err and not out.exists()


@pytest.mark.parametrize("argv, needle", [
    (["--data", "cifar10:/no/such/folder"], "does not exist"),
    (["--data", "imagefolder"], "needs a path"),
    (["--data", "mnist"], "unknown dataset"),
    (["--data", "digits", "--init", "inherit"], "trained on 4 classes"),
    (["--epochs", "0"], "epochs must be"),
    (["--resolution", "16"], "larger --resolution"),
    (["--resume"], "nothing to resume"),
])
def test_bad_options_are_refused_in_one_line_without_files(argv, needle, tiny_search, tmp_path,
                                                           capsys):
    out = tmp_path / "out"
    command = ["retrain", str(tiny_search.best_path), "--data", "synthetic", "--out", str(out),
               "--quiet", "--threads", "1", *argv]
    err = _refuse(command, capsys)
    assert needle in err and not out.exists()


def test_inherit_without_the_supernet_checkpoint_is_refused(tiny_search, tmp_path, capsys):
    best = tmp_path / "alone" / "best.json"
    best.parent.mkdir()
    shutil.copy(tiny_search.best_path, best)             # without checkpoint.pt beside it
    err = _refuse(["retrain", str(best), "--data", "synthetic", "--init", "inherit",
                   "--quiet"], capsys)
    assert "supernet checkpoint" in err and "--init scratch" in err
    assert not (best.parent / "retrain").exists()


def test_load_retrained_refuses_other_files(tiny_search, tmp_path):
    with pytest.raises(QnasError, match="not a qnas retraining checkpoint"):
        load_retrained(load_best(tiny_search.best_path).supernet_checkpoint)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(QnasError, match="not a readable"):
        load_retrained(bad)


def test_search_and_retrain_share_one_loop_and_save_every_rng(full_run, tiny_search):
    from qnas.nas.search import SearchRun
    from qnas.runtime.loop import ResumableRun

    for run_class in (SearchRun, RetrainRun):
        assert issubclass(run_class, ResumableRun)
        overridden = {"run", "save", "restore", "interrupt", "begin", "checkpoint"} & \
            set(vars(run_class))
        assert not overridden, (run_class.__name__, overridden)
    retrain_state = torch.load(full_run.last_path, weights_only=False)
    search_state = torch.load(CheckpointStore(tiny_search.out).paths()[0], weights_only=False)
    # the same generators in both, CUDA's included (None where no GPU is visible)
    assert set(retrain_state["rng"]) == set(search_state["rng"]) == {"torch", "numpy", "python",
                                                                     "cuda"}
    if torch.cuda.is_available():
        assert len(retrain_state["rng"]["cuda"]) == torch.cuda.device_count()
    else:
        assert retrain_state["rng"]["cuda"] is None
    assert json.loads((full_run.out / "config.json").read_text())["ema"] is True
