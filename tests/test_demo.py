"""The demo's flow (search → export → retrain → latency) on the tiny space, and that running it
again finishes instead of repeating."""
import yaml

from qnas.demo import run_demo
from qnas.nas.config import SearchConfig
from qnas.train import RetrainConfig

from conftest import TINY_SPACE


def test_demo_flow_writes_every_artefact_and_a_rerun_skips_them(tmp_path, single_thread):
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    settings = dict(search_config=SearchConfig(device="cortexA76", latency="1.2ms",
                                               space=str(space), data="synthetic", epochs=1,
                                               warmup_epochs=1, batch_size=32),
                    retrain_config=RetrainConfig(data="synthetic", epochs=1, batch_size=32),
                    measure_shape=(1, 3, 32, 32), progress=False)
    messages = []
    result = run_demo(tmp_path / "demo", echo=messages.append, **settings)
    assert result.best_path.exists()
    for name in ("child.pt", "child.onnx", "child.torchscript.pt", "MODEL_CARD.md"):
        assert (result.export_dir / name).exists(), name
    assert (result.retrain_dir / "retrain.json").exists()
    assert set(result.seconds) == {"search", "export", "retrain", "latency"}
    facts = result.facts
    assert facts["predicted_ms"] <= facts["budget_ms"] == 1.2
    assert 0 <= facts["retrained_top1"] <= 100
    assert facts["measured_pytorch_ms"] > 0 and facts["measured_onnxruntime_ms"] > 0
    again = run_demo(tmp_path / "demo", echo=messages.append, **settings)
    assert set(again.seconds) == {"latency"}                 # the rest was already there
    assert sum("skipped" in m for m in messages) == 3
