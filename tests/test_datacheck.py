"""`mtl data check`, contradictions, duplicate-aware splits and the on-disk RoI cache."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from conftest import tiny_raw, write_yaml
from PIL import Image

from mtlkit import DataError, load_config, run
from mtlkit.cli import main
from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import resolve_components
from mtlkit.data.inspection import inspect_data, split_units
from mtlkit.plugins.manifest import ManifestOptions, manifest_source
from mtlkit.plugins.synthetic.phantoms import (
    PhantomSettings,
    generate_phantoms,
    write_phantom_set,
)


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("check") / "set"
    write_phantom_set(generate_phantoms(PhantomSettings(patients=24, image_size=32), seed=0), out)
    return out


@pytest.fixture
def dataset(phantom_folder, tmp_path):
    """A fresh, writable copy of the phantom set: (folder, rows, header)."""
    folder = tmp_path / "set"
    shutil.copytree(phantom_folder, folder)
    with (folder / "manifest.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        return folder, list(reader), list(reader.fieldnames)


def write_manifest(folder, rows, header):
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


def config_for(folder, tmp_path, **data):
    raw = tiny_raw()
    raw["data"]["source"] = {"type": "manifest", "path": str(folder / "manifest.csv")}
    raw["data"].update(data)
    raw["output_dir"] = str(tmp_path / "runs" / "{name}")
    return write_yaml(tmp_path / "config.yaml", raw)


def check(config_path, capsys):
    code = main(["data", "check", str(config_path), "--quiet"])
    out = capsys.readouterr()
    return code, " ".join((out.out + out.err).split())  # rich wraps long lines


def test_clean_data_passes_with_a_summary(dataset, tmp_path, capsys):
    folder, rows, _ = dataset
    code, text = check(config_for(folder, tmp_path), capsys)
    assert code == 0, text
    assert f"{len(rows)} images of 24 patients" in text
    assert "images with a known label (positive) per task" in text
    for row in ("images", "patients", "bm", "alnm_ge4"):
        assert row in text
    assert "image sizes (min-median-max): width 32-32-32" in text
    assert "no problems found" in text


def test_every_bad_image_is_listed_and_run_writes_nothing(dataset, tmp_path, capsys):
    folder, rows, header = dataset
    (folder / rows[0]["image"]).write_bytes(b"")  # zero bytes
    (folder / rows[1]["image"]).write_bytes(b"not an image at all")  # not an image
    data = (folder / rows[2]["image"]).read_bytes()
    (folder / rows[2]["image"]).write_bytes(data[: len(data) // 2])  # truncated
    Image.new("L", (32, 32), 0).save(folder / rows[3]["mask"])  # empty mask
    Image.new("L", (20, 32), 255).save(folder / rows[4]["mask"])  # wrong size
    rows[5].update(x1="40")  # box outside the 32x32 image
    write_manifest(folder, rows, header)
    config = config_for(folder, tmp_path, roi={"mode": "mask", "margin": 0.5})
    code, text = check(config, capsys)
    assert code == 2
    for row in rows[:3]:
        assert f"image {row['image']} (manifest.csv row" in text and "cannot read image" in text
    assert f"{rows[3]['image']} (manifest.csv row 5): its mask is empty" in text
    assert (
        f"{rows[4]['image']} (manifest.csv row 6): its mask is 20x32 but the image is 32x32" in text
    )
    assert "5 problem(s)" in text  # roi.mode is mask: the bad box is not used
    # the same data with box RoIs: the box is the problem now
    code, text = check(config_for(folder, tmp_path, roi={"mode": "box"}), capsys)
    assert code == 2 and "box (" in text and "extends outside the 32x32 image" in text

    config = config_for(folder, tmp_path, roi={"mode": "mask", "margin": 0.5})
    assert main(["run", str(config), "--quiet"]) == 2
    assert "5 problem(s)" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "runs").exists()


def test_contradictory_labels_are_errors_naming_each_row(dataset, tmp_path, capsys):
    folder, rows, header = dataset
    benign = next(i for i, r in enumerate(rows) if r["bm"] == "benign")
    rows[benign]["alnm_count"] = "2"  # benign with nodal metastasis
    rows[10]["alnm_count"] = "-1"
    rows[11]["alnm_count"] = "1.5"
    rows[12]["bm"] = "borderline"  # unknown label value
    rows.append(dict(rows[13]))  # a duplicate row
    flipped = dict(rows[14])
    flipped["bm"] = "malignant" if rows[14]["bm"] == "benign" else "benign"
    flipped["alnm_count"] = "0"
    rows.append(flipped)  # the same image under two labels
    write_manifest(folder, rows, header)
    code, text = check(config_for(folder, tmp_path), capsys)
    assert code == 2
    assert f"row {benign + 2}), task alnm: bm='benign' means negative, but alnm_count='2'" in text
    assert "row 12), task alnm: alnm_count='-1' is not a count" in text
    assert "row 13), task alnm: alnm_count='1.5' is not a count" in text
    assert "row 14), task bm: bm='borderline' is neither positive nor negative" in text
    assert f"image '{rows[13]['image']}' is listed twice (manifest.csv row 15 and" in text
    assert "a duplicate row" in text
    assert (
        f"image '{rows[14]['image']}' is listed twice" in text and "with different labels" in text
    )


def test_identical_images_with_different_labels_are_a_contradiction(dataset, tmp_path, capsys):
    folder, rows, header = dataset
    a = next(r for r in rows if r["bm"] == "benign")
    b = next(r for r in rows if r["bm"] == "malignant")
    shutil.copy(folder / a["image"], folder / b["image"])
    shutil.copy(folder / a["mask"], folder / b["mask"])
    b.update({k: a[k] for k in ("x0", "y0", "x1", "y1")})
    write_manifest(folder, rows, header)
    code, text = check(config_for(folder, tmp_path), capsys)
    assert code == 2
    assert f"{a['image']}" in text and f"{b['image']}" in text
    assert "are the same image with different labels (bm: 'benign' vs 'malignant'" in text


def test_near_duplicates_of_two_patients_share_a_split(dataset, tmp_path):
    folder, rows, header = dataset
    # patient p0005's first image, re-saved slightly brighter, appears under 6 other patients
    source = np.asarray(Image.open(folder / rows[15]["image"]), dtype=np.int16)
    copies = []
    for k, row in enumerate(r for r in rows if r["patient_id"] not in ("p0005",)):
        if k % 10 or row["bm"] != rows[15]["bm"]:
            continue
        Image.fromarray(np.clip(source + 6, 0, 255).astype(np.uint8)).save(folder / row["image"])
        copies.append(row)
    assert len(copies) >= 2
    write_manifest(folder, rows, header)
    config = load_config(config_for(folder, tmp_path))
    host = PluginHost()
    components = resolve_components(config, host)
    report = inspect_data(
        manifest_source(ManifestOptions(path=str(folder / "manifest.csv"))),
        components.heads,
        config.data,
        {},
    )
    assert report.ok, report.problems
    prepared = report.prepared
    ids = [s.image_id for s in prepared.samples]
    places = {prepared.splits[ids.index(r["image"])] for r in [rows[15], *copies]}
    assert len(places) == 1
    linked = prepared.split_file()["linked_patients"]
    assert any({"p0005", copies[0]["patient_id"]} <= set(group) for group in linked)
    assert report.duplicates.cross_patient_pairs >= len(copies)


def test_a_split_file_that_separates_near_duplicates_is_leakage(dataset, tmp_path):
    folder, rows, header = dataset
    first = run(load_config(config_for(folder, tmp_path)), out_dir=tmp_path / "first")
    splits = json.loads((first.out_dir / "splits.json").read_text())
    test_image = splits["test"]["images"][0]
    train_image = splits["train"]["images"][0]
    shutil.copy(folder / test_image, folder / train_image)  # now identical, in two splits
    by_image = {r["image"]: r for r in rows}
    by_image[train_image].update({k: by_image[test_image][k] for k in ("bm", "alnm_count")})
    write_manifest(folder, rows, header)
    raw = load_config(
        config_for(folder, tmp_path, split={"file": str(first.out_dir / "splits.json")})
    )
    with pytest.raises(DataError, match="near-duplicate images link patients across splits"):
        run(raw, out_dir=tmp_path / "second")
    assert not (tmp_path / "second").exists()


def test_split_units_join_patients_through_shared_images():
    units = split_units(["a", "a", "b", "c", "d"], [(1, 2), (2, 3)])
    assert units == ["a+b+c", "a+b+c", "a+b+c", "a+b+c", "d"]
    assert split_units(["a", "b"], []) == ["a", "b"]


def test_exclude_leaves_images_out_and_names_unknown_ids(dataset, tmp_path, capsys):
    folder, rows, _ = dataset
    config = config_for(folder, tmp_path, exclude=[rows[0]["image"], "images/nope.png"])
    code, text = check(config, capsys)
    assert code == 2
    assert "data.exclude names image 'images/nope.png', which the data does not have" in text
    code, text = check(config_for(folder, tmp_path, exclude=[rows[0]["image"]]), capsys)
    assert code == 0 and f"{len(rows) - 1} images" in text
    assert "1 excluded by data.exclude" in text


def test_the_disk_cache_is_reused_and_keyed_by_settings(dataset, tmp_path, capsys):
    folder, rows, _ = dataset
    cache = tmp_path / "cache"
    config = config_for(folder, tmp_path, cache_dir=str(cache))
    code, text = check(config, capsys)
    assert code == 0 and "read from the cache" not in text
    entries = sorted(cache.rglob("*.npz"))
    n = len(rows)
    assert len(entries) == n
    code, text = check(config, capsys)
    assert code == 0 and f"{n} read from the cache" in text
    entries[0].write_bytes(b"garbage")  # a damaged entry is rebuilt, not trusted
    code, text = check(config, capsys)
    assert code == 0 and f"{n - 1} read from the cache" in text
    # another margin is another entry; changed file content too
    code, text = check(
        config_for(folder, tmp_path, cache_dir=str(cache), roi={"margin": 0.1}), capsys
    )
    assert "read from the cache" not in text
    Image.new("L", (32, 32), 7).save(folder / rows[0]["image"])
    code, text = check(config, capsys)
    assert f"{n - 1} read from the cache" in text


def test_cached_and_fresh_rois_are_identical(dataset, tmp_path):
    folder, rows, _ = dataset
    results = []
    for _ in ("fresh", "cached"):
        config = load_config(config_for(folder, tmp_path, cache_dir=str(tmp_path / "cache")))
        components = resolve_components(config, PluginHost())
        report = inspect_data(
            manifest_source(ManifestOptions(path=str(folder / "manifest.csv"))),
            components.heads,
            config.data,
            {},
        )
        report.prepared.save_cache()  # entries are written once the data is accepted
        results.append(report)
    assert results[1].scan.from_cache == len(rows)
    assert results[0].prepared.cache.equal(results[1].prepared.cache)
    assert results[0].prepared.splits == results[1].prepared.splits


def test_a_run_shows_data_warnings(dataset, tmp_path, capsys):
    folder, rows, header = dataset
    source = np.asarray(Image.open(folder / rows[15]["image"]), dtype=np.int16)
    other = next(
        r for r in rows if r["patient_id"] != rows[15]["patient_id"] and r["bm"] != rows[15]["bm"]
    )
    Image.fromarray(np.clip(source + 6, 0, 255).astype(np.uint8)).save(folder / other["image"])
    raw = config_for(folder, tmp_path)
    code = main(["run", str(raw), "--out", str(tmp_path / "run"), "--quiet"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 0
    assert "data warning:" in err and "look like the same lesion" in err
    assert other["image"] in err and rows[15]["image"] in err
