"""The engine API and mtlkit.run(): fit, evaluate, predict, determinism, in-process plugins."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math

import numpy as np
import pytest
from conftest import METRICS, TASKS, canonical_json, tiny_raw
from pydantic import Field
from rich.console import Console

import mtlkit
from mtlkit import Engine, MulticlassHead, MulticlassOptions, UsageError, hookimpl, load_config
from mtlkit.errors import DataError
from mtlkit.files import to_json
from mtlkit.plugins.synthetic.source import SyntheticOptions, synthetic_source
from mtlkit.results import FitResult
from mtlkit.training.checkpoint import read_metadata


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One engine trained on the tiny config (2 epochs), with checkpoints written."""
    engine = Engine(load_config(tiny_raw()))
    engine.checkpoint_dir = tmp_path_factory.mktemp("checkpoints")
    result = engine.fit()
    return engine, result


def history_without_timings(result: FitResult) -> list[dict]:
    return [
        {
            k: v
            for k, v in dataclasses.asdict(h).items()
            if k not in ("seconds", "train_images_per_second")
        }
        for h in result.history
    ]


# --- fit ------------------------------------------------------------------------------------


def test_fit_returns_a_history_of_every_epoch(fitted):
    engine, result = fitted
    assert isinstance(result, FitResult)
    assert len(result.history) == engine.config.training.epochs == 2
    assert [h.epoch for h in result.history] == [1, 2]
    for h in result.history:
        assert math.isfinite(h.train_loss) and h.train_loss > 0
        assert set(h.task_losses) == set(TASKS)
        assert h.constraint_loss >= 0
        assert set(h.val_metrics) == set(TASKS)
    assert result.train_seconds > 0


def test_best_epoch_has_the_best_validation_score(fitted):
    _, result = fitted
    scores = [h.val_score for h in result.history]
    assert 1 <= result.best_epoch <= len(scores)
    finite = [s for s in scores if not math.isnan(s)]
    assert finite, "the tiny validation split should give a score"
    assert result.best_score == max(finite)
    assert result.history[result.best_epoch - 1].val_score == result.best_score
    # ties keep the earliest epoch
    assert result.best_epoch == 1 + scores.index(result.best_score)


def test_checkpoints_hold_the_best_epoch(fitted):
    engine, result = fitted
    best = engine.checkpoint_dir / "best.safetensors"
    assert best.is_file() and (engine.checkpoint_dir / "last.safetensors").is_file()
    meta = read_metadata(best)
    assert meta["info"]["epoch"] == result.best_epoch
    assert meta["config"]["training"]["epochs"] == 2
    images = [engine.data.cache[i, 0].numpy() for i in range(5)]
    fresh = Engine(engine.config, host=engine.host)
    fresh.load_checkpoint(best)
    ours, theirs = engine.predict(images), fresh.predict(images)
    for task in TASKS:
        np.testing.assert_array_equal(ours[task], theirs[task])


# --- evaluate -------------------------------------------------------------------------------


def test_evaluate_returns_metrics_for_every_task(fitted):
    engine, _ = fitted
    result = engine.evaluate("test")
    data = engine.data
    test_idx = data.indices("test")
    assert result.split == "test" and result.n_images == len(test_idx) > 0
    assert result.n_patients == len({data.samples[i].patient_id for i in test_idx})
    assert list(result.tasks) == TASKS
    for task, row in result.tasks.items():
        assert set(METRICS) <= set(row), task
        assert 0 < row["n"] <= result.n_images
        for name in METRICS:
            assert math.isnan(row[name]) or 0.0 <= row[name] <= 1.0, (task, name)
        assert "reference_auc" in row  # quick.yaml's oracle columns
    assert set(result.consistency) == {
        "alnm_without_bm",
        "alnm_ge2_without_alnm",
        "alnm_ge3_without_alnm_ge2",
        "alnm_ge4_without_alnm_ge3",
        "alnm_above_bm",
        "alnm_ge2_above_alnm",
        "alnm_ge3_above_alnm_ge2",
        "alnm_ge4_above_alnm_ge3",
        "nonmonotonic:bm>alnm>alnm_ge2>alnm_ge3>alnm_ge4",
    }
    assert result.predictions.image_ids == [data.samples[i].image_id for i in test_idx]


def test_evaluate_every_split_and_refuse_others(fitted):
    engine, _ = fitted
    sizes = {split: engine.evaluate(split).n_images for split in ("train", "val", "test")}
    assert sum(sizes.values()) == len(engine.data.samples)
    with pytest.raises(UsageError, match="unknown split"):
        engine.evaluate("validation")


def test_evaluate_and_predict_need_a_model(tiny_config):
    engine = Engine(load_config(tiny_config))
    with pytest.raises(UsageError, match="no model"):
        engine.evaluate("test")
    with pytest.raises(UsageError, match="no model"):
        engine.predict([np.zeros((8, 8), dtype=np.uint8)])


# --- predict --------------------------------------------------------------------------------


def test_predict_returns_probabilities_per_task(fitted):
    engine, _ = fitted
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in [(40, 50), (20, 20), (64, 33)]
    ]
    out = engine.predict(images)
    assert list(out) == TASKS
    for task, probs in out.items():
        assert probs.shape == (3,), task
        assert np.all((probs >= 0) & (probs <= 1)) and np.all(np.isfinite(probs))


def test_predict_on_cached_rois_matches_evaluate(fitted):
    engine, _ = fitted
    test_idx = engine.data.indices("test")
    evaluated = engine.evaluate("test").predictions.probabilities
    predicted = engine.predict([engine.data.cache[i, 0].numpy() for i in test_idx])
    for task in TASKS:
        np.testing.assert_allclose(predicted[task], evaluated[task], atol=1e-5)


def test_predict_refuses_non_grayscale_uint8(fitted):
    engine, _ = fitted
    with pytest.raises(UsageError, match="image 1"):
        engine.predict([np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.float32)])
    with pytest.raises(UsageError, match="image 0"):
        engine.predict([np.zeros((8, 8, 3), np.uint8)])


# --- determinism ----------------------------------------------------------------------------


def test_same_seed_gives_identical_metrics_and_predictions(fitted):
    engine, result = fitted
    again = Engine(load_config(tiny_raw()))
    second = again.fit()
    assert canonical_json(history_without_timings(second)) == canonical_json(
        history_without_timings(result)
    )
    first_eval, second_eval = engine.evaluate("test"), again.evaluate("test")
    assert canonical_json(second_eval.tasks) == canonical_json(first_eval.tasks)
    for task in TASKS:
        np.testing.assert_array_equal(
            second_eval.predictions.probabilities[task], first_eval.predictions.probabilities[task]
        )


def test_another_seed_gives_another_model(fitted):
    engine, _ = fitted
    other = Engine(engine.config, host=engine.host, seed=1, data=engine.data)
    other.fit()
    a = engine.evaluate("test").predictions.probabilities["bm"]
    b = other.evaluate("test").predictions.probabilities["bm"]
    assert not np.array_equal(a, b)


# --- an in-process plugin adds a data column and a head type --------------------------------

SIZE_CLASSES = ["small", "medium", "large"]


class SizeOptions(MulticlassOptions):
    name: str = "size_class"
    label: str = "size"
    classes: list[str] = Field(default_factory=lambda: list(SIZE_CLASSES), min_length=2)


class SizeClassHead(MulticlassHead):
    """Lesion size class from the RoI box: small, medium or large."""

    Options = SizeOptions


def sized_synthetic(options: SyntheticOptions):
    """The synthetic phantoms plus a ``size`` column derived from each RoI box."""
    sample_set = synthetic_source(options)
    areas = [(s.box[2] - s.box[0]) * (s.box[3] - s.box[1]) for s in sample_set.samples]
    low, high = np.quantile(areas, [1 / 3, 2 / 3])
    samples = []
    for sample, area in zip(sample_set.samples, areas, strict=True):
        size = "small" if area <= low else ("medium" if area <= high else "large")
        samples.append(dataclasses.replace(sample, labels={**sample.labels, "size": size}))
    return dataclasses.replace(sample_set, samples=samples, columns=(*sample_set.columns, "size"))


class SizePlugin:
    name = "size_plugin"

    @hookimpl
    def mtl_register_data_sources(self, registry):
        registry.register("sized_synthetic", sized_synthetic, options=SyntheticOptions)

    @hookimpl
    def mtl_register_heads(self, registry):
        registry.register("size_class", SizeClassHead)


def test_in_process_plugin_head_and_source_are_used_by_a_run(tmp_path):
    raw = tiny_raw()
    raw["data"]["source"]["type"] = "sized_synthetic"
    raw["heads"].append("size_class")
    raw["training"]["epochs"] = 1
    raw["reports"] = ["summary"]
    console = Console(file=io.StringIO(), width=200)
    out = tmp_path / "run"
    result = mtlkit.run(load_config(raw), out_dir=out, plugins=[SizePlugin()], console=console)

    assert result.task_names == [*TASKS, "size_class"]
    metrics = json.loads((out / "metrics.json").read_text())
    size = metrics["sets"]["test"]["tasks"]["size_class"]
    assert set(METRICS) <= set(size) and size["n"] == metrics["sets"]["test"]["n_images"]
    assert "n_positive" not in size  # multiclass
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"size_class_label", *(f"size_class_prob_{c}" for c in SIZE_CLASSES)} <= set(rows[0])
    assert {row["size_class_label"] for row in rows} <= set(SIZE_CLASSES)
    for row in rows:
        total = sum(float(row[f"size_class_prob_{c}"]) for c in SIZE_CLASSES)
        assert total == pytest.approx(1.0, abs=1e-5)
    assert "size_class" in console.file.getvalue()  # the summary report lists the new task


def test_in_process_head_is_unknown_without_its_plugin(tiny_config):
    tiny_config["heads"].append("size_class")
    with pytest.raises(mtlkit.ConfigError, match="unknown head 'size_class'"):
        Engine(load_config(tiny_config))


# --- mtlkit.run with several seeds ----------------------------------------------------------


def test_run_with_two_seeds_writes_each_and_an_aggregate(tmp_path):
    from scipy.stats import t

    raw = tiny_raw(seed=[0, 1])
    raw["training"]["epochs"] = 1
    raw["reports"] = ["markdown"]
    out = tmp_path / "repeated"
    result = mtlkit.run(load_config(raw), out_dir=out, console=Console(file=io.StringIO()))

    for seed in (0, 1):
        seed_dir = out / f"seed_{seed}"
        for name in (
            "metrics.json",
            "predictions.csv",
            "history.json",
            "checkpoints/best.safetensors",
            "checkpoints/last.safetensors",
        ):
            assert (seed_dir / name).is_file(), f"seed_{seed}/{name}"
        assert read_metadata(seed_dir / "checkpoints" / "best.safetensors")["info"]["seed"] == seed
    for name in ("metrics.json", "predictions.csv", "config.yaml", "splits.json", "report.md"):
        assert (out / name).is_file(), name

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(to_json(result.metrics))
    assert metrics["seeds"] == [0, 1]
    per_seed = [json.loads((out / f"seed_{s}" / "metrics.json").read_text()) for s in (0, 1)]
    assert metrics["runs"]["seed_0"] == per_seed[0] and metrics["runs"]["seed_1"] == per_seed[1]
    for task in TASKS:
        cell = metrics["sets"]["test"]["tasks"][task]
        assert cell["n"] == per_seed[0]["sets"]["test"]["tasks"][task]["n"]
        for name in METRICS:
            summary = cell[name]
            assert set(summary) == {"mean", "sd", "ci95", "ci95_mean", "values"}
            values = [p["sets"]["test"]["tasks"][task][name] for p in per_seed]
            assert summary["values"] == values
            finite = [v for v in values if v is not None]
            if len(finite) == 2:
                mean, sd = np.mean(finite), np.std(finite, ddof=1)
                half = t.ppf(0.975, 1) * sd
                assert summary["mean"] == pytest.approx(mean)
                assert summary["sd"] == pytest.approx(sd)
                assert summary["ci95"] == pytest.approx([mean - half, mean + half])
                root2 = np.sqrt(2)
                expected = [mean - half / root2, mean + half / root2]
                assert summary["ci95_mean"] == pytest.approx(expected)
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:4] == ["seed", "image_id", "patient_id", "split"]
    counts = {s: sum(r["seed"] == s for r in rows) for s in ("0", "1")}
    per_seed_rows = [
        len((out / f"seed_{s}" / "predictions.csv").read_text().splitlines()) - 1 for s in (0, 1)
    ]
    assert [counts["0"], counts["1"]] == per_seed_rows
    probs = {s: [r["bm_prob"] for r in rows if r["seed"] == s] for s in ("0", "1")}
    assert probs["0"] != probs["1"]  # two seeds, two models
    report = (out / "report.md").read_text()
    assert "Seeds: 0, 1." in report and "±" in report


def test_run_rejecting_the_data_writes_nothing(tmp_path):
    raw = tiny_raw()
    raw["evaluation"]["reference_columns"] = {"bm": "radiologist_score"}
    out = tmp_path / "never"
    with pytest.raises(DataError, match="radiologist_score"):
        mtlkit.run(load_config(raw), out_dir=out, console=Console(file=io.StringIO()))
    assert not out.exists()


def test_run_refuses_a_non_empty_directory_before_training(tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        mtlkit.run(load_config(tiny_raw()), out_dir=out, console=Console(file=io.StringIO()))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"


# --- checks added after review ----------------------------------------------------------------


def test_a_misspelt_label_column_is_a_data_error():
    raw = tiny_raw()
    raw["heads"][0] = {"type": "bm", "label": "bm_typo"}
    engine = Engine(load_config(raw))
    with pytest.raises(DataError, match="task bm reads column 'bm_typo'"):
        engine.load_data()


class _FirstEpochWins:
    """A metric that makes epoch 1 the best, so the best and the last epochs differ."""

    name = "first_epoch_wins"

    def __init__(self):
        self.calls = 0

    @hookimpl
    def mtl_register_metrics(self, registry):
        def score(y_true, y_prob, threshold):
            self.calls += 1
            return 1.0 if self.calls <= 5 else 0.0  # 5 tasks: epoch 1 scores 1, later 0

        registry.register("first_epoch_wins", score)


def test_the_best_epoch_weights_are_restored_when_it_is_not_the_last(tmp_path):
    raw = tiny_raw()
    raw["training"]["epochs"] = 3
    raw["evaluation"]["metrics"] = ["auc", "first_epoch_wins"]
    raw["evaluation"]["select"] = "mean.first_epoch_wins"
    engine = Engine(load_config(raw), plugins=[_FirstEpochWins()])
    engine.checkpoint_dir = tmp_path
    result = engine.fit()
    assert result.best_epoch == 1
    from safetensors.torch import load_file

    best, last = (
        load_file(str(tmp_path / "best.safetensors")),
        load_file(str(tmp_path / "last.safetensors")),
    )
    assert any(not np.array_equal(best[k].numpy(), last[k].numpy()) for k in best)
    current = engine.model.state_dict()
    assert all(np.array_equal(current[k].numpy(), best[k].numpy()) for k in best)


def test_fit_twice_gives_the_same_model():
    engine = Engine(load_config(tiny_raw()))
    first = engine.fit()
    second = engine.fit()
    assert [h.train_loss for h in first.history] == [h.train_loss for h in second.history]


def test_hflip_tta_averages_each_image_with_its_mirror(fitted):
    engine, _ = fitted
    best = engine.checkpoint_dir / "best.safetensors"
    config = engine.config.model_copy(deep=True)
    config.evaluation.tta = "hflip"
    mirrored = Engine(config, host=engine.host)
    mirrored.load_checkpoint(best)
    images = [engine.data.cache[i, 0].numpy() for i in range(4)]
    plain = engine.predict(images)
    flipped = engine.predict([np.ascontiguousarray(i[:, ::-1]) for i in images])
    both = mirrored.predict(images)
    for task in TASKS:
        np.testing.assert_allclose(both[task], (plain[task] + flipped[task]) / 2, rtol=1e-5)
        assert not np.allclose(both[task], plain[task])


def test_the_best_epoch_is_chosen_without_tta_and_reported_with_it(tmp_path):
    raw = tiny_raw()
    raw["evaluation"]["tta"] = "hflip"
    engine = Engine(load_config(raw))
    engine.checkpoint_dir = tmp_path
    result = engine.fit()
    recorded = result.history[result.best_epoch - 1].val_metrics
    plain_config = engine.config.model_copy(deep=True)
    plain_config.evaluation.tta = "none"
    plain = Engine(plain_config, host=engine.host, data=engine.data)
    plain.load_checkpoint(tmp_path / "best.safetensors")
    without, reported = plain.evaluate("val").tasks, engine.evaluate("val").tasks
    for task in TASKS:  # the per-epoch validation does without the intervals and calibration
        plain_metrics = {name: without[task][name] for name in recorded[task]}
        assert plain_metrics == pytest.approx(recorded[task], nan_ok=True), task
    assert reported != without
