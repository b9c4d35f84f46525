"""The refined kernel model (fusion, size exponent, dispatch floor), nn-Meter's view of a conv,
and the fit's out-of-sample checks, on small real modules (no mocks)."""
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from qnas.errors import QnasError
from qnas.predictors import decompose, get
from qnas.predictors.calibrate import (
    TimedModel,
    calibrate_measured,
    nnmeter_view,
    read_measurements,
    reference_latencies,
)
from qnas.predictors.profile import ProfileModel, ProfilePredictor, load_profile, profile_path

CONV_BN_RELU = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
FUSION = {"batchnorm": ["conv", "pwconv", "dwconv", "gconv", "linear"],
          "relu": ["conv", "pwconv", "dwconv", "gconv", "linear", "add", "batchnorm"]}


def profile(fusion=None, **conv) -> dict:
    return {"device": "toy", "source": "test", "version": "t", "known_error": "none",
            "fusion": fusion,
            "op_classes": {"conv": "conv", "pwconv": "conv", "dwconv": "conv", "default": "memory"},
            "classes": {"conv": {"peak_gflops": 10.0, "bandwidth_gbps": 10.0, "overhead_us": 5.0,
                                 **conv},
                        "memory": {"bandwidth_gbps": 10.0, "overhead_us": 5.0}}}


def test_mobile_profiles_fold_batchnorm_and_relu_into_the_conv():
    kernels = decompose(CONV_BN_RELU, (1, 8, 16, 16))
    assert [k.op for k in kernels] == ["conv", "batchnorm", "relu"]
    folded = get("cortexA76").predict_kernels(kernels).kernels
    assert folded["ms"].tolist()[1:] == [0.0, 0.0] and folded["ms"].iloc[0] > 0
    # eager PyTorch on a GPU runs all three
    assert (get("h100").predict_kernels(kernels).kernels["ms"] > 0).all()


def test_fusion_needs_the_producer_and_its_only_reader():
    class TwoReaders(nn.Module):           # the conv's output is read by the BN and the add
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    model = ProfileModel(profile()["op_classes"], profile()["classes"], fusion=FUSION)
    kernels = decompose(TwoReaders(), (1, 4, 8, 8))
    assert [k.op for k in kernels] == ["conv", "batchnorm", "add"]
    assert not model.fused(kernels).any()
    # a standalone BN (its input is the network's) stays; the ReLU after it folds into it
    standalone = decompose(nn.Sequential(nn.BatchNorm2d(4), nn.ReLU()), (1, 4, 8, 8))
    assert model.fused(standalone).tolist() == [False, True]
    # kernels built by hand have no producer records: nothing folds
    bare = [k.__class__(k.op, k.flops, k.bytes) for k in decompose(CONV_BN_RELU, (1, 8, 8, 8))]
    assert not model.fused(bare).any()


def test_flops_exponent_and_dispatch_floor():
    flops = np.array([1e6, 1e8, 1e10])
    nbytes = np.zeros(3)
    index = np.zeros(3, dtype=np.int64)
    raw = profile(flops_exponent=0.5, flops_reference_mflop=100.0)
    model = ProfileModel(raw["op_classes"], raw["classes"])
    ms = model.cost(index, flops, nbytes) - 5e-3
    # at the reference size the peak holds; 100x fewer FLOPs take 10x (not 100x) less time
    assert ms[1] == pytest.approx(1e8 / 1e7)
    assert ms[0] == pytest.approx(ms[1] / 10) and ms[2] == pytest.approx(ms[1] * 10)
    floor = profile(dispatch_us=40.0)
    model = ProfileModel(floor["op_classes"], floor["classes"])
    assert model.cost(index, flops, nbytes).tolist() == pytest.approx([0.105, 10.005, 1000.005])
    assert model.cost(index, np.array([1.0] * 3), nbytes).tolist() == pytest.approx([0.04] * 3)


def test_bad_profile_constants_are_one_line_errors():
    for bad in ({"flops_exponent": 0.9}, {"dispatch_us": "fast"}, {"peak_gflops": -1.0}):
        raw = profile(**bad)
        with pytest.raises(QnasError, match="class 'conv'") as err:
            ProfilePredictor("toy", profile=raw)
        assert "\n" not in str(err.value)
    with pytest.raises(QnasError, match="fusion"):
        ProfilePredictor("toy", profile={**profile(), "fusion": {"relu": "conv"}})


def test_nnmeter_view_prices_convs_by_their_width():
    net = nn.Sequential(nn.Conv2d(8, 8, (1, 7), padding=(0, 3)), nn.Conv2d(8, 8, (7, 1), padding=(3, 0)),
                        nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.Conv2d(8, 8, 3, padding=1))
    true = decompose(net, (1, 8, 12, 12))
    seen = nnmeter_view(true)
    ratios = [s.flops / t.flops for s, t in zip(seen, true)]
    assert ratios == [7.0, 1 / 7, 4.0, 1.0]      # 1x7 -> 7x7, 7x1 -> 1x1, grouped -> dense
    assert [s.op for s in seen] == [t.op for t in true] and true[0].flops != seen[0].flops


def test_reference_models_carry_families():
    table = reference_latencies("cortexA76")
    assert table["family"].nunique() == 7 and table["family"].notna().all()


def tiny_timed(with_families: bool) -> list[TimedModel]:
    """Six small conv nets 'timed' on a made-up device whose truth is the toy profile."""
    truth = ProfilePredictor("toy", profile=profile(FUSION))
    timed = []
    for i, width in enumerate((8, 16, 24, 32, 48, 64)):
        net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                            nn.Conv2d(width, width, 3, padding=1, groups=width), nn.ReLU(),
                            nn.Conv2d(width, 8, 1))
        kernels = tuple(decompose(net, (1, 3, 32, 32)))
        timed.append(TimedModel(f"net{i}", kernels, truth.predict_kernels(kernels).latency_ms,
                                f"fam{i // 2}" if with_families else None))
    return timed


def test_calibrate_measured_judges_out_of_sample():
    template = load_profile(profile_path("cortexA76"))
    result = calibrate_measured("toy", tiny_timed(True), template, source="test")
    assert set(result.validation) == {"leave-one-model-out", "leave-one-family-out",
                                      "family-stratified 2-fold"}
    split = result.validation["family-stratified 2-fold"]
    assert sorted(split["fold"].value_counts().tolist()) == [3, 3]
    assert result.profile["outside_fit"]["method"] == "leave-one-family-out"
    assert result.profile["fusion"] == template["fusion"]
    assert result.profile["version"].startswith("fit2-")
    without = calibrate_measured("toy", tiny_timed(False), template, source="test")
    assert set(without.validation) == {"leave-one-model-out"} and "validation" not in without.profile
    assert without.profile["outside_fit"]["method"] == "leave-one-model-out"
    assert without.profile["outside_fit"]["models"] == 6
    with pytest.raises(QnasError, match="at least 3 timed models"):
        calibrate_measured("toy", tiny_timed(False)[:2], template, source="test")
    with pytest.raises(QnasError, match="needs a prior for flops_exponent"):
        no_prior = {**template, "fit": {"parameters": {
            k: v for k, v in template["fit"]["parameters"].items() if k != "flops_exponent"}}}
        calibrate_measured("toy", tiny_timed(False), no_prior, source="test")


def test_bad_measurement_files_are_refused(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("gpu,batch\nH100,1\n")
    with pytest.raises(QnasError, match="lacks columns"):
        read_measurements(bad)
    with pytest.raises(QnasError, match="does not exist"):
        read_measurements(tmp_path / "missing.csv")


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_fusion_folds_resnet_as_tflite_does():
    with torch.device("meta"):
        model = torchvision.models.resnet18()
    kernels = decompose(model, (1, 3, 224, 224))
    fused = ProfileModel(profile()["op_classes"], profile()["classes"], fusion=FUSION).fused(kernels)
    folded = [k.op for k, f in zip(kernels, fused) if f]
    # every BN follows a conv; every ReLU follows a BN or a residual add
    assert folded.count("batchnorm") == 20 and folded.count("relu") == 17
    assert not [k.op for k, f in zip(kernels, fused) if not f and k.op in ("batchnorm", "relu")]
