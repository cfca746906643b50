"""Test-time batch-norm statistics: what the adapted copy holds and leaves alone, and the
external sets, ``mtl evaluate --adapt-bn`` and ``mtl predict --adapt-bn`` that use it."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from conftest import tiny_raw, write_yaml
from PIL import Image
from torch import nn

from mtlkit import crop_and_resize, load_config, load_predictor, predict_files, run
from mtlkit.cli import main
from mtlkit.data.transforms import normalize_batch
from mtlkit.errors import UsageError
from mtlkit.evaluation.bn_adaptation import MIN_IMAGES, adapted_to, in_batches, rebatched
from mtlkit.plugins.synthetic.phantoms import generate_phantoms, write_phantom_set
from mtlkit.plugins.synthetic.source import SyntheticOptions


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 1),
    ).eval()


def rois(n: int, brightness: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 60, (n, 1, 12, 12), generator=generator)
    return (noise + brightness).clamp(0, 255).to(torch.uint8)


def test_the_statistics_are_those_of_every_image_alike_whatever_the_batches():
    model = small_model()
    images = rois(100, 120)  # run as 64 + 36: the short batch counts for its 36 images
    adapted = adapted_to(model, in_batches(images, 16), torch.device("cpu"))
    with torch.no_grad():
        features = model[0](normalize_batch(images))  # the norm's input over all images
    norm = adapted[1]
    torch.testing.assert_close(norm.running_mean, features.mean(dim=(0, 2, 3)))
    # per batch the unbiased variance, averaged: close to the whole set's variance
    torch.testing.assert_close(norm.running_var, features.var(dim=(0, 2, 3)), rtol=0.05, atol=0)


def test_how_the_caller_batches_the_images_changes_nothing():
    images = rois(150, 90)
    one = adapted_to(small_model(), in_batches(images, 7), torch.device("cpu"))
    other = adapted_to(small_model(), [images[:100], images[100:]], torch.device("cpu"))
    for key, value in one.state_dict().items():
        assert torch.equal(value, other.state_dict()[key]), key
    assert [len(b) for b in rebatched(in_batches(images, 7), 64)] == [64, 64, 22]
    assert torch.equal(torch.cat(list(rebatched(in_batches(images, 7), 64))), images)


def test_the_trained_model_is_left_as_it_was_and_the_copy_is_ready_to_score():
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = adapted_to(model, in_batches(rois(20, 200)), torch.device("cpu"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not adapted.training and not any(m.training for m in adapted.modules())
    assert adapted[1].momentum == model[1].momentum == 0.1
    # the weights are the trained ones; only the statistics moved
    assert torch.equal(adapted[0].weight, model[0].weight)
    assert not torch.allclose(adapted[1].running_mean, model[1].running_mean)
    with torch.no_grad():  # dropout stayed off: scoring twice gives the same
        x = normalize_batch(rois(4, 200))
        torch.testing.assert_close(adapted(x), adapted(x))


def test_a_brighter_site_scores_like_the_training_site_once_adapted():
    # what it is for: a gain shift moves every activation; the adapted model undoes it
    model = small_model()
    home, brighter = rois(64, 60), rois(64, 60)
    brighter = (brighter.int() + 120).clamp(0, 255).to(torch.uint8)
    model = adapted_to(model, in_batches(home), torch.device("cpu"))
    shifted_site = adapted_to(model, in_batches(brighter), torch.device("cpu"))
    with torch.no_grad():
        at_home = model(normalize_batch(home))
        unadapted = model(normalize_batch(brighter))
        adapted = shifted_site(normalize_batch(brighter))
    assert (adapted - at_home).abs().mean() < 0.2 * (unadapted - at_home).abs().mean()


def test_too_few_images_are_refused_by_name():
    with pytest.raises(UsageError, match=f"at least {MIN_IMAGES} images, got 5"):
        adapted_to(small_model(), in_batches(rois(5, 100)), torch.device("cpu"))


def test_a_model_without_batch_norm_comes_back_unchanged():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()).eval()
    adapted = adapted_to(model, in_batches(rois(MIN_IMAGES, 100)), torch.device("cpu"))
    x = normalize_batch(rois(2, 100))
    with torch.no_grad():
        torch.testing.assert_close(adapted(x), model(x))


# --- in a run, in `mtl evaluate` and in `mtl predict` --------------------------------------

EXTERNAL = {"type": "synthetic", "patients": 10, "image_size": 32, "seed": 7}


@pytest.fixture(scope="module")
def adapted_run(tmp_path_factory):
    """A tiny run scoring one external set twice: as trained (the set says so) and adapted
    (the run's evaluation.adapt_bn)."""
    raw = tiny_raw(name="adapt", reports=["summary", "markdown", "model_card", "html"])
    raw["training"]["epochs"] = 1
    raw["seed"] = [0, 1]  # the summary of the seeds keeps the mark
    raw["evaluation"]["adapt_bn"] = True
    raw["evaluation"]["external"] = [
        {"name": "as_trained", "source": EXTERNAL, "adapt_bn": False},
        {"name": "adapted", "source": EXTERNAL},
    ]
    out = tmp_path_factory.mktemp("adapt") / "run"
    run(load_config(raw), out_dir=out)
    return out


def test_a_run_scores_an_adapted_external_set_beside_the_same_set_as_trained(adapted_run):
    sets = json.loads((adapted_run / "metrics.json").read_text())["sets"]
    n = sets["as_trained"]["n_images"]
    assert sets["adapted"]["batch_norm"] == f"statistics of this set's {n} images"
    assert "batch_norm" not in sets["as_trained"] and "batch_norm" not in sets["test"]
    seed_sets = json.loads((adapted_run / "seed_1" / "metrics.json").read_text())["sets"]
    assert seed_sets["adapted"]["batch_norm"] == sets["adapted"]["batch_norm"]
    rows = list(
        csv.DictReader(io.StringIO((adapted_run / "seed_0" / "predictions.csv").read_text()))
    )
    by_set = {
        name: [float(r["bm_prob"]) for r in rows if r["split"] == name]
        for name in ("as_trained", "adapted")
    }
    assert len(by_set["adapted"]) == len(by_set["as_trained"]) == n
    assert by_set["adapted"] != by_set["as_trained"]
    for report in ("report.md", "model_card.md"):  # the reports say which set was adapted
        text = (adapted_run / report).read_text()
        assert "adapted: " in text and text.count("batch norm adapted to the set") == 1, report
    html = (adapted_run / "report.html").read_text()
    assert html.count("batch norm adapted to the set") == 1


def test_mtl_evaluate_adapts_as_the_run_did_and_leaves_the_checkpoint_alone(adapted_run, tmp_path):
    sets = json.loads((adapted_run / "seed_0" / "metrics.json").read_text())["sets"]
    checkpoint = adapted_run / "seed_0" / "checkpoints" / "best.safetensors"
    before = checkpoint.read_bytes()
    # the data file says nothing: the run's evaluation.adapt_bn; the flag overrides both
    bare = write_yaml(tmp_path / "bare.yaml", {"name": "adapted", "source": EXTERNAL})
    off = write_yaml(tmp_path / "off.yaml", {"name": "adapted", "source": EXTERNAL, "adapt_bn": 0})
    cases = [
        (bare, [], "adapted"),
        (bare, ["--no-adapt-bn"], "as_trained"),
        (off, [], "as_trained"),
        (off, ["--adapt-bn"], "adapted"),
    ]
    for index, (data, flag, expected) in enumerate(cases):
        out = tmp_path / f"eval{index}"
        command = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(data)]
        assert main([*command, "--out", str(out), "--quiet", *flag]) == 0
        evaluated = json.loads((out / "metrics.json").read_text())["sets"]["adapted"]
        assert evaluated["tasks"] == sets[expected]["tasks"]
    assert checkpoint.read_bytes() == before


def test_an_external_set_too_small_to_adapt_is_refused_before_training(tmp_path):
    raw = tiny_raw()
    small = {**EXTERNAL, "patients": 3}  # fewer than 16 images
    raw["evaluation"]["external"] = [{"name": "small", "source": small, "adapt_bn": True}]
    with pytest.raises(
        UsageError, match=r"external\[0\]: adapt_bn needs at least 16 images .* has 1[0-5]\b"
    ):
        run(load_config(raw), out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_set_too_small_for_the_runs_adapt_bn_is_scored_as_trained_and_said_so(tmp_path, capsys):
    raw = tiny_raw(name="small")
    raw["training"]["epochs"] = 1
    raw["evaluation"]["adapt_bn"] = True
    raw["evaluation"]["external"] = [{"name": "small", "source": {**EXTERNAL, "patients": 3}}]
    raw["output_dir"] = str(tmp_path / "runs" / "{name}")
    assert main(["run", str(write_yaml(tmp_path / "run.yaml", raw)), "--quiet"]) == 0
    captured = capsys.readouterr()
    printed = " ".join((captured.out + captured.err).split())
    assert "too few for batch-norm statistics (16 at least); scored with the trained" in printed
    sets = json.loads((tmp_path / "runs" / "small" / "metrics.json").read_text())["sets"]
    assert "batch_norm" not in sets["small"]


def test_predict_files_with_adapt_bn_predicts_as_the_adapted_engine(adapted_run, tmp_path):
    images = tmp_path / "site"
    write_phantom_set(
        generate_phantoms(SyntheticOptions(patients=8, image_size=32, seed=3).settings(), 3),
        images,
    )
    engine = load_predictor(adapted_run, device="cpu")
    trained = engine.model
    plain = predict_files(engine, images / "images")
    adapted = predict_files(engine, images / "images", adapt_bn=True, batch_size=5)
    assert engine.model is trained
    assert [r["image_id"] for r in adapted] == [r["image_id"] for r in plain]
    assert [r["bm_prob"] for r in adapted] != [r["bm_prob"] for r in plain]
    # the same as adapting the engine to these RoIs by hand (the whole image: no boxes)
    rois = torch.from_numpy(
        np.stack(
            [
                crop_and_resize(
                    np.array(Image.open(images / "images" / f"{r['image_id']}")),
                    (0, 0, r["width"], r["height"]),
                    32,
                )
                for r in plain
            ]
        )
    )[:, None]
    with engine.batch_norm_adapted(in_batches(rois, 7)):
        expected = engine.predict_rois(rois).probabilities["bm"]
    np.testing.assert_allclose([r["bm_prob"] for r in adapted], expected, rtol=0, atol=1e-6)
    with pytest.raises(UsageError, match="at least 16 images, got 3"):
        predict_files(engine, sorted((images / "images").iterdir())[:3], adapt_bn=True)
