"""Tests of the synthetic breast-ultrasound phantom generator."""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtlkit.plugins.synthetic.phantoms import (
    SUBTYPES,
    Phantom,
    PhantomSettings,
    generate_phantoms,
    oracle_aucs,
    oracle_subtype_auc,
    write_phantom_set,
)

MANIFEST_COLUMNS = [
    "image", "mask", "patient_id", "x0", "y0", "x1", "y1", "bm", "alnm_count", "subtype",
    "oracle_bm", "oracle_alnm", "oracle_alnm_ge2", "oracle_alnm_ge3", "oracle_alnm_ge4",
]  # fmt: skip
ORACLE_KEYS = {"bm", "alnm", "alnm_ge2", "alnm_ge3", "alnm_ge4"}


@pytest.fixture(scope="module")
def small() -> list[Phantom]:
    """A small set with several views per patient, for per-image checks."""
    return generate_phantoms(PhantomSettings(patients=24, image_size=64), seed=3)


@pytest.fixture(scope="module")
def population() -> list[Phantom]:
    """Default label settings on many patients (one tiny image each) for label statistics."""
    settings = PhantomSettings(patients=500, images_min=1, images_max=1, image_size=32)
    return generate_phantoms(settings, seed=0)


def by_patient(phantoms: list[Phantom]) -> dict[str, list[Phantom]]:
    """Group phantoms by patient id, keeping their order."""
    groups: dict[str, list[Phantom]] = defaultdict(list)
    for p in phantoms:
        groups[p.patient_id].append(p)
    return groups


def first_views(phantoms: list[Phantom]) -> list[Phantom]:
    """One phantom per patient."""
    return [views[0] for views in by_patient(phantoms).values()]


def test_same_seed_gives_identical_output() -> None:
    settings = PhantomSettings(patients=4, image_size=48)
    a, b = generate_phantoms(settings, seed=11), generate_phantoms(settings, seed=11)
    assert [p.image_id for p in a] == [p.image_id for p in b]
    for pa, pb in zip(a, b, strict=True):
        assert pa.pixels.tobytes() == pb.pixels.tobytes()
        assert np.array_equal(pa.mask, pb.mask)
        assert (pa.box, pa.bm, pa.alnm_count) == (pb.box, pb.bm, pb.alnm_count)
        assert pa.oracle == pb.oracle and pa.features == pb.features


def test_different_seed_gives_different_output() -> None:
    settings = PhantomSettings(patients=4, image_size=48)
    a, b = generate_phantoms(settings, seed=1), generate_phantoms(settings, seed=2)
    assert a[0].features != b[0].features
    assert a[0].pixels.tobytes() != b[0].pixels.tobytes()


def test_patient_draws_do_not_depend_on_other_patients() -> None:
    few = generate_phantoms(PhantomSettings(patients=3, images_min=1, images_max=1), seed=5)
    many = generate_phantoms(PhantomSettings(patients=6, images_min=3, images_max=5), seed=5)
    few_first, many_first = first_views(few), first_views(many)[:3]
    for p, q in zip(few_first, many_first, strict=True):
        assert p.patient_id == q.patient_id
        assert p.features == q.features and p.oracle == q.oracle
        assert (p.bm, p.alnm_count) == (q.bm, q.alnm_count)


def test_shapes_and_dtypes(small: list[Phantom]) -> None:
    for p in small:
        assert p.pixels.dtype == np.uint8 and p.pixels.shape == (64, 64)
        assert p.mask.dtype == np.bool_ and p.mask.shape == (64, 64)
        assert p.mask.any()
        assert set(p.oracle) == ORACLE_KEYS
        assert {"size_mm", "aspect", "irregularity", "spiculation"} <= set(p.features)
        assert {"heterogeneity", "posterior", "halo"} <= set(p.features)
        assert all(isinstance(v, float) for v in p.features.values())


def test_image_has_ultrasound_like_contrast(small: list[Phantom]) -> None:
    for p in small:
        # The lesion is hypoechoic: darker inside the mask than in the rest of the image.
        assert p.pixels[p.mask].mean() < p.pixels[~p.mask].mean() - 20
        assert p.pixels.std() > 20  # speckle and anatomy, not a flat image


def test_box_matches_mask_and_lies_inside(small: list[Phantom]) -> None:
    for p in small:
        rows, cols = np.flatnonzero(p.mask.any(axis=1)), np.flatnonzero(p.mask.any(axis=0))
        assert p.box == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        x0, y0, x1, y1 = p.box
        assert 0 < x0 < x1 < 64 and 0 < y0 < y1 < 64  # not touching the border


def test_views_of_one_patient_share_lesion_but_not_pixels(small: list[Phantom]) -> None:
    for views in by_patient(small).values():
        first = views[0]
        for other in views[1:]:
            assert other.features == first.features and other.oracle == first.oracle
            assert (other.bm, other.alnm_count) == (first.bm, first.alnm_count)
            assert other.pixels.tobytes() != first.pixels.tobytes()


def test_images_per_patient_and_ids(small: list[Phantom]) -> None:
    groups = by_patient(small)
    assert len(groups) == 24
    assert all(2 <= len(views) <= 4 for views in groups.values())
    assert len({len(views) for views in groups.values()}) > 1  # the count does vary
    assert len({p.image_id for p in small}) == len(small)
    for pid, views in groups.items():
        assert [p.image_id for p in views] == [f"{pid}_i{j}" for j in range(len(views))]
    assert small[0].patient_id == "p0000"


def test_labels_are_consistent(population: list[Phantom]) -> None:
    for p in population:
        assert p.bm in {"benign", "malignant"}
        assert all(0.0 <= v <= 1.0 for v in p.oracle.values())
        if p.bm == "benign":
            assert p.alnm_count == 0
        else:
            assert p.alnm_count is None or p.alnm_count >= 0


def test_oracle_probabilities_are_ordered(population: list[Phantom]) -> None:
    for p in population:
        o = p.oracle
        assert o["alnm_ge4"] <= o["alnm_ge3"] <= o["alnm_ge2"] <= o["alnm"] <= o["bm"]


def test_malignant_share_matches_setting(population: list[Phantom]) -> None:
    share = np.mean([p.bm == "malignant" for p in population])
    assert abs(share - 0.5) < 0.06


def test_malignant_share_follows_other_settings() -> None:
    settings = PhantomSettings(
        patients=300, images_min=1, images_max=1, image_size=32, malignant_fraction=0.2
    )
    share = np.mean([p.bm == "malignant" for p in generate_phantoms(settings, seed=1)])
    assert abs(share - 0.2) < 0.06


def test_missing_fraction() -> None:
    settings = PhantomSettings(
        patients=300, images_min=1, images_max=1, image_size=32, alnm_missing_fraction=0.4
    )
    phantoms = generate_phantoms(settings, seed=2)
    malignant = [p for p in phantoms if p.bm == "malignant"]
    missing = np.mean([p.alnm_count is None for p in malignant])
    assert abs(missing - 0.4) < 0.1
    assert all(p.alnm_count == 0 for p in phantoms if p.bm == "benign")


def test_no_missing_when_fraction_is_zero() -> None:
    settings = PhantomSettings(
        patients=60, images_min=1, images_max=1, image_size=32, alnm_missing_fraction=0.0
    )
    assert all(p.alnm_count is not None for p in generate_phantoms(settings, seed=0))


def test_nodal_prevalences(population: list[Phantom]) -> None:
    known = [p for p in population if p.bm == "malignant" and p.alnm_count is not None]
    positive = [p for p in known if p.alnm_count >= 1]
    assert 0.2 < len(positive) / len(known) < 0.5
    assert 0.15 < np.mean([p.alnm_count >= 4 for p in positive]) < 0.55


def test_oracle_aucs_in_sensible_ranges(population: list[Phantom]) -> None:
    aucs = oracle_aucs(population)
    assert set(aucs) == ORACLE_KEYS
    assert 0.8 < aucs["bm"] < 0.99
    assert 0.7 < aucs["alnm"] < 0.97
    for task in ("alnm_ge2", "alnm_ge3", "alnm_ge4"):
        assert 0.65 < aucs[task] < 0.99


def test_difficulty_lowers_the_oracle_auc() -> None:
    def bm_auc(difficulty: float) -> float:
        settings = PhantomSettings(
            patients=150, images_min=1, images_max=1, image_size=32, difficulty=difficulty
        )
        return oracle_aucs(generate_phantoms(settings, seed=4))["bm"]

    assert bm_auc(3.0) < bm_auc(1.0) < bm_auc(0.4)


def test_oracle_aucs_nan_for_one_class() -> None:
    settings = PhantomSettings(
        patients=20, images_min=1, images_max=1, image_size=32, malignant_fraction=0.0
    )
    phantoms = generate_phantoms(settings, seed=0)
    assert all(p.bm == "benign" and p.oracle["bm"] == 0.0 for p in phantoms)
    assert all(math.isnan(v) for v in oracle_aucs(phantoms).values())


def test_malignant_lesions_look_malignant(population: list[Phantom]) -> None:
    def mean(feature: str, label: str) -> float:
        return float(np.mean([p.features[feature] for p in population if p.bm == label]))

    for feature in ("aspect", "irregularity", "spiculation", "heterogeneity", "halo"):
        assert mean(feature, "malignant") > mean(feature, "benign"), feature
    assert mean("posterior", "malignant") < mean("posterior", "benign")  # shadowing


def test_write_phantom_set(tmp_path: Path) -> None:
    settings = PhantomSettings(patients=6, image_size=40, alnm_missing_fraction=0.5)
    phantoms = generate_phantoms(settings, seed=8)
    out = tmp_path / "set"
    manifest = write_phantom_set(phantoms, out)
    assert manifest == out / "manifest.csv"
    with manifest.open(newline="") as handle:
        reader = csv.reader(handle)
        assert next(reader) == MANIFEST_COLUMNS
        rows = [dict(zip(MANIFEST_COLUMNS, row, strict=True)) for row in reader]
    assert len(rows) == len(phantoms)
    for row, p in zip(rows, phantoms, strict=True):
        assert row["image"] == f"images/{p.image_id}.png"
        assert np.array_equal(np.asarray(Image.open(out / row["image"])), p.pixels)
        mask = np.asarray(Image.open(out / row["mask"]))
        assert set(np.unique(mask)) <= {0, 255} and np.array_equal(mask == 255, p.mask)
        assert (row["patient_id"], row["bm"]) == (p.patient_id, p.bm)
        assert tuple(int(row[k]) for k in ("x0", "y0", "x1", "y1")) == p.box
        assert row["alnm_count"] == ("" if p.alnm_count is None else str(p.alnm_count))
        assert row["subtype"] == (p.subtype or "")
        assert row["oracle_alnm_ge3"] == f"{p.oracle['alnm_ge3']:.6f}"
        assert len(row["oracle_bm"].split(".")[1]) == 6
    assert sorted(f.name for f in out.iterdir()) == ["images", "manifest.csv", "masks"]


def test_write_phantom_set_refuses_non_empty_dir(tmp_path: Path) -> None:
    phantoms = generate_phantoms(PhantomSettings(patients=1, image_size=32), seed=0)
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an empty"):
        write_phantom_set(phantoms, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["notes.txt"]


def test_write_phantom_set_accepts_empty_existing_dir(tmp_path: Path) -> None:
    phantoms = generate_phantoms(PhantomSettings(patients=1, image_size=32), seed=0)
    assert write_phantom_set(phantoms, tmp_path).is_file()


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("patients", {"patients": 0}),
        ("images_min", {"images_min": 0}),
        ("images_max", {"images_min": 3, "images_max": 2}),
        ("image_size", {"image_size": 31}),
        ("malignant_fraction", {"malignant_fraction": 1.2}),
        ("malignant_fraction", {"malignant_fraction": -0.1}),
        ("alnm_missing_fraction", {"alnm_missing_fraction": 2.0}),
        ("difficulty", {"difficulty": 0.0}),
        ("difficulty", {"difficulty": -1.0}),
    ],
)
def test_settings_validation_names_the_field(field: str, kwargs: dict) -> None:
    with pytest.raises(ValueError, match=field):
        PhantomSettings(**kwargs)


def test_other_image_sizes_work() -> None:
    for size in (32, 200):
        for p in generate_phantoms(PhantomSettings(patients=3, image_size=size), seed=9):
            assert p.pixels.shape == (size, size) and p.mask.any()
            x0, y0, x1, y1 = p.box
            assert 0 < x0 and 0 < y0 and x1 < size and y1 < size


def test_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch):
    from mtlkit.plugins.synthetic import phantoms as module

    images = generate_phantoms(PhantomSettings(patients=3, image_size=32), seed=0)
    calls = {"n": 0}
    real_save = module._save_png

    def failing_save(pixels, path):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full")
        real_save(pixels, path)

    monkeypatch.setattr(module, "_save_png", failing_save)
    out = tmp_path / "set"
    with pytest.raises(OSError, match="disk full"):
        write_phantom_set(images, out)
    assert list(tmp_path.iterdir()) == []  # no out dir, no staging folder
    monkeypatch.setattr(module, "_save_png", real_save)
    assert write_phantom_set(images, out).is_file()  # and a retry works


# --- the molecular subtype ---------------------------------------------------------------------


def test_subtype_only_for_malignant_lesions(population: list[Phantom]) -> None:
    views = first_views(population)
    assert all(p.subtype is None for p in views if p.bm == "benign")
    malignant = [p for p in views if p.bm == "malignant"]
    typed = [p.subtype for p in malignant if p.subtype is not None]
    assert 0.8 < len(typed) / len(malignant) < 0.97  # subtype_missing_fraction 0.1
    shares = {s: typed.count(s) / len(typed) for s in SUBTYPES}
    assert all(0.08 < share < 0.6 for share in shares.values()), shares
    assert max(shares, key=shares.get) == "luminal A"  # the most common, as in clinical series


def test_subtype_draw_leaves_images_and_other_labels_unchanged() -> None:
    """The subtype has a random stream of its own: its settings move nothing else."""
    kwargs = {"patients": 6, "image_size": 48}
    typed = generate_phantoms(PhantomSettings(**kwargs, subtype_missing_fraction=0.0), seed=2)
    untyped = generate_phantoms(PhantomSettings(**kwargs, subtype_missing_fraction=1.0), seed=2)
    assert all(p.subtype is None for p in untyped)
    assert any(p.subtype is not None for p in typed)
    for a, b in zip(typed, untyped, strict=True):
        assert a.pixels.tobytes() == b.pixels.tobytes() and np.array_equal(a.mask, b.mask)
        assert (a.box, a.bm, a.alnm_count, a.oracle) == (b.box, b.bm, b.alnm_count, b.oracle)


def test_subtype_follows_the_lesion_traits(population: list[Phantom]) -> None:
    """Learnable from the image: the oracle (the traits alone) separates the subtypes well,
    and the traits that drive a subtype differ between subtypes as designed."""
    assert 0.85 < oracle_subtype_auc(population) < 0.99
    typed = [p for p in first_views(population) if p.subtype is not None]

    def mean(trait: str, subtype: str) -> float:
        return float(np.mean([p.features[trait] for p in typed if p.subtype == subtype]))

    assert mean("posterior", "triple-negative") > mean("posterior", "luminal A")  # enhancement
    assert mean("echogenicity", "HER2-enriched") > mean("echogenicity", "triple-negative")
    assert mean("heterogeneity", "luminal B") > mean("heterogeneity", "luminal A")


def test_subtype_oracle_is_a_distribution(small: list[Phantom]) -> None:
    for p in small:
        assert list(p.subtype_oracle) == list(SUBTYPES)
        assert sum(p.subtype_oracle.values()) == pytest.approx(1.0)


def test_a_phantom_set_is_the_same_bytes_whatever_the_blas_threads():
    # Matrix products sum in another order on more threads; torchrun sets
    # OMP_NUM_THREADS=1, so its ranks must generate what one process generates.
    from threadpoolctl import threadpool_limits

    settings = PhantomSettings(patients=40, image_size=64)
    with threadpool_limits(limits=1, user_api="blas"):
        one = generate_phantoms(settings, seed=11)
    with threadpool_limits(limits=max(2, os.cpu_count() or 2), user_api="blas"):
        many = generate_phantoms(settings, seed=11)
    assert [p.pixels.tobytes() for p in one] == [p.pixels.tobytes() for p in many]
    assert [(p.bm, p.alnm_count, p.oracle) for p in one] == [
        (p.bm, p.alnm_count, p.oracle) for p in many
    ]
