"""The Grad-CAM plugin: the one-head wrapper, its targets, the target layer found in timm
backbones, the released hooks, and the CAM-response curves."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from mtlkit import UsageError
from mtlkit.plugins.gradcam.cam import (
    HeadOutput,
    cam_extractor,
    cam_targets,
    compute_cams,
    target_layer,
)
from mtlkit.plugins.gradcam.gallery import pick_gallery, safe_name
from mtlkit.plugins.gradcam.response import mask_profile, radial_profile

SIZE = 32


class TinyMultiTask(nn.Module):
    """The shape of mtlkit's model: ``backbone`` (pooled features) and ``heads``."""

    def __init__(self, model: str):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = timm.create_model(model, pretrained=False, num_classes=0, in_chans=1)
        width = self.backbone.num_features
        self.heads = nn.ModuleDict({"bm": nn.Linear(width, 1), "subtype": nn.Linear(width, 4)})

    def forward(self, images):
        features = self.backbone(images)
        return {name: head(features) for name, head in self.heads.items()}


def lesion_images(n: int = 3) -> torch.Tensor:
    """Normalised images with one bright blob each, at different places."""
    torch.manual_seed(1)
    images = torch.randn(n, 1, SIZE, SIZE) * 0.3
    for i in range(n):
        y, x = 8 + 6 * i, 20 - 5 * i
        images[i, 0, y - 4 : y + 4, x - 4 : x + 4] += 2.0
    return images


@pytest.fixture(scope="module", params=["resnet10t", "convnext_atto"])
def model(request) -> TinyMultiTask:
    return TinyMultiTask(request.param).eval()


@pytest.mark.parametrize(
    "task,kind,probs",
    [
        ("bm", "binary", np.array([0.2, 0.7, 0.9])),
        ("subtype", "multiclass", np.eye(4)[[0, 2, 3]]),
    ],
)
def test_cam_has_the_rois_size_is_finite_and_not_constant(model, task, kind, probs):
    images = lesion_images()
    targets = cam_targets(kind, "predicted", probs, None, 0.5)
    cams = compute_cams(model, task, images, targets)
    assert cams.shape == (3, SIZE, SIZE)
    assert np.isfinite(cams).all()
    assert cams.min() >= 0 and cams.max() <= 1 + 1e-6
    # An untrained network's Grad-CAM may be all zero for an image (only negative
    # evidence, cut by the ReLU), so not every map must vary; the batch must. The trained
    # model's maps are checked in test_report.py.
    assert sum(cam.std() > 1e-3 for cam in cams) >= 2, "the CAMs are constant"


def test_wrapper_returns_one_heads_raw_logits(model):
    images = lesion_images()
    wrapped = HeadOutput(model, "subtype")
    with torch.no_grad():
        assert torch.equal(wrapped(images), model(images)["subtype"])  # no softmax
    with pytest.raises(UsageError, match="no task 'nope'"):
        HeadOutput(model, "nope")


def test_positive_and_negative_targets_explain_different_things(model):
    images = lesion_images(2)
    positive = compute_cams(
        model, "bm", images, cam_targets("binary", "positive", np.ones(2), None, 0.5)
    )
    negative = compute_cams(
        model, "bm", images, cam_targets("binary", "negative", np.ones(2), None, 0.5)
    )
    assert not np.allclose(positive, negative)


def test_targets_follow_the_decision_or_the_label():
    probs = np.array([0.2, 0.8, 0.6])
    signs = [t.sign for t in cam_targets("binary", "predicted", probs, None, 0.5)]
    assert signs == [-1.0, 1.0, 1.0]
    labels = np.array([1.0, np.nan, 0.0])
    signs = [t.sign for t in cam_targets("binary", "true", probs, labels, 0.5)]
    assert signs == [1.0, 1.0, -1.0]  # unknown label: the prediction
    classes = [
        t.index for t in cam_targets("multiclass", "predicted", np.eye(3)[[2, 0]], None, 0.5)
    ]
    assert classes == [2, 0]
    with pytest.raises(UsageError, match="binary heads"):
        cam_targets("multiclass", "positive", np.eye(3), None, 0.5)


def test_target_layer_is_the_last_stage_that_is_not_1x1():
    resnet = TinyMultiTask("resnet10t")
    assert target_layer(resnet, input_size=224) is resnet.backbone.layer4
    assert target_layer(resnet, input_size=32) is resnet.backbone.layer3  # layer4 is 1 x 1
    convnext = TinyMultiTask("convnext_atto")
    assert target_layer(convnext, input_size=224) is convnext.backbone.stages[3]
    assert target_layer(resnet, "layer2") is resnet.backbone.layer2
    assert target_layer(resnet, "backbone.layer1") is resnet.backbone.layer1
    with pytest.raises(UsageError, match="no module 'layer9'"):
        target_layer(resnet, "layer9")


def test_target_layer_without_feature_info_is_found_by_probing():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(4, 8, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
            self.heads = nn.ModuleDict({"bm": nn.Linear(8, 1)})

    plain = Plain()
    assert target_layer(plain, input_size=SIZE) is plain.backbone[3]  # last map > 1 x 1


def test_hooks_are_released_and_the_training_mode_restored(model):
    layer = target_layer(model, input_size=SIZE)
    model.train()
    with cam_extractor(model, "bm", input_size=SIZE):
        assert layer._forward_hooks
    assert not layer._forward_hooks and not layer._backward_hooks
    assert model.training
    model.eval()


def test_other_methods_of_the_library_work(model):
    images = lesion_images(2)
    for method in ("gradcam++", "eigencam"):
        targets = cam_targets("binary", "positive", np.ones(2), None, 0.5)
        cams = compute_cams(model, "bm", images, targets, method=method)
        assert cams.shape == (2, SIZE, SIZE) and np.isfinite(cams).all()
    with pytest.raises(UsageError, match="unknown CAM method"):
        compute_cams(model, "bm", images, targets, method="magic")


def disk(radius: float, size: int = 64, centre=(32, 32)) -> np.ndarray:
    ys, xs = np.mgrid[:size, :size]
    return (ys + 0.5 - centre[0]) ** 2 + (xs + 0.5 - centre[1]) ** 2 <= radius**2


def test_distance_curve_peaks_at_a_central_bright_lesion():
    cams = np.stack([disk(8).astype(np.float32)] * 2)
    profile = radial_profile(cams, bins=8)
    means = profile["mean_cam"]
    assert int(np.argmax(means)) == 0 and means[0] == pytest.approx(1.0)
    assert means[-1] == pytest.approx(0.0)
    assert profile["distance"][0] == pytest.approx(1 / 16)


def test_distance_curve_peaks_where_a_ring_of_attention_lies():
    ring = (disk(22) & ~disk(16)).astype(np.float32)[None]  # radius 16-22 of 32: 0.5-0.69
    profile = radial_profile(ring, bins=10)
    peak = profile["distance"][int(np.argmax(profile["mean_cam"]))]
    assert 0.5 <= peak <= 0.7


def test_lesion_profile_separates_intratumoral_peritumoral_and_background():
    mask = disk(10)
    inside = mask.astype(np.float32)
    around = (disk(14) & ~mask).astype(np.float32)  # the ring within 0.4 radii outside
    first = mask_profile(inside[None], mask[None], ring=0.5)["regions"]
    assert first["intratumoral"] > first["peritumoral"] > first["background"] - 1e-9
    second = mask_profile(around[None], mask[None], ring=0.5)
    regions = second["regions"]
    assert regions["peritumoral"] > regions["intratumoral"]
    assert regions["peritumoral"] > regions["background"]
    curve = second["mean_cam"]
    peak = second["distance"][int(np.nanargmax(np.array(curve, dtype=float)))]
    assert 0 <= peak <= 0.5


def test_gallery_picks_each_outcome_group_most_confident_first():
    labels = np.array([1, 1, 0, 0, 1, 0, np.nan])
    probs = np.array([0.9, 0.2, 0.7, 0.1, 0.6, 0.3, 0.99])
    picks = pick_gallery("binary", labels, probs, 0.5, per_group=1)
    assert picks == [("TP", 0), ("FP", 2), ("FN", 1), ("TN", 3)]
    multi = pick_gallery("multiclass", np.array([0, 1, 2.0]), np.eye(3)[[0, 2, 2]], 0.5, 2)
    assert ("correct", 0) in multi and ("wrong", 1) in multi


def test_safe_names_stay_in_their_folder_and_differ():
    crafted = "<img src=x onerror=alert(1)>.png"
    names = {
        safe_name(crafted),
        safe_name("../../etc/passwd"),
        safe_name("a/b.png"),
        safe_name("a_b.png"),
    }
    assert len(names) == 4
    assert all("/" not in n and "<" not in n and not n.startswith(".") for n in names)
