"""The ``manifest`` data source: CSV + image files, every bad row reported at once."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import tiny_raw, write_yaml
from PIL import Image

from mtlkit import DataError, MulticlassHead, MulticlassOptions, load_config, run
from mtlkit.plugins.manifest import ManifestOptions, load_grayscale, manifest_source
from mtlkit.plugins.synthetic.phantoms import (
    PhantomSettings,
    generate_phantoms,
    write_phantom_set,
)


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory):
    """A small set written by the generator, as `mtl data synth` writes it."""
    out = tmp_path_factory.mktemp("manifest") / "set"
    write_phantom_set(generate_phantoms(PhantomSettings(patients=24, image_size=32), seed=0), out)
    return out / "manifest.csv"


def source(path, **options):
    return manifest_source(ManifestOptions(path=str(path), **options))


def test_a_subtype_column_feeds_a_multiclass_head(phantom_set):
    """Real data's subtype: a column of the CSV (empty = unknown), read by a head that names
    it; as the synthetic manifest writes it."""
    head = MulticlassHead(
        MulticlassOptions(
            name="subtype",
            label="subtype",
            classes=["luminal A", "luminal B", "HER2-enriched", "triple-negative"],
        )
    )
    samples = source(phantom_set).samples
    targets = [head.target(s.labels) for s in samples]
    for sample, target in zip(samples, targets, strict=True):
        if sample.labels["bm"] == "benign":
            assert math.isnan(target)
    assert {t for t in targets if not math.isnan(t)} <= {0.0, 1.0, 2.0, 3.0}
    assert any(not math.isnan(t) for t in targets)


def test_reads_the_synthetic_manifest(phantom_set):
    sample_set = source(phantom_set)
    first = sample_set.samples[0]
    assert first.image_id == "images/p0000_i0.png" and first.patient_id == "p0000"
    assert first.image().dtype == np.uint8 and first.image().shape == (32, 32)
    assert first.mask().dtype == bool and first.mask().any()
    assert first.box is not None
    assert {"bm", "alnm_count", "subtype", "oracle_bm"} <= set(sample_set.columns)
    assert "image" not in first.labels and "x0" not in first.labels


def test_a_run_on_a_manifest_trains_every_task(phantom_set, tmp_path):
    raw = tiny_raw()
    raw["data"]["source"] = {"type": "manifest", "path": str(phantom_set)}
    result = run(load_config(raw), out_dir=tmp_path / "run")
    tasks = json.loads((tmp_path / "run" / "metrics.json").read_text())["sets"]["test"]["tasks"]
    assert set(tasks) == {"bm", "alnm", "alnm_ge2", "alnm_ge3", "alnm_ge4"}
    assert tasks["bm"]["reference_auc"] is not None  # the oracle columns came through
    assert result.out_dir == tmp_path / "run"


def write_csv(path, header, rows):
    lines = [",".join(header)] + [",".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def image(path, size=(20, 16), mode="L", value=128):
    Image.new(mode, size, value).save(path)
    return path.name


def test_every_missing_file_is_listed_with_its_row(tmp_path):
    ok = image(tmp_path / "a.png")
    csv = write_csv(
        tmp_path / "m.csv", ["image", "bm"], [[ok, "benign"], ["b.png", "x"], ["c.png", 1]]
    )
    with pytest.raises(DataError) as info:
        source(csv)
    message = str(info.value)
    assert "2 bad row(s)" in message
    assert "row 3: image file not found: b.png" in message
    assert "row 4: image file not found: c.png" in message


def test_paths_outside_the_manifest_folder_are_refused(tmp_path):
    inner = tmp_path / "data"
    inner.mkdir()
    outside = image(tmp_path / "secret.png")
    csv = write_csv(inner / "m.csv", ["image", "bm"], [[f"../{outside}", "benign"]])
    with pytest.raises(DataError, match="outside the manifest's folder"):
        source(csv)
    assert source(csv, allow_outside_root=True).samples[0].image().shape == (16, 20)


def test_missing_columns_and_bad_boxes(tmp_path):
    name = image(tmp_path / "a.png")
    csv = write_csv(tmp_path / "m.csv", ["path", "bm"], [[name, "benign"]])
    with pytest.raises(DataError, match="missing column.*image"):
        source(csv)
    csv = write_csv(
        tmp_path / "n.csv",
        ["image", "x0", "y0", "x1", "y1"],
        [[name, 0, 0, 5, 5], [name, 5, 0, 2, 4], [name, "a", 0, 1, 1]],
    )
    with pytest.raises(DataError) as info:
        source(csv)
    assert "row 3: box (5, 0, 2, 4)" in str(info.value)
    assert "row 4: box a, 0, 1, 1 is not four integers" in str(info.value)


def test_non_utf8_csv_is_a_data_error(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes("image,bm\nä.png,benign\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8.*line 2"):
        source(path)


def test_a_configured_column_that_is_absent_is_an_error(tmp_path):
    name = image(tmp_path / "a.png")
    csv = write_csv(tmp_path / "m.csv", ["image", "bm"], [[name, "benign"]])
    assert source(csv).samples[0].patient_id == name  # default patient column may be absent
    with pytest.raises(DataError, match="missing column.*case_id"):
        source(csv, patient_column="case_id")


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16"])
def test_images_of_every_common_mode_read_as_8_bit_gray(tmp_path, mode):
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    value = 40000 if mode == "I;16" else 200
    Image.new(mode, (8, 6), value if mode != "RGB" else (value, value, value)).save(path)
    pixels = load_grayscale(path)
    assert pixels.shape == (6, 8) and pixels.dtype == np.uint8
    expected = round(40000 / 65535 * 255) if mode == "I;16" else None
    if expected is not None:
        assert abs(int(pixels[0, 0]) - expected) <= 1


def test_an_unreadable_image_is_a_data_error_naming_the_file(tmp_path):
    # (a mask of the wrong size is found by the scan: tests/test_datacheck.py)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    csv = write_csv(tmp_path / "m.csv", ["image"], [["broken.png"]])
    (broken,) = source(csv).samples
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        broken.image()


def test_cli_run_with_manifest_config(phantom_set, tmp_path):
    raw = tiny_raw()
    raw["data"]["source"] = {"type": "manifest", "path": str(phantom_set), "mask_column": "nope"}
    config = write_yaml(tmp_path / "c.yaml", raw)
    from mtlkit.cli import main

    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert not (tmp_path / "out").exists()
