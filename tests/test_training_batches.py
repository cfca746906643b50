"""The training loader hands over whole batches (RoiDataset.__getitems__): the batches, the
random draws of augmentation and so the trained weights are those of per-sample access."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mtlkit.config.schema import AugmentationConfig
from mtlkit.data.prepared import RoiDataset, keep_batch
from mtlkit.data.transforms import draws_nothing, train_transform

SIZE = 24


def rois(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (n, 1, SIZE, SIZE), dtype=torch.uint8, generator=generator)
    masks = (torch.rand(n, 1, SIZE, SIZE, generator=generator) > 0.7).to(torch.uint8)
    return images, masks


def batches(dataset: RoiDataset, batched: bool, seed: int = 0) -> list:
    """Two epochs of a shuffled loader, with the global generator seeded as a fit does."""
    torch.manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=8,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
        **({"collate_fn": keep_batch} if batched else {}),
    )
    return [batch for _ in range(2) for batch in loader]


class PerSample(RoiDataset):
    """RoiDataset as it was: the loader fetches image by image and collates."""

    __getitems__ = None  # the loader's fetcher then calls __getitem__ per image


def per_sample(dataset: RoiDataset) -> RoiDataset:
    return PerSample(dataset.cache, dataset.indices, dataset.transform, dataset.masks)


@pytest.mark.parametrize("enabled", [False, True])
@pytest.mark.parametrize("with_masks", [False, True])
def test_whole_batches_equal_per_sample_batches(enabled, with_masks):
    images, masks = rois()
    aug = AugmentationConfig(enabled=enabled, scale=(0.6, 1.0), brightness=0.3, contrast=0.3)
    indices = np.arange(3, 40, dtype=np.int64)  # rows of the cache, not 0..n-1
    dataset = RoiDataset(
        images,
        indices,
        train_transform(aug, SIZE),
        masks if with_masks else None,
        batchwise=draws_nothing(aug),
    )
    got, expected = batches(dataset, batched=True), batches(per_sample(dataset), batched=False)
    assert len(got) == len(expected) == 2 * (len(indices) // 8)
    for mine, theirs in zip(got, expected, strict=True):
        assert len(mine) == len(theirs) == (3 if with_masks else 2)
        for a, b in zip(mine, theirs, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert torch.equal(a, b)  # bit-identical, augmentation draws included
    assert got[0][-1].dtype == torch.int64
    assert set(got[0][-1].tolist()) <= set(indices.tolist())


def test_only_a_transform_without_random_draws_takes_whole_batches():
    assert draws_nothing(AugmentationConfig(enabled=False))
    assert not draws_nothing(AugmentationConfig())
    # Off means off: the flips and jitter configured beside it are ignored.
    assert draws_nothing(AugmentationConfig(enabled=False, hflip=1.0, brightness=0.5))


def test_a_memory_mapped_cache_is_indexed_like_one_in_memory(tmp_path):
    images, _ = rois(16)
    path = tmp_path / "cache.u8"
    images.numpy().tofile(path)
    mapped = torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="c", shape=tuple(images.shape)))
    aug = AugmentationConfig(enabled=False)
    kept = RoiDataset(images, np.arange(16), train_transform(aug, SIZE), batchwise=True)
    on_disk = RoiDataset(mapped, np.arange(16), train_transform(aug, SIZE), batchwise=True)
    positions = [5, 0, 11, 2]
    for a, b in zip(kept.__getitems__(positions), on_disk.__getitems__(positions), strict=True):
        assert torch.equal(a, b)
