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
from torchvision.transforms import v2

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
        digest.update(self.cache.numpy().tobytes())
        return digest.hexdigest()

    def split_file(self) -> dict[str, Any]:
        """The content of splits.json: which image and patient went where, per fold."""
        return split_document(self.samples, self.folds, self.groups)


class RoiDataset(Dataset):
    """Cached RoIs of some samples, augmented on every access; yields ``(image, index)``."""

    def __init__(self, cache: torch.Tensor, indices: np.ndarray, transform: v2.Transform):
        self.cache = cache
        self.indices = indices
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        index = int(self.indices[position])
        return self.transform(self.cache[index]), index
