"""Photometric ultrasound augmentations and TrivialAugment: grey levels change, shape,
dtype, range and geometry do not; off is the pipeline as before; torch's seed decides."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_raw
from torchvision import tv_tensors
from torchvision.transforms import v2

from mtlkit import ConfigError, load_config
from mtlkit.config.loading import dump_config
from mtlkit.config.schema import AugmentationConfig, UltrasoundAugmentConfig
from mtlkit.data.transforms import PhotometricTrivialAugment, train_transform
from mtlkit.data.ultrasound_augment import TRANSFORMS, DepthAttenuation, ultrasound_steps

NAMES = list(TRANSFORMS)


def phantom(height: int = 48, width: int = 40) -> torch.Tensor:
    """A uint8 (1, H, W) image with texture and both ends of the grey range."""
    generator = torch.Generator().manual_seed(1)
    image = torch.randint(20, 200, (1, height, width), generator=generator, dtype=torch.uint8)
    image[:, :4, :4] = 0
    image[:, -4:, -4:] = 255
    return image


def test_the_transforms_are_the_config_keys_in_pipeline_order():
    assert set(NAMES) == set(UltrasoundAugmentConfig.model_fields)


@pytest.mark.parametrize("name", NAMES)
def test_uint8_shape_dtype_and_range_are_kept(name):
    image = phantom()
    torch.manual_seed(0)
    out = TRANSFORMS[name](p=1.0, strength=1.0)(image)
    assert out.dtype == torch.uint8 and out.shape == image.shape


@pytest.mark.parametrize("name", NAMES)
def test_float_images_stay_in_0_1(name):
    image = phantom().float() / 255
    torch.manual_seed(0)
    out = TRANSFORMS[name](p=1.0, strength=1.0)(image)
    assert out.dtype == torch.float32 and out.shape == image.shape
    assert 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_probability_zero_is_the_identity(name):
    image = phantom()
    transform = TRANSFORMS[name](p=0.0, strength=1.0)
    for _ in range(5):
        assert torch.equal(transform(image), image)


@pytest.mark.parametrize("name", NAMES)
def test_probability_one_changes_every_image(name):
    image = phantom()
    torch.manual_seed(0)
    transform = TRANSFORMS[name](p=1.0, strength=1.0)
    for _ in range(5):
        assert not torch.equal(transform(image), image)


@pytest.mark.parametrize("name", NAMES)
def test_torch_seed_alone_decides(name):
    """The same torch seed gives the same image whatever python's and numpy's generators
    hold (they are not used); another seed gives another image."""
    image = phantom()
    transform = TRANSFORMS[name](p=0.7, strength=1.0)

    def draws(torch_seed: int, other_seed: int) -> list[torch.Tensor]:
        random.seed(other_seed)
        np.random.seed(other_seed)
        torch.manual_seed(torch_seed)
        return [transform(image) for _ in range(4)]

    first, again, other = draws(0, 1), draws(0, 2), draws(5, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_a_mask_passes_through_unchanged(name):
    image = tv_tensors.Image(phantom())
    mask = tv_tensors.Mask((phantom() > 128).to(torch.uint8))
    torch.manual_seed(0)
    out, out_mask = TRANSFORMS[name](p=1.0, strength=1.0)(image, mask)
    assert isinstance(out, tv_tensors.Image) and not torch.equal(out, image)
    assert isinstance(out_mask, tv_tensors.Mask) and torch.equal(out_mask, mask)


def test_depth_attenuation_darkens_the_bottom_not_the_top():
    image = torch.full((1, 64, 32), 200, dtype=torch.uint8)
    torch.manual_seed(0)
    for _ in range(5):
        out = DepthAttenuation(p=1.0, strength=1.0)(image).float()
        rows = out[0].mean(dim=1)
        assert rows[0] == 200  # the near field keeps its brightness
        assert rows[-1] < rows[0]
        assert torch.all(rows[1:] <= rows[:-1])  # never brighter deeper down
    assert rows[-1] >= 200 / 5 - 1  # at most the documented fifth


def test_strength_and_probability_are_checked():
    with pytest.raises(ValueError, match="strength"):
        DepthAttenuation(p=0.5, strength=0.0)
    with pytest.raises(ValueError, match="p must"):
        DepthAttenuation(p=1.5)


# --- the pipeline ------------------------------------------------------------------------


def test_default_pipeline_is_the_one_before_ultrasound_augmentation():
    """Off by default: the same steps, and under one seed the same images, as before."""
    aug = AugmentationConfig()
    assert ultrasound_steps(aug.ultrasound) == [] and not aug.trivial
    before = v2.Compose(
        [
            v2.RandomResizedCrop(32, scale=aug.scale, ratio=aug.ratio, antialias=True),
            v2.RandomHorizontalFlip(aug.hflip),
            v2.ColorJitter(brightness=aug.brightness, contrast=aug.contrast),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[0.5], std=[0.25]),
        ]
    )
    now = train_transform(aug, 32)
    assert [type(s) for s in now.transforms] == [type(s) for s in before.transforms]
    image = phantom()
    torch.manual_seed(3)
    expected = [before(image) for _ in range(3)]
    torch.manual_seed(3)
    assert all(torch.equal(now(image), e) for e in expected)


def test_configured_steps_follow_the_geometric_ones():
    aug = AugmentationConfig(ultrasound={"speckle": 0.5, "gain": {"p": 1, "strength": 0.2}})
    kinds = [type(s).__name__ for s in train_transform(aug, 32).transforms]
    assert kinds == [
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "Speckle",
        "Gain",
        "ColorJitter",
        "ToDtype",
        "Normalize",
    ]
    gain = train_transform(aug, 32).transforms[3]
    assert (gain.p, gain.strength) == (1.0, 0.2)


def test_every_step_together_keeps_the_model_input():
    aug = AugmentationConfig(ultrasound={name: 1.0 for name in NAMES}, trivial=True)
    torch.manual_seed(0)
    out = train_transform(aug, 32)(phantom())
    assert out.shape == (1, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_augmentation_off_turns_the_ultrasound_steps_off_too():
    aug = AugmentationConfig(enabled=False, ultrasound={"speckle": 1.0}, trivial=True)
    kinds = [type(s).__name__ for s in train_transform(aug, 32).transforms]
    assert kinds == ["ToDtype", "Normalize"]


# --- TrivialAugment ----------------------------------------------------------------------


def test_trivial_augment_has_only_photometric_operations():
    assert set(PhotometricTrivialAugment._AUGMENTATION_SPACE) == {
        "Identity",
        "Brightness",
        "Contrast",
        "Sharpness",
        "Posterize",
        "Solarize",
        "AutoContrast",
        "Equalize",
    }


def test_trivial_augment_works_on_one_channel_uint8():
    image = phantom()
    torch.manual_seed(0)
    outs = [PhotometricTrivialAugment()(image) for _ in range(30)]
    assert all(o.dtype == torch.uint8 and o.shape == image.shape for o in outs)
    assert any(not torch.equal(o, image) for o in outs)
    kinds = [
        type(s).__name__ for s in train_transform(AugmentationConfig(trivial=True), 32).transforms
    ]
    assert kinds[-3:] == ["PhotometricTrivialAugment", "ToDtype", "Normalize"]


# --- the config --------------------------------------------------------------------------


def problems(**augmentation) -> dict[str, str]:
    raw = tiny_raw()
    raw["training"]["augmentation"].update(augmentation)
    with pytest.raises(ConfigError) as info:
        load_config(raw)
    return dict(info.value.problems)


def test_a_probability_out_of_range_names_its_key():
    found = problems(ultrasound={"speckle": 1.5})
    assert list(found) == ["training.augmentation.ultrasound.speckle.p"]
    assert "less than or equal to 1" in found["training.augmentation.ultrasound.speckle.p"]
    found = problems(ultrasound={"tgc": {"p": -0.1}})
    assert list(found) == ["training.augmentation.ultrasound.tgc.p"]


def test_a_strength_out_of_range_names_its_key():
    found = problems(ultrasound={"blur": {"p": 0.5, "strength": 0}, "haze": {"strength": 2}})
    assert set(found) == {
        "training.augmentation.ultrasound.blur.strength",
        "training.augmentation.ultrasound.haze.strength",
    }


def test_unknown_keys_and_booleans_are_refused():
    assert problems(ultrasound={"spekle": 0.5}) == {
        "training.augmentation.ultrasound.spekle": "unknown key"
    }
    assert problems(ultrasound={"gain": {"p": 0.5, "sigma": 1}}) == {
        "training.augmentation.ultrasound.gain.sigma": "unknown key"
    }
    found = problems(ultrasound={"gain": True})
    assert list(found) == ["training.augmentation.ultrasound.gain"]
    assert "true" in found["training.augmentation.ultrasound.gain"]
    assert list(problems(trivial=3)) == ["training.augmentation.trivial"]


def test_a_number_is_shorthand_for_the_probability():
    raw = tiny_raw()
    raw["training"]["augmentation"]["ultrasound"] = {"speckle": 0.3, "gain": {"p": 1}}
    ultrasound = load_config(raw).training.augmentation.ultrasound
    assert (ultrasound.speckle.p, ultrasound.speckle.strength) == (0.3, 0.5)
    assert (ultrasound.gain.p, ultrasound.depth_attenuation.p) == (1.0, 0.0)


def test_config_yaml_records_the_keys_only_when_used():
    """A config that does not use them records the config.yaml it did before (so a run
    can be resumed); one that does records them, and reads back the same."""
    plain = dump_config(load_config(tiny_raw()))
    assert "ultrasound" not in plain and "trivial" not in plain
    raw = tiny_raw()
    raw["training"]["augmentation"].update(ultrasound={"haze": 0.2}, trivial=True)
    config = load_config(raw)
    text = dump_config(config)
    assert "ultrasound" in text and "trivial: true" in text
    assert load_config(yaml.safe_load(text)) == config
