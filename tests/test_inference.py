"""The inference paths of ``evaluation.inference``: each gives eager fp32's probabilities
within its tolerance, the live (training) model is never changed, a copy follows the
weights, and ``auto``, the fallbacks and the command-line flag behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_raw
from torch import nn

from mtlkit import ConfigError, Engine, UsageError, load_config, load_predictor
from mtlkit.cli import main
from mtlkit.inference import paths as inference_paths
from mtlkit.inference.folding import FoldingError, fold_batch_norms, frozen_copy
from mtlkit.inference.paths import (
    BF16_TOLERANCE,
    ONNX_AFTER_IMAGES,
    TOLERANCE,
    InferencePaths,
)

FAST_EXACT = ["channels_last", "folded", "onnx"]


def scrambled(engine: Engine) -> Engine:
    """``engine`` with a built model whose BatchNorm statistics and affine parameters are
    far from their initial identity, so that folding them is not a no-op."""
    torch.manual_seed(0)
    engine.model = engine.build_model()
    for module in engine.model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    with torch.no_grad():  # spread the probabilities over (0, 1), as a trained model does
        for parameter in engine.model.heads.parameters():
            parameter.mul_(30)
    return engine


@pytest.fixture(scope="module")
def engine() -> Engine:
    """A tiny model with mirror-image TTA, not trained (no data needed)."""
    raw = tiny_raw()
    raw["evaluation"]["tta"] = "hflip"
    return scrambled(Engine(load_config(raw)))


@pytest.fixture(scope="module")
def rois() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (40, 1, 32, 32), generator=generator).to(torch.uint8)


def probabilities(engine: Engine, path: str, rois: torch.Tensor) -> dict[str, np.ndarray]:
    engine.inference = InferencePaths(path, engine.device)
    return engine._forward_all(rois)[0]


def largest_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.mark.parametrize("path", [*FAST_EXACT, "bf16"])
def test_each_path_gives_eagers_probabilities_within_its_tolerance(engine, rois, path):
    eager = probabilities(engine, "eager", rois)
    spread = max(float(p.max() - p.min()) for p in eager.values())
    assert spread > 0.01, "the scrambled model should not predict a constant"
    got = probabilities(engine, path, rois)
    tolerance = BF16_TOLERANCE if path == "bf16" else TOLERANCE
    assert largest_difference(got, eager) <= tolerance
    assert engine.inference.choose(engine.model, len(rois)) == path  # no silent fallback


@pytest.mark.slow  # torch.compile takes 20-60 s on two cores
def test_compile_gives_eagers_probabilities(engine, rois):
    eager = probabilities(engine, "eager", rois)
    with torch._dynamo.config.patch(suppress_errors=False):
        got = probabilities(engine, "compile", rois)
    assert largest_difference(got, eager) <= TOLERANCE


def test_folding_removes_every_batchnorm_after_a_convolution(engine, rois):
    copy = frozen_copy(engine.model)
    before = sum(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    example = torch.randn(2, 1, 32, 32)
    assert fold_batch_norms(copy, example) == before > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())


class ReadTwice(nn.Module):
    """A convolution whose output is read by its BatchNorm and by the sum after it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.bn.running_mean.fill_(0.7)

    def forward(self, x):
        y = self.conv(x)
        return {"t": (self.bn(y) + y).mean(dim=(1, 2, 3))}


def test_a_fold_that_would_change_the_outputs_is_refused():
    model = ReadTwice().eval()
    with pytest.raises(FoldingError, match="changed task 't'"):
        fold_batch_norms(model, torch.randn(2, 1, 8, 8))


def test_the_training_model_is_untouched_by_a_fast_path(engine, rois):
    model = engine.model
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = [p for p in model.parameters() if p.ndim == 4]
    for path in ("folded", "channels_last"):
        probabilities(engine, path, rois)
    assert model.training, "evaluation left the live model in eval mode"
    assert all(p.requires_grad for p in model.parameters())
    assert all(w.is_contiguous() for w in weights), "the live model became channels_last"
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model.eval()


def test_the_inference_copy_follows_changed_weights(engine, rois):
    engine.inference = InferencePaths("folded", engine.device)
    first = engine._forward_all(rois)[0]
    head = engine.model.heads["bm"]
    weight = next(head.parameters())
    with torch.no_grad():
        weight.add_(0.5)  # in place, as an optimiser step changes it
    try:
        changed = engine._forward_all(rois)[0]
        assert largest_difference(changed, first) > 1e-3
        assert largest_difference(changed, probabilities(engine, "eager", rois)) <= TOLERANCE
    finally:
        with torch.no_grad():
            weight.sub_(0.5)


def test_auto_runs_folded_until_onnx_pays_off(engine, monkeypatch):
    monkeypatch.setattr(inference_paths, "missing_onnx_modules", lambda: [])
    paths = InferencePaths("auto", torch.device("cpu"))
    assert paths.choose(engine.model, ONNX_AFTER_IMAGES - 1) == "folded"
    assert paths.choose(engine.model, ONNX_AFTER_IMAGES) == "onnx"
    paths.scored(ONNX_AFTER_IMAGES - 10)
    assert paths.choose(engine.model, 10) == "onnx"  # the images already scored count
    with paths.validating():  # a new export for each epoch's weights would cost more
        assert paths.choose(engine.model, 10 * ONNX_AFTER_IMAGES) == "folded"
    eager = InferencePaths("eager", torch.device("cpu"))
    with eager.validating():  # asked for by name: kept
        assert eager.choose(engine.model, 10) == "eager"
    assert InferencePaths("auto", torch.device("meta")).choose(engine.model, 10**6) == "folded"


def test_auto_without_onnxruntime_runs_folded(engine, monkeypatch):
    monkeypatch.setattr(inference_paths, "missing_onnx_modules", lambda: ["onnxruntime"])
    paths = InferencePaths("auto", torch.device("cpu"))
    assert paths.choose(engine.model, 10 * ONNX_AFTER_IMAGES) == "folded"


def test_onnx_without_onnxruntime_is_a_config_error_naming_the_install(monkeypatch):
    monkeypatch.setattr(inference_paths, "missing_onnx_modules", lambda: ["onnxruntime"])
    raw = tiny_raw()
    raw["evaluation"]["inference"] = "onnx"
    with pytest.raises(ConfigError) as caught:
        Engine(load_config(raw))
    message = str(caught.value)
    assert "evaluation.inference" in message
    assert "onnxruntime" in message and "pip install 'mtlkit[onnx]'" in message


def test_an_unknown_path_is_refused_with_the_choices():
    raw = tiny_raw()
    raw["evaluation"]["inference"] = "fastest"
    with pytest.raises(ConfigError, match="evaluation.inference"):
        load_config(raw)


def test_a_failed_compile_warns_and_runs_the_folded_model(engine, rois, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C compiler here")

    monkeypatch.setattr(torch, "compile", lambda module, **kw: broken)
    eager = probabilities(engine, "eager", rois)
    with pytest.warns(UserWarning, match="torch.compile failed.*no C compiler"):
        got = probabilities(engine, "compile", rois)
    assert largest_difference(got, eager) <= TOLERANCE


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint of a one-epoch tiny fit (its config says inference: auto)."""
    engine = Engine(load_config(tiny_raw(training={**tiny_raw()["training"], "epochs": 1})))
    engine.checkpoint_dir = tmp_path_factory.mktemp("checkpoints")
    engine.fit()
    return engine.checkpoint_dir / "best.safetensors"


def test_the_inference_flag_overrides_the_checkpoints_config(checkpoint):
    assert load_predictor(checkpoint, device="cpu").inference.configured == "auto"
    engine = load_predictor(checkpoint, device="cpu", inference="eager")
    assert engine.config.evaluation.inference == engine.inference.configured == "eager"
    with pytest.raises(UsageError, match="--inference: expected one of auto, eager"):
        load_predictor(checkpoint, device="cpu", inference="fastest")


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_the_commands_pass_inference_on(checkpoint, tmp_path, monkeypatch, command):
    import mtlkit.evaluation.external as external

    seen = []
    real = external.trained_engine

    def spy(*args, **kwargs):
        seen.append(kwargs.get("inference"))
        return real(*args, **kwargs)

    monkeypatch.setattr(external, "trained_engine", spy)
    monkeypatch.setattr("mtlkit.runs.prediction.trained_engine", spy)
    image = tmp_path / "roi.png"
    from PIL import Image

    Image.fromarray(np.full((40, 40), 90, dtype=np.uint8)).save(image)
    data = tmp_path / "external.yaml"
    data.write_text(
        "name: ext\nsource: {type: synthetic, patients: 12, image_size: 32, seed: 3}\n",
        encoding="utf-8",
    )
    if command == "predict":
        argv = ["predict", "--checkpoint", str(checkpoint), str(image), "--quiet"]
    else:
        argv = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--quiet"]
    assert main([*argv, "--device", "cpu", "--inference", "channels_last"]) == 0
    assert seen == ["channels_last"]
    assert main([*argv, "--inference", "fastest"]) == 2


@pytest.mark.parametrize("path", ["folded", "onnx"])
def test_segmentation_maps_follow_eager_through_the_fast_paths(rois, path):
    raw = tiny_raw()
    raw["heads"] = ["bm", {"type": "segmentation", "width": 8}]
    raw["constraints"] = []
    raw["evaluation"]["reference_columns"] = {}
    raw["evaluation"]["select"] = "bm.auc"
    raw["data"]["split"]["stratify"] = ["bm"]
    engine = scrambled(Engine(load_config(raw)))
    engine.inference = InferencePaths("eager", engine.device)
    _, _, eager = engine._forward_all(rois[:8])
    engine.inference = InferencePaths(path, engine.device)
    _, _, got = engine._forward_all(rois[:8])
    assert got.keys() == eager.keys() and got
    for name, maps in eager.items():
        assert maps.shape == got[name].shape == (8, 32, 32)
        # float16 maps: a 1e-4 difference can round to one float16 step (1e-3 near 1)
        assert np.abs(got[name].astype(np.float32) - maps.astype(np.float32)).max() <= 1e-3
