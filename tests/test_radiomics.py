"""The radiomics baseline: PyRadiomics features, the feature cache, parallel extraction,
Boruta and the forest on training rows only, and the baseline beside the CNN in a run."""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_raw, write_yaml
from PIL import Image

from mtlkit import (
    BaselineContext,
    ConfigError,
    DataError,
    Engine,
    Progress,
    RoiConfig,
    RunResult,
    Sample,
    SampleSet,
    hookimpl,
    load_config,
    run,
    to_json,
)
from mtlkit.cli import main
from mtlkit.plugins.manifest import ManifestOptions, manifest_source
from mtlkit.plugins.radiomics import extraction
from mtlkit.plugins.radiomics.cache import FeatureCache
from mtlkit.plugins.radiomics.extraction import ExtractionSettings, extract_features
from mtlkit.plugins.radiomics.options import RadiomicsOptions
from mtlkit.plugins.radiomics.plugin import RadiomicsBaseline
from mtlkit.plugins.synthetic.phantoms import PhantomSettings, generate_phantoms, write_phantom_set
from mtlkit.plugins.synthetic.source import SyntheticOptions, synthetic_source

pytest.importorskip("radiomics", reason="the radiomics extra: pip install -e '.[radiomics]'")
pytest.importorskip("boruta", reason="the radiomics extra: pip install -e '.[radiomics]'")

FAST = {
    "cache": False,
    "workers": 1,
    "n_jobs": 1,
    "boruta": {"max_iter": 8, "n_estimators": 20},
    "forest": {"n_estimators": 10},
}
"""Baseline options that keep a test to seconds: few trees, few Boruta rounds, no cache."""

CLASS_COUNTS = {"firstorder": 18, "glcm": 24, "glrlm": 16, "glszm": 16, "gldm": 14, "ngtdm": 5}
BOX = RoiConfig(mode="box", margin=0.2)


def settings(roi: RoiConfig = BOX, **options) -> ExtractionSettings:
    return ExtractionSettings.from_options(RadiomicsOptions(**options), roi)


def textured(seed: int, size: int = 24) -> np.ndarray:
    """A speckled image with a brighter blob: texture for every feature class."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    blob = 80 * np.exp(-((x - size / 2) ** 2 + (y - size / 2) ** 2) / (size**2 / 10))
    return np.clip(60 + blob + rng.normal(0, 25, (size, size)), 0, 255).astype(np.uint8)


def sample(image: np.ndarray, image_id: str = "a", mask: np.ndarray | None = None) -> Sample:
    height, width = image.shape[:2]
    return Sample(
        image_id=image_id,
        patient_id=image_id,
        labels={},
        image=lambda: image,
        mask=(lambda: mask) if mask is not None else None,
        box=(2, 2, width - 2, height - 2),
    )


def table_of(samples, roi=BOX, *, cache=None, workers=1, **options):
    """Features of ``samples`` with these baseline options (extraction only)."""
    return extract_features(samples, roi, settings(roi, **options), cache=cache, workers=workers)


# --- extraction -----------------------------------------------------------------------------


def test_default_features_are_the_documented_93_and_finite():
    table = table_of([sample(textured(0)), sample(textured(1), "b")])
    assert len(table.names) == 93 and not table.failures
    by_class: dict[str, int] = {}
    for name in table.names:
        image_type, feature_class, _ = name.split("_", 2)
        assert image_type == "original"
        by_class[feature_class] = by_class.get(feature_class, 0) + 1
    assert by_class == CLASS_COUNTS
    assert {"original_firstorder_Mean", "original_glcm_Contrast", "original_ngtdm_Busyness"} <= set(
        table.names
    )
    assert np.isfinite(table.values).all() and table.values.shape == (2, 93)
    assert not np.array_equal(table.values[0], table.values[1])


def test_shape2d_needs_a_mask_region_and_then_adds_its_9_features():
    with pytest.raises(ValueError, match="region: mask"):
        RadiomicsOptions(features=["firstorder", "shape2D"])
    mask = np.zeros((24, 24), dtype=bool)
    mask[6:18, 5:19] = True
    table = table_of(
        [sample(textured(0), mask=mask)], region="mask", features=["firstorder", "shape2D"]
    )
    assert len(table.names) == 18 + 9
    assert sum(n.startswith("original_shape2D_") for n in table.names) == 9


def test_bin_count_and_bin_width_exclude_each_other_and_change_the_features():
    with pytest.raises(ValueError, match="not both"):
        RadiomicsOptions(bin_width=10, bin_count=32)
    images = [sample(textured(0))]
    width = table_of(images, bin_width=10).values
    count = table_of(images, bin_count=32).values
    assert not np.array_equal(width, count)


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    """Phantoms written as files (`mtl data synth`): PNG images, 0/255 masks, a manifest."""
    out = tmp_path_factory.mktemp("radiomics") / "set"
    write_phantom_set(generate_phantoms(PhantomSettings(patients=4, image_size=48), seed=1), out)
    return out


def copy_set(source: Path, target: Path, *, mask_one: bool = False, rgb: bool = False) -> Path:
    """The phantom set again, with masks saved as 0/1 or images saved as RGB."""
    target.mkdir()
    for path in source.rglob("*"):
        if path.is_dir():
            continue
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".png" and "mask" in str(path.relative_to(source)) and mask_one:
            pixels = np.asarray(Image.open(path).convert("L"))
            assert set(np.unique(pixels)) <= {0, 255}
            Image.fromarray((pixels > 0).astype(np.uint8)).save(out)
        elif path.suffix == ".png" and rgb and "mask" not in str(path.relative_to(source)):
            Image.open(path).convert("RGB").save(out)
        else:
            out.write_bytes(path.read_bytes())
    return target / "manifest.csv"


def manifest_samples(manifest: Path) -> list[Sample]:
    return manifest_source(ManifestOptions(path=str(manifest))).samples


def test_masks_as_0_255_and_0_1_and_rgb_files_give_the_same_features(phantom_files, tmp_path):
    roi = RoiConfig(mode="mask", margin=0.3)
    original = manifest_samples(phantom_files / "manifest.csv")
    ones = manifest_samples(copy_set(phantom_files, tmp_path / "ones", mask_one=True))
    rgb = manifest_samples(copy_set(phantom_files, tmp_path / "rgb", rgb=True))
    assert Image.open(Path(rgb[0].files[0])).mode == "RGB"
    tables = [table_of(s, roi, region="mask") for s in (original, ones, rgb)]
    assert not tables[0].failures and tables[0].values.shape[1] == 93
    for other in tables[1:]:
        assert other.names == tables[0].names
        np.testing.assert_array_equal(other.values, tables[0].values)


def test_a_constant_or_tiny_region_is_reported_by_name_and_the_rest_is_extracted():
    thin = np.zeros((24, 24), dtype=bool)
    thin[10, 4:20] = True  # one pixel high: PyRadiomics refuses it
    speck = np.zeros((24, 24), dtype=bool)
    speck[10:12, 10:12] = True
    samples = [
        sample(textured(0), "good"),
        sample(np.full((24, 24), 128, dtype=np.uint8), "flat"),
        sample(textured(2), "thin", mask=thin),
        sample(textured(3), "speck", mask=speck),
        sample(textured(4), "nomask"),
        sample(textured(5), "good2", mask=np.ones((24, 24), dtype=bool)),
    ]
    table = table_of(samples, region="mask", roi=RoiConfig(mode="image", margin=0))
    failures = {samples[i].image_id: reason for i, reason in table.failures.items()}
    # "good" and "flat" have no mask either (region: mask): every image without one is named
    assert set(failures) == {"good", "flat", "thin", "speck", "nomask"}
    assert "no lesion mask" in failures["good"] and "no lesion mask" in failures["nomask"]
    assert "PyRadiomics" in failures["thin"]
    assert "fewer than min_pixels" in failures["speck"]
    assert np.isfinite(table.values[5]).all() and len(table.names) == 93

    boxes = table_of(samples[:2])  # region: box, the paper's
    assert list(boxes.failures) == [1] and "constant" in boxes.failures[1]
    assert np.isnan(boxes.values[1]).all() and np.isfinite(boxes.values[0]).all()


# --- cache and processes ----------------------------------------------------------------------


def test_the_cache_is_hit_the_second_time_and_nothing_is_extracted(tmp_path, monkeypatch):
    samples = [sample(textured(i), f"s{i}") for i in range(4)]
    samples.append(sample(np.zeros((24, 24), dtype=np.uint8), "flat"))  # a cached failure
    cache = FeatureCache(tmp_path / "cache")
    first = table_of(samples, cache=cache)
    assert (first.extracted, first.from_cache) == (5, 0)

    def no_extraction(*args, **kwargs):
        raise AssertionError("extracted again despite the cache")

    monkeypatch.setattr(extraction, "extract_region", no_extraction)
    second = table_of(samples, cache=cache)
    assert (second.extracted, second.from_cache) == (0, 5)
    assert second.names == first.names and second.failures == first.failures
    assert first.values.tobytes() == second.values.tobytes()


def test_a_changed_setting_or_file_is_extracted_again(phantom_files, tmp_path):
    manifest = copy_set(phantom_files, tmp_path / "set")
    cache = FeatureCache(tmp_path / "cache")
    samples = manifest_samples(manifest)
    first = table_of(samples, cache=cache)
    assert first.extracted == len(samples)
    assert table_of(samples, cache=cache).from_cache == len(samples)
    assert table_of(samples, cache=cache, bin_width=12).extracted == len(samples)
    assert table_of(samples, cache=cache, normalize=True).extracted == len(samples)
    margin = table_of(samples, RoiConfig(mode="box", margin=0.4), cache=cache)
    assert margin.extracted == len(samples)  # the CNN's RoI margin changes the crop

    changed = Path(samples[0].files[0])
    pixels = np.asarray(Image.open(changed)).copy()
    pixels[pixels.shape[0] // 2, :] = 255
    Image.fromarray(pixels).save(changed)
    again = table_of(manifest_samples(manifest), cache=cache)
    assert (again.extracted, again.from_cache) == (1, len(samples) - 1)
    assert not np.array_equal(again.values[0], first.values[0])
    np.testing.assert_array_equal(again.values[1:], first.values[1:])


def test_a_damaged_cache_entry_is_extracted_again(tmp_path):
    samples = [sample(textured(0))]
    cache = FeatureCache(tmp_path / "cache")
    first = table_of(samples, cache=cache)
    (entry,) = (tmp_path / "cache").rglob("*.npz")
    entry.write_bytes(b"not a zip file")
    again = table_of(samples, cache=cache)
    assert again.extracted == 1
    np.testing.assert_array_equal(again.values, first.values)


def test_parallel_extraction_equals_sequential_bit_for_bit():
    source = synthetic_source(SyntheticOptions(patients=6, image_size=40, seed=3))
    samples = list(source.samples)
    samples.append(sample(np.full((30, 30), 7, dtype=np.uint8), "flat"))
    roi = RoiConfig(mode="box", margin=0.5)
    sequential = table_of(samples, roi, workers=1)
    parallel = table_of(samples, roi, workers=2)
    assert parallel.workers == 2 and sequential.workers == 1
    assert parallel.names == sequential.names and parallel.failures == sequential.failures
    assert list(parallel.failures) == [len(samples) - 1]
    assert parallel.values.tobytes() == sequential.values.tobytes()


# --- Boruta and the forest: training rows only --------------------------------------------


@pytest.fixture(scope="module")
def prepared():
    """A tiny run's prepared data (synthetic phantoms, the CNN's split) and its features."""
    raw = tiny_raw()
    raw["data"]["source"]["patients"] = 40
    config = load_config(raw)
    engine = Engine(config)
    baseline = RadiomicsBaseline(RadiomicsOptions(**FAST))
    context = BaselineContext(engine.data, engine.heads, config.data.roi, None, Progress(False))
    baseline.prepare(context)
    return baseline, context


def test_boruta_and_the_forest_see_training_rows_only(prepared, monkeypatch):
    from boruta import BorutaPy
    from sklearn.ensemble import RandomForestClassifier

    baseline, context = prepared
    data, values = context.data, baseline.table.values
    calls = []
    inside_boruta = []
    boruta_fit, forest_fit = BorutaPy.fit, RandomForestClassifier.fit

    def recording_boruta(self, X, y):
        calls.append(("boruta", np.array(X), np.array(y)))
        inside_boruta.append(True)
        try:
            return boruta_fit(self, X, y)
        finally:
            inside_boruta.pop()

    def recording_forest(self, X, y, sample_weight=None):
        calls.append(("within boruta" if inside_boruta else "forest", np.array(X), np.array(y)))
        return forest_fit(self, X, y, sample_weight)

    monkeypatch.setattr(BorutaPy, "fit", recording_boruta)
    monkeypatch.setattr(RandomForestClassifier, "fit", recording_forest)
    baseline.fit(context, seed=0)

    rows = {split: {r.tobytes() for r in values[data.indices(split)]} for split in data.folds[0]}
    labelled = {}
    for column, head in enumerate(context.heads):
        targets = data.targets[:, column].numpy()
        train = data.indices("train")
        labelled[head.name] = train[~np.isnan(targets[train])]
    sizes = {len(v) for v in labelled.values()}
    assert {"boruta", "within boruta", "forest"} <= {kind for kind, _, _ in calls}
    for kind, X, _ in calls:
        assert len(X) in sizes, f"{kind} was fitted on {len(X)} rows, not a task's training rows"
        if kind == "boruta":  # every feature: each row must be a training image's
            for row in X:
                assert row.tobytes() in rows["train"]
                assert row.tobytes() not in rows["val"] | rows["test"]
    assert len(data.indices("val")) and len(data.indices("test"))


def test_validation_and_test_labels_change_nothing_the_models_learn(prepared):
    baseline, context = prepared
    data = context.data
    before = baseline.fit(context, seed=0)
    targets = data.targets.clone()
    held_out = np.concatenate([data.indices("val"), data.indices("test")])
    targets[held_out] = 1 - targets[held_out]  # every known label flipped (NaN stays NaN)
    flipped = dataclasses.replace(context, data=dataclasses.replace(data, targets=targets))
    after = baseline.fit(flipped, seed=0)
    for split, tasks in before.probabilities.items():
        for task, probabilities in tasks.items():
            np.testing.assert_array_equal(after.probabilities[split][task], probabilities)
    assert after.files == before.files  # the same features selected, with the same ranks


def test_a_seed_gives_the_same_models_and_another_seed_other_forests(prepared):
    baseline, context = prepared
    first, again, other = (baseline.fit(context, seed=s) for s in (0, 0, 1))
    assert first.files == again.files
    for split in first.probabilities:
        for task in first.probabilities[split]:
            np.testing.assert_array_equal(
                first.probabilities[split][task], again.probabilities[split][task]
            )
    assert any(
        not np.array_equal(first.probabilities["test"][t], other.probabilities["test"][t])
        for t in first.probabilities["test"]
    )


def test_selected_features_list_every_feature_per_task_with_its_boruta_rank(prepared):
    baseline, context = prepared
    output = baseline.fit(context, seed=0)
    rows = list(csv.DictReader(io.StringIO(output.files["selected_features.csv"])))
    tasks = [h.name for h in context.heads]
    assert [r["task"] for r in rows] == [t for t in tasks for _ in range(93)]
    for row in rows:
        assert row["decision"].split()[0] in {"confirmed", "tentative", "rejected", "all"}
        assert row["used"] in {"0", "1"}
        assert row["boruta_rank"] == "" or int(row["boruta_rank"]) >= 1
    assert any(r["used"] == "1" for r in rows)


# --- the baseline in a run ------------------------------------------------------------------


def radiomics_raw(tmp_path: Path, **options) -> dict:
    raw = tiny_raw()
    raw["training"]["epochs"] = 1
    raw["baselines"] = [copy.deepcopy({"type": "radiomics", **FAST, **options})]
    raw["reports"] = ["summary", "markdown"]
    raw["output_dir"] = str(tmp_path / "runs" / "{name}")
    return raw


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open(encoding="utf-8")))


def test_a_run_with_the_baseline_writes_both_models_metrics_and_predictions(tmp_path, capsys):
    result = run(load_config(radiomics_raw(tmp_path)), out_dir=tmp_path / "run")
    out = tmp_path / "run"
    cnn = json.loads((out / "metrics.json").read_text())
    radiomics = json.loads((out / "radiomics" / "metrics.json").read_text())
    assert radiomics["model"] == "radiomics" and radiomics["schema"] == cnn["schema"]
    assert set(radiomics["sets"]) == set(cnn["sets"]) == {"val", "test"}
    for split in ("val", "test"):
        ours, theirs = radiomics["sets"][split], cnn["sets"][split]
        assert ours["n_images"] == theirs["n_images"] and ours["n_patients"] == theirs["n_patients"]
        assert set(ours["consistency"]) == set(theirs["consistency"])
        for task, metrics in theirs["tasks"].items():
            assert set(ours["tasks"][task]) == set(metrics)  # the same metrics, reference too
            assert ours["tasks"][task]["n"] == metrics["n"]
    cnn_rows = read_csv(out / "predictions.csv")
    our_rows = read_csv(out / "radiomics" / "predictions.csv")
    assert list(our_rows[0]) == list(cnn_rows[0])  # the CNN's columns
    assert [(r["image_id"], r["split"]) for r in our_rows] == [
        (r["image_id"], r["split"]) for r in cnn_rows
    ]
    assert all(0 <= float(r["bm_prob"]) <= 1 for r in our_rows)
    for name in ("features.csv", "failures.csv", "selected_features.csv", "extraction.json"):
        assert (out / "radiomics" / name).is_file(), name
    features = read_csv(out / "radiomics" / "features.csv")
    assert len(features) == len(
        json.loads((out / "splits.json").read_text())["train"]["images"]
    ) + len(cnn_rows)
    assert len(features[0]) == 1 + 93
    report = (out / "report.md").read_text()
    assert "| task | model | n |" in report
    assert "| bm | CNN |" in report and "| bm | radiomics |" in report
    printed = capsys.readouterr().out
    assert "radiomics" in printed and "CNN" in printed
    assert (
        to_json(result.baselines["radiomics"]) == (out / "radiomics" / "metrics.json").read_text()
    )


def test_several_seeds_give_the_cnns_summary_and_per_seed_folders(tmp_path):
    raw = radiomics_raw(tmp_path)
    raw["seed"] = [0, 1]
    result = run(load_config(raw), out_dir=tmp_path / "run", cnn=False)
    folder = tmp_path / "run" / "radiomics"
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["seeds"] == [0, 1] and set(summary["runs"]) == {"seed_0", "seed_1"}
    auc = summary["sets"]["test"]["tasks"]["bm"]["auc"]
    assert set(auc) == {"mean", "sd", "ci95", "ci95_mean", "values"} and len(auc["values"]) == 2
    for seed in (0, 1):
        assert json.loads((folder / f"seed_{seed}" / "metrics.json").read_text())["seed"] == seed
        assert (folder / f"seed_{seed}" / "selected_features.csv").is_file()
    combined = read_csv(folder / "predictions.csv")
    assert list(combined[0])[0] == "seed" and {r["seed"] for r in combined} == {"0", "1"}
    assert not (tmp_path / "run" / "metrics.json").exists()  # no CNN was trained
    assert result.metrics == {} and "radiomics" in result.baselines
    timing = json.loads((folder / "timing.json").read_text())
    assert set(timing["fit_seconds"]) == {"seed_0", "seed_1"}


def test_mtl_radiomics_runs_the_baseline_alone_on_the_cnns_split(tmp_path):
    raw = radiomics_raw(tmp_path)
    config = write_yaml(tmp_path / "run.yaml", raw)
    out = tmp_path / "alone"
    assert main(["radiomics", str(config), "--out", str(out), "--quiet"]) == 0
    assert (out / "radiomics" / "metrics.json").is_file()
    assert not (out / "metrics.json").exists() and not (out / "checkpoints").exists()
    cnn_split = Engine(load_config(raw | {"baselines": []})).data.split_file()
    assert (out / "splits.json").read_text() == to_json(cnn_split)  # the CNN's split
    recorded = load_config(out / "config.yaml")
    assert recorded.baselines == [{"type": "radiomics", **FAST}]


def test_mtl_radiomics_adds_the_default_baseline_and_drops_others(tmp_path, monkeypatch):
    seen = []

    def fake_run(config, **kwargs):
        seen.append((config, kwargs["cnn"]))
        return RunResult(out_dir=tmp_path, metrics={})

    monkeypatch.setattr("mtlkit.plugins.radiomics.plugin.run", fake_run)
    raw = radiomics_raw(tmp_path)
    raw["baselines"] = []
    assert main(["radiomics", str(write_yaml(tmp_path / "a.yaml", raw))]) == 0
    assert seen[-1][0].baselines == [{"type": "radiomics"}] and seen[-1][1] is False


def test_folds_run_the_baseline_on_every_fold(tmp_path):
    raw = radiomics_raw(tmp_path)
    raw["data"]["split"] = {"folds": 2, "val_fraction": 0.2, "stratify": ["bm"]}
    run(load_config(raw), out_dir=tmp_path / "run", cnn=False)
    folder = tmp_path / "run" / "radiomics"
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["folds"] == 2 and set(summary["runs"]) == {"fold_1", "fold_2"}
    test_ids = [r["image_id"] for r in read_csv(folder / "predictions.csv") if r["split"] == "test"]
    assert len(test_ids) == len(set(test_ids)) == 66  # out-of-fold: every image once


def test_an_image_without_features_is_reported_and_still_predicted(tmp_path, capsys):
    class FlatImage:
        """The synthetic source with one image made constant."""

        name = "flat_image"

        @hookimpl
        def mtl_register_data_sources(self, registry):
            def source(options: SyntheticOptions) -> SampleSet:
                samples = synthetic_source(options).samples
                flat = np.full((32, 32), 90, dtype=np.uint8)
                samples[0] = Sample(**{**samples[0].__dict__, "image": lambda: flat})
                return SampleSet(samples, "one flat image", ("bm", "alnm_count"))

            registry.register("flat", source, options=SyntheticOptions)

    raw = radiomics_raw(tmp_path)
    raw["data"]["source"] = {"type": "flat", "patients": 24, "image_size": 32, "seed": 0}
    raw["evaluation"]["reference_columns"] = {}
    result = run(load_config(raw), out_dir=tmp_path / "run", plugins=[FlatImage()], cnn=False)
    failures = read_csv(tmp_path / "run" / "radiomics" / "failures.csv")
    assert [r["image_id"] for r in failures] == ["p0000_i0"]
    assert "constant" in failures[0]["reason"]
    assert "p0000_i0" in capsys.readouterr().err.replace("\n", "")
    assert result.baselines["radiomics"]["sets"]["test"]["n_images"] > 0


def test_baseline_options_are_checked_with_their_yaml_path(tmp_path):
    raw = radiomics_raw(tmp_path)
    raw["baselines"][0]["bin_width"] = -1
    raw["baselines"][0]["forest"]["trees"] = 5
    with pytest.raises(ConfigError) as info:
        run(load_config(raw))
    paths = [path for path, _ in info.value.problems]
    assert "baselines[0].bin_width" in paths and "baselines[0].forest.trees" in paths
    raw = radiomics_raw(tmp_path)
    raw["baselines"] = ["radiomix"]
    with pytest.raises(ConfigError, match="did you mean 'radiomics'"):
        run(load_config(raw))
    raw["baselines"] = ["radiomics", "radiomics"]
    with pytest.raises(ConfigError, match="used by two baselines"):
        run(load_config(raw))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["run", "radiomics", "validate"])
def test_without_the_extra_the_baseline_is_exit_2_with_the_install_command(
    tmp_path, monkeypatch, capsys, command
):
    monkeypatch.setitem(sys.modules, "boruta", None)  # `import boruta` now fails
    config = write_yaml(tmp_path / "run.yaml", radiomics_raw(tmp_path))
    args = [command, str(config)] + (
        ["--out", str(tmp_path / "out")] if command != "validate" else []
    )
    assert main(args) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "baselines[0].type" in err and 'pip install -e ".[radiomics]"' in err
    assert "boruta" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_region_mask_without_masks_is_refused_before_anything_is_written(tmp_path):
    class NoMasks:
        name = "no_masks"

        @hookimpl
        def mtl_register_data_sources(self, registry):
            def source(options: SyntheticOptions) -> SampleSet:
                samples = [
                    Sample(**{**s.__dict__, "mask": None})
                    for s in synthetic_source(options).samples
                ]
                return SampleSet(samples, "no masks", ("bm", "alnm_count"))

            registry.register("no_masks", source, options=SyntheticOptions)

    raw = radiomics_raw(tmp_path, region="mask")
    raw["data"]["source"] = {"type": "no_masks", "patients": 24, "image_size": 32, "seed": 0}
    raw["evaluation"]["reference_columns"] = {}
    with pytest.raises(DataError, match="region: mask needs a lesion mask"):
        run(load_config(raw), out_dir=tmp_path / "run", plugins=[NoMasks()])
    assert not (tmp_path / "run").exists()


def test_a_multiclass_head_gets_one_probability_per_class(tmp_path):
    raw = radiomics_raw(tmp_path)
    raw["heads"] = [
        "bm",
        {"type": "multiclass", "name": "kind", "label": "bm", "classes": ["benign", "malignant"]},
    ]
    raw["constraints"] = []
    raw["data"]["split"]["stratify"] = ["bm"]
    raw["evaluation"]["reference_columns"] = {}
    run(load_config(raw), out_dir=tmp_path / "run", cnn=False)
    rows = read_csv(tmp_path / "run" / "radiomics" / "predictions.csv")
    assert {"kind_label", "kind_prob_benign", "kind_prob_malignant"} <= set(rows[0])
    for row in rows:  # two classes of one softmax, the same split of the same column as bm
        total = float(row["kind_prob_benign"]) + float(row["kind_prob_malignant"])
        assert abs(total - 1) < 1e-5
        assert row["kind_label"] == {"0": "benign", "1": "malignant"}[row["bm_label"]]
    metrics = json.loads((tmp_path / "run" / "radiomics" / "metrics.json").read_text())
    assert (
        metrics["sets"]["test"]["tasks"]["kind"]["n"] == metrics["sets"]["test"]["tasks"]["bm"]["n"]
    )
