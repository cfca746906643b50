"""The RoI cache holds only the crops at the training size, in memory or on disk."""

from __future__ import annotations

import gc
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import canonical_json, tiny_raw

from mtlkit import Engine, load_config
from mtlkit.config.schema import RoiConfig
from mtlkit.data.disk_cache import DiskCache
from mtlkit.data.prepared import RoiRows
from mtlkit.data.roi_store import ROI_FOLDER, is_on_disk, new_roi_array
from mtlkit.data.scan import scan_samples
from mtlkit.errors import ConfigError, DataError
from mtlkit.plugins.manifest import ManifestOptions, manifest_source
from mtlkit.plugins.synthetic.phantoms import (
    PhantomSettings,
    generate_phantoms,
    write_phantom_set,
)


def engine_for(tmp_path: Path, **data) -> Engine:
    raw = tiny_raw()
    raw["data"].update(data)
    raw["output_dir"] = str(tmp_path / "runs")
    return Engine(load_config(raw))


def phantom_manifest(folder: Path, patients: int, seed: int) -> Path:
    """A phantom set of 48-pixel PNGs with masks, as ``mtl data synth`` writes it."""
    phantoms = generate_phantoms(PhantomSettings(patients=patients, image_size=48), seed=seed)
    return write_phantom_set(phantoms, folder)


def mapped_files(folder: Path) -> list[str]:
    """Files under ``folder`` that this process has memory-mapped (Linux /proc)."""
    lines = Path("/proc/self/maps").read_text().splitlines()
    return [line.split(maxsplit=5)[-1] for line in lines if str(folder) in line]


def test_memory_cache_is_exactly_the_crops_at_the_training_size(tmp_path):
    data = engine_for(tmp_path).data
    n, size = len(data.samples), 32
    assert data.cache.dtype.itemsize == 1 and data.cache.is_contiguous()
    assert tuple(data.cache.shape) == (n, 1, size, size)
    assert data.cache.untyped_storage().nbytes() == n * size * size
    assert data.train_cache is None and data.masks is None  # nothing else per image
    assert not is_on_disk(data.cache)


def test_prepared_data_keeps_no_decoded_original(tmp_path):
    """Images read from files are decoded once by the scan and dropped: no array of an
    original image's shape outlives the preparation."""
    from mtlkit.plugins.synthetic.phantoms import (
        PhantomSettings,
        generate_phantoms,
        write_phantom_set,
    )

    phantoms = generate_phantoms(PhantomSettings(patients=12, image_size=48), seed=3)
    manifest = write_phantom_set(phantoms, tmp_path / "set")
    del phantoms
    engine = engine_for(tmp_path, source={"type": "manifest", "path": str(manifest)})
    data = engine.data
    gc.collect()
    with warnings.catch_warnings():  # isinstance on every live object wakes deprecated ones
        warnings.simplefilter("ignore")
        live = gc.get_objects()
        originals = [o for o in live if isinstance(o, np.ndarray) and o.shape[-2:] == (48, 48)]
    assert originals == []
    assert tuple(data.cache.shape[1:]) == (1, 32, 32)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_disk_mode_maps_the_rois_from_a_file_and_trains_to_the_same_metrics(tmp_path):
    memory = engine_for(tmp_path / "m")
    cache_dir = tmp_path / "cache"
    disk = engine_for(tmp_path / "d", cache_dir=str(cache_dir), cache_mode="disk")
    assert is_on_disk(disk.data.cache) and not is_on_disk(memory.data.cache)
    assert disk.data.cache.equal(memory.data.cache)
    assert disk.data.fingerprint() == memory.data.fingerprint()
    # The file is mapped, not read into the process, and already unlinked: nothing is left
    # in the folder, whatever happens to the run.
    assert any("(deleted)" in name for name in mapped_files(cache_dir / ROI_FOLDER))
    assert list((cache_dir / ROI_FOLDER).iterdir()) == []
    # Evaluation reads a split from disk a batch at a time, never the whole split at once.
    test = memory.data.indices("test")
    split = disk.data.rois_of(test)
    assert isinstance(split, RoiRows) and len(split) == len(test)
    assert split[2:7].equal(memory.data.rois_of(test)[2:7])
    assert isinstance(memory.data.rois_of(test), torch.Tensor)
    results = []
    for engine in (memory, disk):
        engine.fit()
        results.append(canonical_json(engine.evaluate("test").tasks))
    assert results[0] == results[1]


def test_disk_mode_needs_a_cache_dir():
    raw = tiny_raw()
    raw["data"]["cache_mode"] = "disk"
    with pytest.raises(ConfigError, match="cache_mode: disk needs data.cache_dir"):
        load_config(raw)


def test_new_roi_array_on_disk_is_writable_zeros(tmp_path):
    array = new_roi_array((3, 1, 4, 4), tmp_path)
    assert is_on_disk(array) and is_on_disk(array[1:]) and array.sum() == 0
    array[1, 0] = 7
    assert int(array.sum()) == 7 * 16
    assert os.listdir(tmp_path) == []
    assert not is_on_disk(new_roi_array((0, 1, 4, 4), tmp_path))


def test_unusable_disk_folder_is_a_data_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="cannot create a .* RoI file"):
        new_roi_array((2, 1, 4, 4), blocker / "rois")


@pytest.mark.parametrize("on_disk", [False, True])
def test_pending_cache_entries_point_into_the_rois_and_read_back_equal(tmp_path, on_disk):
    """A first scan with a cache folder keeps no second copy of each crop or mask until
    the run is accepted; the entries it then writes give a second scan the same arrays."""
    manifest = phantom_manifest(tmp_path / "set", patients=6, seed=1)
    listed = manifest_source(ManifestOptions(path=str(manifest))).samples
    folder = tmp_path / "rois" if on_disk else None
    roi = RoiConfig(mode="box", margin=0.5)

    def scanned():
        return scan_samples(
            listed, roi, 32, cache=DiskCache(tmp_path / "c"), masks=True, roi_folder=folder
        )

    first = scanned()
    pending = first.cache_writes.entries
    assert len(pending) == len(listed) and first.from_cache == 0
    assert all(p.rois is first.rois for p in pending)
    assert not any("roi" in p.facts or "mask" in p.facts for p in pending)
    assert first.cache_writes.save() is None
    second = scanned()
    assert second.from_cache == len(listed) and not second.cache_writes.entries
    assert second.rois.equal(first.rois) and second.masks.equal(first.masks)
    assert second.has_mask.equal(first.has_mask) and bool(first.has_mask.all())
    assert is_on_disk(second.rois) == on_disk
