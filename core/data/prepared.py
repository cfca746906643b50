"""Training data: targets, splits (one per cross-validation fold) and the cached RoIs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from mtlkit.data.roi_store import is_on_disk
from mtlkit.data.samples import Sample
from mtlkit.data.scan import CacheWrites
from mtlkit.data.split_file import split_document


@dataclass
class PreparedData:
    """Targets (N x tasks, NaN = unknown), a split per image and fold, and the cached RoIs.

    ``groups`` is each image's split unit: its patient, joined with the patients it shares
    near-duplicate images with. ``fold`` picks which of ``folds`` ``splits`` returns.
    """

    samples: list[Sample]
    task_names: list[str]
    targets: torch.Tensor
    folds: list[list[str]]
    groups: list[str]
    cache: torch.Tensor
    references: dict[str, np.ndarray]
    digests: list[str] = dataclasses.field(default_factory=list)  # of each decoded image
    warnings: list[str] = dataclasses.field(default_factory=list)  # found by the data check
    fold: int = 0
    cache_writes: CacheWrites = dataclasses.field(default_factory=CacheWrites)
    masks: torch.Tensor | None = None
    """Segmentation runs: each image's lesion mask cut and resized as its RoI, (N, 1, S, S)
    uint8 0/1 (zeros where it has none); None without a segmentation head."""
    has_mask: torch.Tensor | None = None
    """(N,) bool: which images have a mask (None without a segmentation head)."""
    whole_image: list[int] = dataclasses.field(default_factory=list)
    """``roi.mode: auto``: the images whose RoI is the whole image (no lesion found)."""
    train_cache: torch.Tensor | None = None
    """``roi.train_mode``: the RoIs the training split is cut with instead of ``cache``."""
    train_masks: torch.Tensor | None = None
    """The masks cut as ``train_cache`` (segmentation runs with ``roi.train_mode``)."""
    localized: dict[str, np.ndarray] | None = None
    """``roi.blend``: the localiser's own probabilities of each whole image, per task it
    shares with the classifier; None without a blend."""
    blend: float = 0.0
    """``roi.blend``: the weight of :attr:`localized` against the classifier's on the crop."""

    @property
    def training_rois(self) -> torch.Tensor:
        """The RoIs a fit trains on."""
        return self.train_cache if self.train_cache is not None else self.cache

    @property
    def training_masks(self) -> torch.Tensor | None:
        """The masks a fit trains on, aligned with :attr:`training_rois`."""
        return self.train_masks if self.train_cache is not None else self.masks

    def mask_targets(self) -> torch.Tensor | None:
        """(N,) float: 1 where an image has a mask, NaN where not (the segmentation tasks'
        label availability, masked like every task's); None without masks."""
        if self.has_mask is None:
            return None
        return torch.where(self.has_mask, 1.0, float("nan"))

    def save_cache(self) -> str | None:
        """Write the new disk-cache entries of the scan, once the run is accepted; returns
        why the cache failed (caching only saves time), or None."""
        return self.cache_writes.save()

    @property
    def splits(self) -> list[str]:
        return self.folds[self.fold]

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    def for_fold(self, fold: int) -> PreparedData:
        """The same data (sharing the cache) with fold ``fold``'s split."""
        if not 0 <= fold < len(self.folds):
            raise IndexError(f"fold {fold} of {len(self.folds)}")
        return dataclasses.replace(self, fold=fold)

    def rois_of(self, indices: np.ndarray) -> torch.Tensor | RoiRows:
        """The RoIs of ``indices``, for a pass of the model over them in batches (``len``
        and slices): gathered into one tensor in memory; from a cache on disk
        (``data.cache_mode: disk``) a :class:`RoiRows` that reads a slice at a time."""
        rows = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        return RoiRows(self.cache, rows) if is_on_disk(self.cache) else self.cache[rows]

    def indices(self, split: str) -> np.ndarray:
        return np.array([i for i, s in enumerate(self.splits) if s == split], dtype=np.int64)

    def fingerprint(self) -> str:
        """SHA-256 of what training sees: ids, patients, labels, boxes, each decoded image's
        digest and the RoI crops. Equal fingerprints = the same data, whatever its files."""
        digest = hashlib.sha256()
        for index, sample in enumerate(self.samples):
            labels = json.dumps({k: str(v) for k, v in sample.labels.items()}, sort_keys=True)
            image = self.digests[index] if self.digests else ""
            digest.update(
                f"{sample.image_id}|{sample.patient_id}|{labels}|{sample.box}|{image}\n".encode()
            )
        for array in (self.cache, self.masks, self.has_mask, self.train_cache, self.train_masks):
            if array is not None:  # masks: segmentation and roi.train_mode runs only
                _update_in_chunks(digest, array)
        return digest.hexdigest()

    def split_file(self) -> dict[str, Any]:
        """The content of splits.json: which image and patient went where, per fold."""
        return split_document(self.samples, self.folds, self.groups)


class RoiRows:
    """Some rows of a RoI array, read only when sliced: ``rows[a:b]`` is the tensor of the
    rows at positions a..b, so a pass over a split of a cache on disk holds one batch."""

    def __init__(self, cache: torch.Tensor, rows: torch.Tensor):
        self.cache = cache
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: slice) -> torch.Tensor:
        if not isinstance(positions, slice):
            raise TypeError(f"RoiRows takes slices, got {type(positions).__name__}")
        return self.cache[self.rows[positions]]


_CHUNK_BYTES = 64 << 20


def _update_in_chunks(digest: Any, array: torch.Tensor) -> None:
    """Hash a tensor's bytes a slice of rows at a time: ``tobytes`` of the whole would copy
    it, and a RoI cache on disk (``data.cache_mode: disk``) may not fit in memory."""
    values = array.numpy()
    rows = max(1, _CHUNK_BYTES // max(1, values[:1].nbytes))
    for start in range(0, len(values), rows):
        digest.update(np.ascontiguousarray(values[start : start + rows]).data)


class RoiDataset(Dataset):
    """Cached RoIs of some samples, augmented on every access; yields ``(image, index)``, or
    ``(image, mask, index)`` with ``masks``: the mask takes exactly the image's geometric
    transform (crop, scale, flip) and none of its intensity changes.

    A data loader asks for a whole batch at once (:meth:`__getitems__`): the batch's RoIs
    are indexed from the cache in one go and returned already stacked (use
    :func:`keep_batch` as the loader's ``collate_fn``). With ``batchwise`` (a transform
    that draws nothing at random, as with augmentation off) the transform takes the whole
    batch in one call; otherwise each image is transformed on its own, in the sampler's
    order, so the random draws and the result are those of per-sample access.
    """

    def __init__(
        self,
        cache: torch.Tensor,
        indices: np.ndarray,
        transform: v2.Transform,
        masks: torch.Tensor | None = None,
        batchwise: bool = False,
    ):
        self.cache = cache
        self.indices = indices
        self.transform = transform
        self.masks = masks
        self.batchwise = batchwise

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        index = int(self.indices[position])
        if self.masks is None:
            return self.transform(self.cache[index]), index
        image, mask = self.transform(
            tv_tensors.Image(self.cache[index]), tv_tensors.Mask(self.masks[index])
        )
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor), index

    def __getitems__(self, positions: list[int]):
        """One batch, stacked: ``(images, index)`` or ``(images, masks, index)``, ``index``
        an int64 tensor of the samples' rows in the cache."""
        index = torch.from_numpy(np.asarray(self.indices[positions], dtype=np.int64))
        if self.batchwise:
            # One indexing of the cache (a copy, so a memory-mapped cache works too) and
            # one transform call instead of a Python loop and a collate per image.
            images = self.transform(self.cache[index])
            if self.masks is None:
                return images, index
            return images, self.masks[index], index
        samples = [self[position] for position in positions]
        if self.masks is None:
            return torch.stack([s[0] for s in samples]), index
        return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples]), index


def keep_batch(batch):
    """A data loader's ``collate_fn`` for :meth:`RoiDataset.__getitems__`: the batch is
    stacked already."""
    return batch
