"""Dense heads: the backbone's feature maps, the segmentation head, its masked loss, Dice and
IoU, image and mask augmented together, and a segmentation task in a run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import timm
import torch
from conftest import tiny_raw

from mtlkit import DenseHead, load_config, run
from mtlkit.components.contracts import head_problems
from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import resolve_components
from mtlkit.config.schema import AugmentationConfig
from mtlkit.data.prepared import RoiDataset
from mtlkit.data.transforms import train_transform
from mtlkit.errors import ConfigError, UsageError
from mtlkit.evaluation.segmentation import overlap_scores, segmentation_metrics
from mtlkit.plugins.segmentation import SegmentationHead, SegmentationOptions
from mtlkit.plugins.task_losses import DiceBCEOptions, dice_bce_loss
from mtlkit.training.feature_maps import feature_maps_of, forward_with_maps
from mtlkit.training.losses import masked_mean
from mtlkit.training.model import MultiTaskModel

FAMILIES = ["resnet10t", "efficientnet_b0", "convnext_atto"]


def backbone(name: str) -> torch.nn.Module:
    return timm.create_model(name, pretrained=False, num_classes=0, in_chans=1).eval()


@pytest.mark.parametrize("name", FAMILIES)
def test_timm_backbones_provide_feature_maps_and_the_same_pooled_features(name):
    model = backbone(name)
    maps = feature_maps_of(model)
    assert list(maps.reductions) == sorted(set(maps.reductions))  # finest first, one each
    images = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        pooled, selected = forward_with_maps(model, maps, images)
        assert torch.allclose(pooled, model(images), atol=1e-5)
    for fmap, channels, reduction in zip(selected, maps.channels, maps.reductions, strict=True):
        assert fmap.shape == (2, channels, 64 // reduction, 64 // reduction)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_segmentation_head_predicts_a_mask_at_the_input_resolution(name):
    head = SegmentationHead(SegmentationOptions(width=8))
    model = MultiTaskModel(backbone(name), [], [head]).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 1, 96, 96))
    assert out["lesion"].shape == (3, 1, 96, 96)
    assert head.probabilities(out["lesion"]).shape == (3, 96, 96)


def test_a_backbone_without_feature_maps_is_a_clear_error():
    class Pooled(torch.nn.Module):
        num_features = 4

        def forward(self, x):
            return x.mean(dim=(2, 3)).repeat(1, 4)

    with pytest.raises(UsageError, match="provides no feature maps"):
        MultiTaskModel(Pooled(), [], [SegmentationHead(SegmentationOptions())])


def test_a_model_without_dense_heads_keeps_the_checkpoint_layout_of_older_versions():
    from mtlkit.plugins.heads import BMHead, BMOptions

    model = MultiTaskModel(backbone("resnet10t"), [BMHead(BMOptions())])
    prefixes = {key.split(".")[0] for key in model.state_dict()}
    assert prefixes == {"backbone", "heads"}  # what checkpoints before dense heads hold
    with_mask = MultiTaskModel(
        backbone("resnet10t"), [BMHead(BMOptions())], [SegmentationHead(SegmentationOptions())]
    )
    extra = set(with_mask.state_dict()) - set(model.state_dict())
    assert extra and all(key.startswith("decoders.lesion.") for key in extra)


def test_the_head_contract_checks_a_dense_heads_decoder():
    assert head_problems(SegmentationHead(SegmentationOptions())) == []

    class Pooling(torch.nn.Module):
        def forward(self, maps):
            return maps[-1].mean(dim=(2, 3))

    class Flat(DenseHead):
        def build_decoder(self, channels, reductions):
            return Pooling()

    assert "needs logits of shape (2, 1, height, width)" in head_problems(Flat("flat"))[0]


def test_dice_and_iou_of_hand_made_masks():
    truth = np.zeros((3, 4, 4), dtype=bool)
    predicted = np.zeros_like(truth)
    truth[0, :2, :2] = True  # 4 pixels
    predicted[0, :2, :1] = True  # 2 of them
    predicted[1, 0, 0] = True  # a lesion where there is none
    dice, iou = overlap_scores(predicted, truth)  # image 2: both empty
    assert dice == pytest.approx([2 * 2 / 6, 0.0, 1.0])
    assert iou == pytest.approx([2 / 4, 0.0, 1.0])
    scores = segmentation_metrics(
        predicted.astype(np.float32), truth.astype(np.uint8), np.array([1, 0, 1]), 0.5
    )
    assert scores == {"n": 2, "dice": pytest.approx((2 / 3 + 1) / 2), "iou": 0.75}
    none = segmentation_metrics(predicted.astype(np.float32), truth, np.zeros(3), 0.5)
    assert none["n"] == 0 and math.isnan(none["dice"])


def test_the_segmentation_loss_is_zero_without_masks_and_never_nan():
    loss = dice_bce_loss(DiceBCEOptions())
    logits = torch.randn(4, 1, 8, 8, requires_grad=True)
    masks = torch.zeros(4, 1, 8, 8)
    known = torch.full((4,), float("nan"))
    total = masked_mean(loss(logits, masks), known)
    assert total.item() == 0.0
    total.backward()
    assert torch.isfinite(logits.grad).all()
    known[1] = 1.0
    masks[1, 0, 2:5, 2:5] = 1.0
    per_image = loss(logits, masks)
    assert masked_mean(per_image, known).item() == pytest.approx(per_image[1].item())


def test_a_perfect_prediction_has_a_lower_loss_than_its_inverse():
    loss = dice_bce_loss(DiceBCEOptions())
    masks = torch.zeros(1, 1, 8, 8)
    masks[0, 0, :4] = 1.0
    good, bad = loss(20 * (2 * masks - 1), masks), loss(-20 * (2 * masks - 1), masks)
    assert good.item() < 0.01 < 1.0 < bad.item()


def test_image_and_mask_take_the_same_geometric_transform():
    """An off-centre L-shaped lesion, bright on a dark background: after random crops,
    scales and flips (and intensity jitter, which the mask must ignore), the bright pixels
    are still where the mask says. A mask cropped or flipped on its own would not match."""
    size = 48
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[6:30, 8:14] = 1
    mask[24:30, 8:34] = 1
    image = torch.from_numpy(np.where(mask, 220, 30).astype(np.uint8))[None, None]
    masks = torch.from_numpy(mask)[None, None]
    aug = AugmentationConfig(scale=(0.3, 1.0), hflip=0.5, vflip=0.5)
    dataset = RoiDataset(image, np.array([0]), train_transform(aug, size), masks)
    torch.manual_seed(0)
    agreements = []
    for _ in range(40):
        augmented, augmented_mask, index = dataset[0]
        assert index == 0 and augmented_mask.dtype == torch.uint8
        assert augmented_mask.shape == augmented.shape == (1, size, size)
        bright = augmented > (augmented.max() + augmented.min()) / 2
        if augmented_mask.any() and not augmented_mask.all():
            agreements.append((bright == augmented_mask.bool()).float().mean().item())
    # Aligned: 0.98 on average (bilinear image edges against a nearest-neighbour mask);
    # a mask transformed on its own agrees on about 0.74.
    assert len(agreements) > 20
    assert np.mean(agreements) > 0.95 and min(agreements) > 0.9


def test_a_segmentation_head_trains_beside_the_classification_heads(tmp_path):
    raw = tiny_raw()
    raw["heads"].append({"type": "segmentation", "width": 8})
    run(load_config(raw), out_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    lesion = metrics["sets"]["test"]["tasks"]["lesion"]
    assert lesion["n"] > 0 and 0 <= lesion["dice"] <= 1 and 0 <= lesion["iou"] <= 1
    assert "auc" in metrics["sets"]["test"]["tasks"]["bm"]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert {"bm", "lesion"} <= set(history[0]["task_losses"])
    assert math.isfinite(history[-1]["task_losses"]["lesion"])


def test_select_by_dice_needs_a_segmentation_task():
    raw = tiny_raw()
    raw["evaluation"]["select"] = "bm.dice"
    with pytest.raises(ConfigError, match="metric 'dice' is not in evaluation.metrics"):
        resolve_components(load_config(raw), PluginHost())
    raw["heads"].append({"type": "segmentation"})
    raw["evaluation"]["select"] = "lesion.auc"
    with pytest.raises(ConfigError, match="select lesion.dice or lesion.iou"):
        resolve_components(load_config(raw), PluginHost())
    raw["evaluation"]["select"] = "lesion.dice"
    resolve_components(load_config(raw), PluginHost())


def test_photometric_steps_and_trivial_augment_leave_the_mask_untouched():
    size = 32
    mask = torch.zeros(1, 1, size, size, dtype=torch.uint8)
    mask[0, 0, 4:20, 6:28] = 1
    every = {name: 1.0 for name in ("shadow", "depth_attenuation", "tgc", "haze", "speckle")}
    aug = AugmentationConfig(
        scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, trivial=True, ultrasound=every
    )
    image = torch.randint(0, 255, (1, 1, size, size), dtype=torch.uint8)
    dataset = RoiDataset(image, np.array([0]), train_transform(aug, size), mask)
    torch.manual_seed(0)
    for _ in range(20):
        augmented, augmented_mask, _ = dataset[0]
        assert torch.equal(augmented_mask, mask[0])
        assert not torch.equal(
            augmented, train_transform(AugmentationConfig(enabled=False), size)(image[0])
        )


def test_a_localiser_alone_must_select_by_its_segmentation_metric():
    raw = tiny_raw()
    raw["heads"] = [{"type": "segmentation"}]
    raw["constraints"] = []
    raw["evaluation"]["reference_columns"] = {}
    raw["data"]["split"]["stratify"] = ["lesion"]
    with pytest.raises(ConfigError) as refused:
        resolve_components(load_config(raw), PluginHost())
    text = str(refused.value)
    assert "no task reports auc; select lesion.dice" in text
    assert "'lesion' is a segmentation task: only a task with one label per image" in text


def test_segmentation_without_any_mask_is_a_data_problem():
    from mtlkit import Sample, SampleSet
    from mtlkit.config.schema import DataConfig
    from mtlkit.data.inspection import inspect_data

    image = np.full((20, 20), 90, dtype=np.uint8)
    samples = [
        Sample(f"i{k}", f"p{k}", {}, image=lambda: image, box=(2, 2, 10, 10)) for k in range(6)
    ]
    data = DataConfig(source={"type": "synthetic"})
    report = inspect_data(SampleSet(samples), [], data, {}, masks=True)
    assert any("no image has a lesion mask" in p for p in report.problems)


def test_the_recorded_config_leaves_out_unused_automatic_roi_keys():
    from mtlkit.config.loading import dump_config

    text = dump_config(load_config(tiny_raw()))
    assert "localizer" not in text and "train_mode" not in text


def test_ablation_variants_of_a_run_with_a_segmentation_head(tmp_path):
    from mtlkit.runs.ablation import plan

    raw = tiny_raw()
    raw["heads"].append({"type": "segmentation", "width": 8})
    raw["evaluation"]["select"] = "lesion.dice"
    reference, configs = plan(load_config(raw), tmp_path, PluginHost())
    single_bm = configs["single_bm"]
    assert [h["type"] if isinstance(h, dict) else h for h in single_bm.heads] == ["bm"]
    assert single_bm.evaluation.select == "mean.auc"  # no segmentation task left
    assert "lesion" not in single_bm.data.split.stratify
