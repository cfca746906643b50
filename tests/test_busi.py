"""The ``busi`` data source on both layouts; the real set is read when ../shared has it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtlkit import DataError
from mtlkit.plugins.busi import BusiOptions, busi_source

SHARED_BUSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"


def test_original_layout_with_merged_masks(tmp_path):
    for label in ("benign", "malignant", "normal"):
        (tmp_path / label).mkdir()
        Image.new("RGB", (12, 10), (90, 90, 90)).save(tmp_path / label / f"{label} (1).png")
        mask = np.zeros((10, 12), dtype=np.uint8)
        mask[1:3, 1:3] = 255
        Image.fromarray(mask).save(tmp_path / label / f"{label} (1)_mask.png")
    second = np.zeros((10, 12), dtype=np.uint8)
    second[6:8, 6:9] = 255
    Image.fromarray(second).save(tmp_path / "benign" / "benign (1)_mask_1.png")

    samples = {s.image_id: s for s in busi_source(BusiOptions(root=str(tmp_path))).samples}
    assert set(samples) == {"benign/benign (1).png", "malignant/malignant (1).png"}
    benign = samples["benign/benign (1).png"]
    assert benign.labels == {"bm": "benign", "label": "benign"}
    assert benign.image().shape == (10, 12)
    assert benign.mask().sum() == 4 + 6  # both mask files, merged

    with_normal = busi_source(BusiOptions(root=str(tmp_path), include_normal=True)).samples
    normal = next(s for s in with_normal if s.labels["label"] == "normal")
    assert normal.labels["bm"] is None  # unknown for BM, so a bm head ignores it


def test_missing_folder_and_empty_folder_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        busi_source(BusiOptions(root=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="neither a manifest.csv"):
        busi_source(BusiOptions(root=str(tmp_path)))


@pytest.mark.skipif(not SHARED_BUSI.is_dir(), reason="../shared/data/busi is not present")
def test_shared_busi_uses_duplicate_groups_as_patients():
    samples = busi_source(BusiOptions(root=str(SHARED_BUSI))).samples
    assert len(samples) == 437 + 210  # normals left out by default
    by_id = {s.image_id: s for s in samples}
    # benign_0433 and malignant_0145 are one image (README): one pseudo patient
    assert (
        by_id["images/benign_0433.png"].patient_id == by_id["images/malignant_0145.png"].patient_id
    )
    assert len({s.patient_id for s in samples}) < len(samples)
    first = samples[0]
    assert first.image().dtype == np.uint8 and first.mask().shape == first.image().shape
