"""The automatic RoI (``data.roi.mode: auto``): a localisation model finds the lesion of a
whole image; its box plus the margin is the classifier's RoI, the whole image where it finds
nothing."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
from conftest import MTL, tiny_raw, write_yaml
from torch import nn

from mtlkit import DenseHead, RoiConfig, Sample, load_config, roi_box, run
from mtlkit.components.host import PluginHost
from mtlkit.data.scan import scan_samples
from mtlkit.errors import ConfigError, UsageError
from mtlkit.training.localizer import (
    Localizer,
    largest_region_box,
    load_localizer,
    within_window,
)
from mtlkit.training.model import MultiTaskModel


class BrightnessBackbone(nn.Module):
    """A backbone whose one feature map is the image itself (a stand-in for a trained one:
    bright pixels are lesion)."""

    num_features = 1
    feature_info = [{"num_chs": 1, "reduction": 1}]

    def forward_dense(self, images):
        return images.mean(dim=(2, 3)), [images]

    def forward(self, images):
        return images.mean(dim=(2, 3))


class Identity(nn.Module):
    def forward(self, maps):
        return 20 * (maps[0] - 1.0)  # normalised values above 1 (pixels above ~191): lesion


class BrightHead(DenseHead):
    min_reduction = 1

    def build_decoder(self, channels, reductions):
        return Identity()


class ShiftedIdentity(Identity):
    def forward(self, maps):
        return torch.roll(super().forward(maps), shifts=2, dims=-1)  # not mirror-symmetric


class ShiftedHead(BrightHead):
    def build_decoder(self, channels, reductions):
        return ShiftedIdentity()


def localizer(size: int = 64, head=BrightHead, **options) -> Localizer:
    model = MultiTaskModel(BrightnessBackbone(), [], [head("lesion")])
    return Localizer(model, "lesion", size, threshold=0.5, **options)


def image_with_lesion(width=300, height=200, box=(180, 40, 260, 120), speck=True):
    image = np.full((height, width), 40, dtype=np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 250
    if speck:  # a small bright artefact elsewhere: not the lesion
        image[170:176, 20:26] = 250
    return image


def test_the_largest_region_is_boxed_end_exclusive():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:5, 3:7] = True
    mask[8, 8] = True
    assert largest_region_box(mask) == (3, 2, 7, 5)
    assert largest_region_box(np.zeros((4, 4), dtype=bool)) is None


def test_an_obvious_lesion_is_found_in_the_image_s_own_pixels():
    box = localizer()(image_with_lesion())
    assert box is not None
    for found, true in zip(box, (180, 40, 260, 120), strict=True):
        assert abs(found - true) <= 6  # one pixel of the 64-pixel input is ~5 image pixels


def test_a_second_look_finds_a_small_lesions_edges_the_whole_image_blurs():
    true = (203, 61, 229, 93)
    image = image_with_lesion(box=true)
    error = {
        refine: max(
            abs(f - t) for f, t in zip(localizer(12, refine=refine)(image), true, strict=True)
        )
        for refine in (False, True)
    }
    # 12 pixels across 300: one input pixel is 25 image pixels; the window, ~64 across,
    # makes it ~5.
    assert error[False] > 6 and error[True] <= 3


def test_a_second_look_at_a_lesion_as_large_as_the_image_changes_nothing():
    image = image_with_lesion(box=(20, 20, 280, 180), speck=False)
    assert localizer(32, refine=True)(image) == localizer(32)(image)


def test_where_the_second_look_reaches_its_windows_edge_the_first_looks_edge_is_kept():
    window, first = (100, 50, 160, 110), (90, 60, 170, 100)
    # reaches the window's left and right edges: the lesion goes on beyond them
    assert within_window((0, 20, 60, 40), window, first, 300, 200) == (90, 70, 170, 90)
    # inside the window: the second look wins, even where it is the tighter one
    assert within_window((15, 15, 45, 45), window, first, 300, 200) == (115, 65, 145, 95)
    # the window's edge is the image's: nothing lies beyond it
    assert within_window((0, 0, 60, 60), (0, 0, 60, 60), (0, 0, 70, 70), 60, 60) == (
        0,
        0,
        60,
        60,
    )


def test_mirror_averages_each_pixel_with_the_mirror_images():
    image = image_with_lesion()
    plain, mirrored = localizer(32, ShiftedHead), localizer(32, ShiftedHead, mirror=True)
    by_hand = (plain.probabilities(image) + plain.probabilities(image[:, ::-1])[:, ::-1]) / 2
    np.testing.assert_allclose(mirrored.probabilities(image), by_hand, atol=1e-6)
    assert not np.allclose(plain.probabilities(image), by_hand)


def test_the_localisers_box_gets_the_margin_and_nothing_found_is_the_whole_image():
    image = image_with_lesion(speck=False)
    sample = Sample("a", "p", {}, image=lambda: image)
    roi = RoiConfig(mode="auto", localizer="unused", margin=0.25)
    assert roi_box(sample, image, roi, found=(180, 40, 260, 120)) == (160, 20, 280, 140)
    assert roi_box(sample, image, roi, found=None) == (0, 0, 300, 200)


def test_a_scan_says_which_images_fell_back_to_the_whole_image():
    lesion, dark = image_with_lesion(), np.full((200, 300), 40, dtype=np.uint8)
    samples = [
        Sample("lesion", "p1", {}, image=lambda: lesion),
        Sample("dark", "p2", {}, image=lambda: dark),
    ]
    roi = RoiConfig(mode="auto", localizer="unused", margin=0.0)
    scan = scan_samples(samples, roi, 32, locate=localizer())
    assert scan.problems == [] and scan.whole_image == [1]
    assert scan.rois[0].float().mean() > 200  # the crop is the bright lesion
    assert scan.rois[1].float().mean() == pytest.approx(40, abs=1)


def test_mode_auto_needs_a_localiser_and_the_others_refuse_one():
    with pytest.raises(ValueError, match="needs localizer"):
        RoiConfig(mode="auto")
    with pytest.raises(ValueError, match="for mode auto only"):
        RoiConfig(mode="mask", localizer="x.safetensors")
    with pytest.raises(ValueError, match="for mode auto only"):
        RoiConfig(mode="image", refine=True)
    with pytest.raises(ValueError, match="for mode auto only"):
        RoiConfig(mode="box", blend=0.5)
    with pytest.raises(ValueError, match="less than or equal to 1"):
        RoiConfig(mode="auto", localizer="x", blend=1.5)
    roi = RoiConfig(mode="auto", localizer="x", train_mode="mask", margin=0.3, refine=True)
    training = roi.for_training()
    assert (training.mode, training.margin, training.localizer) == ("mask", 0.3, None)
    assert not training.refine


def localiser_raw() -> dict:
    """A tiny localiser: the segmentation head (beside bm and alnm, which keep the
    classifier's stratified split) on whole images."""
    raw = tiny_raw()
    raw["heads"] = ["bm", "alnm", {"type": "segmentation", "width": 8}]
    raw["constraints"] = []
    raw["data"]["roi"] = {"mode": "image"}
    raw["evaluation"]["select"] = "lesion.dice"
    raw["evaluation"]["reference_columns"] = {"bm": "oracle_bm"}
    return raw


@pytest.fixture(scope="module")
def localiser_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("localiser") / "run"
    run(load_config(localiser_raw()), out_dir=out)
    return out


def test_a_classifier_trains_on_true_rois_and_is_evaluated_on_the_localisers(
    localiser_run, tmp_path
):
    raw = tiny_raw()
    raw["data"]["roi"] = {
        "mode": "auto",
        "localizer": str(localiser_run),
        "train_mode": "mask",
        "margin": 0.2,
    }
    result = run(load_config(raw), out_dir=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    test = metrics["sets"]["test"]
    assert "auc" in test["tasks"]["bm"]
    data = result.engine.data
    # Trained on the drawn boxes' crops, evaluated on the localiser's (a barely trained
    # one finds little: the whole image, listed per image).
    assert data.train_cache is not None and not torch.equal(data.train_cache, data.cache)
    missed = {data.samples[i].image_id for i in data.whole_image}
    test_ids = {data.samples[i].image_id for i in data.indices("test")}
    assert set(test.get("roi_whole_image", [])) == missed & test_ids


def test_a_localiser_that_trained_on_this_runs_test_images_is_refused(tmp_path):
    raw = localiser_raw()
    raw["data"]["split"]["seed"] = 7  # another split
    run(load_config(raw), out_dir=tmp_path / "other-split")
    classifier = tiny_raw()
    classifier["data"]["roi"] = {"mode": "auto", "localizer": str(tmp_path / "other-split")}
    with pytest.raises(UsageError, match="trained on .* of this run's validation or test"):
        run(load_config(classifier), out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_without_a_segmentation_head_is_no_localiser(tmp_path):
    raw = tiny_raw()
    raw["training"]["epochs"] = 1
    run(load_config(raw), out_dir=tmp_path / "classifier")
    with pytest.raises(UsageError, match="trained on box RoIs"):
        load_localizer(tmp_path / "classifier", PluginHost(), torch.device("cpu"))
    raw["data"]["roi"] = {"mode": "image"}
    run(load_config(raw), out_dir=tmp_path / "whole")
    with pytest.raises(UsageError, match="has no segmentation head"):
        load_localizer(tmp_path / "whole", PluginHost(), torch.device("cpu"))
    with pytest.raises(UsageError, match="does not exist"):
        load_localizer(tmp_path / "nowhere", PluginHost(), torch.device("cpu"))


def test_a_missing_localiser_is_refused_before_training(tmp_path):
    raw = tiny_raw()
    raw["data"]["roi"] = {"mode": "auto", "localizer": str(tmp_path / "none")}
    with pytest.raises((UsageError, ConfigError), match="does not exist"):
        run(load_config(raw), out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_predict_whole_cuts_each_image_to_the_lesion_the_localiser_finds(localiser_run, tmp_path):
    from mtlkit import Engine

    raw = tiny_raw()
    raw["data"]["roi"] = {"mode": "auto", "localizer": str(localiser_run), "margin": 0.0}
    engine = Engine(load_config(raw))
    engine.build_model()
    stand_in = localizer()  # finds bright regions: an obvious lesion
    engine.locator = lambda roi: stand_in
    images = [image_with_lesion(), np.full((50, 70), 40, dtype=np.uint8)]
    probabilities, boxes = engine.predict_whole(images)
    assert probabilities["bm"].shape == (2,)
    assert boxes[1] is None  # nothing found: the whole image, and said so
    assert boxes[0] is not None and abs(boxes[0][0] - 180) <= 6


def test_the_data_check_reads_rois_with_the_localiser(localiser_run, tmp_path):
    raw = tiny_raw()
    raw["data"]["roi"] = {"mode": "auto", "localizer": str(localiser_run)}
    config = write_yaml(tmp_path / "auto.yaml", raw)
    done = subprocess.run(
        [str(MTL), "data", "check", str(config)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    raw["data"]["roi"]["localizer"] = str(tmp_path / "missing")
    write_yaml(config, raw)
    done = subprocess.run(
        [str(MTL), "data", "check", str(config)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2 and "does not exist" in " ".join(done.stderr.split())


def test_the_data_check_of_a_localiser_config(tmp_path):
    config = write_yaml(tmp_path / "localiser.yaml", localiser_raw())
    done = subprocess.run(
        [str(MTL), "data", "check", str(config)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_roi_refine_reaches_the_localiser_and_mirror_follows_the_localisers_own_tta(
    localiser_run,
):
    from mtlkit import Engine

    raw = tiny_raw()
    raw["data"]["roi"] = {"mode": "auto", "localizer": str(localiser_run), "refine": True}
    engine = Engine(load_config(raw))
    roi = engine.config.data.roi
    once = engine.locator(roi.model_copy(update={"refine": False}))
    assert engine.locator(roi).refine and not once.refine
    assert engine.locator(roi) is engine.locator(roi)  # loaded once per setting
    assert not once.mirror  # the localiser's run scored its masks without tta
    assert load_localizer(localiser_run, PluginHost(), torch.device("cpu"), mirror=True).mirror


def test_roi_blend_reaches_every_reported_evaluation_but_not_the_choice_of_epoch(
    localiser_run, tmp_path
):
    raw = tiny_raw()
    raw["data"]["roi"] = {
        "mode": "auto",
        "localizer": str(localiser_run),
        "train_mode": "mask",
        "blend": 0.5,
    }
    result = run(load_config(raw), out_dir=tmp_path / "run")
    engine, data = result.engine, result.engine.data
    assert set(data.localized) == {"bm", "alnm"} and data.blend == 0.5  # what both predict
    test = data.indices("test")
    whole = engine.locator(engine.config.data.roi).task_probabilities(
        data.samples[i].image() for i in test
    )
    np.testing.assert_allclose(data.localized["bm"][test], whole["bm"], atol=1e-6)
    crop = engine.predict_rois(data.rois_of(test)).probabilities["bm"]
    reported = engine.evaluate("test").predictions.probabilities["bm"]
    np.testing.assert_allclose(reported, 0.5 * crop + 0.5 * whole["bm"], atol=1e-5)
    # the per-epoch validation picks the classifier's epoch on its own probabilities
    per_epoch = engine._evaluate(data, data.indices("val"), "val", tta=False, blend=False)
    blended = engine._evaluate(data, data.indices("val"), "val", tta=False)
    assert not np.allclose(
        per_epoch.predictions.probabilities["bm"], blended.predictions.probabilities["bm"]
    )


def test_roi_blend_needs_a_task_the_localiser_predicts_too(localiser_run):
    from mtlkit import Engine

    raw = tiny_raw(heads=[{"type": "alnm_burden", "min_nodes": 2}], constraints=[])
    raw["evaluation"]["reference_columns"] = {}
    raw["evaluation"]["select"] = "alnm_ge2.auc"
    raw["data"]["split"]["stratify"] = []
    raw["data"]["roi"] = {"mode": "auto", "localizer": str(localiser_run), "blend": 0.5}
    engine = Engine(load_config(raw))
    with pytest.raises(
        UsageError, match="predicts none of this model's tasks .*its tasks: bm, alnm"
    ):
        engine.blended_tasks(engine.config.data.roi)
