"""``mtl export --format onnx``: the exported graph predicts what the engine does (in ONNX
Runtime, batch sizes 1 and several), its metadata reads back, and bad requests are refused."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import tiny_raw

from mtlkit import Engine, RoiConfig, UsageError, crop_and_resize, load_config, roi_box, run
from mtlkit.cli import main
from mtlkit.components.usage import components_used
from mtlkit.evaluation.external import trained_engine
from mtlkit.export.metadata import read_metadata_props
from mtlkit.export.onnx_file import export_onnx, output_path
from mtlkit.plugins.busi import BusiOptions, busi_source
from mtlkit.training.checkpoint import save_weights

SHARED_BUSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def hinge_run(tmp_path_factory) -> Path:
    """A tiny trained run of the five tasks with the hierarchical hinge (no adjustment)."""
    out = tmp_path_factory.mktemp("export") / "run"
    run(load_config(tiny_raw()), out_dir=out)
    return out


@pytest.fixture(scope="module")
def hinge_onnx(hinge_run, tmp_path_factory) -> Path:
    """The run exported through the command line, from its run directory."""
    out = tmp_path_factory.mktemp("onnx") / "hinge.onnx"
    assert main(["export", "--checkpoint", str(hinge_run), "--out", str(out), "--quiet"]) == 0
    return out


def combined_raw() -> dict:
    """Every kind of output: binary heads adjusted by the coherent constraint, a multiclass
    head and a segmentation head."""
    raw = tiny_raw()
    raw["heads"] = [
        "bm",
        "alnm",
        {
            "type": "multiclass",
            "name": "bm_class",
            "label": "bm",
            "classes": ["benign", "malignant"],
        },
        {"type": "segmentation", "width": 8},
    ]
    raw["constraints"] = [{"type": "coherent", "pairs": [["bm", "alnm"]]}]
    raw["evaluation"]["reference_columns"] = {"bm": "oracle_bm"}
    return raw


@pytest.fixture(scope="module")
def combined_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "combined"
    run(load_config(combined_raw()), out_dir=out)
    return out


@pytest.fixture(scope="module")
def combined_onnx(combined_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "combined.onnx"
    export_onnx(combined_run / "checkpoints" / "best.safetensors", out)
    return out


def onnx_outputs(path: Path, rois: torch.Tensor) -> dict[str, np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": rois.numpy()}), strict=True))


def model_maps(engine: Engine, rois: torch.Tensor) -> dict[str, np.ndarray]:
    """Each dense task's per-pixel probabilities in float32 (the engine keeps float16)."""
    from mtlkit import normalize_batch

    with torch.no_grad():
        outputs = engine.model.eval()(normalize_batch(rois))
    return {h.name: h.probabilities(outputs[h.name]).numpy() for h in engine.dense_heads}


def check_parity(path: Path, checkpoint: Path, rois: torch.Tensor) -> float:
    """The largest difference between the exported model in ONNX Runtime and the engine's
    own predictions (TTA off) on ``rois``, in batches of 1 and of all of them."""
    engine = trained_engine(checkpoint, device="cpu")
    largest = 0.0
    for batch in (rois[:1], rois):
        got = onnx_outputs(path, batch)
        adjusted, raw, maps = engine._forward_all(batch, tta=False)
        expected = dict(adjusted)
        expected.update({f"{task}_raw": p for task, p in (raw or {}).items()})
        expected.update(model_maps(engine, batch))
        assert sorted(got) == sorted(expected)
        for name, value in expected.items():
            assert got[name].shape == value.shape, name
            largest = max(largest, float(np.abs(got[name] - value).max()))
        for name, value in maps.items():  # the engine's own float16 maps, to their precision
            assert np.abs(got[name] - value.astype(np.float32)).max() < 1e-3
    return largest


def first_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "best.safetensors"


def random_rois(count: int, size: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 1, size, size), generator=generator).to(torch.uint8)


def test_the_export_predicts_what_the_engine_does_on_random_and_phantom_rois(hinge_run, hinge_onnx):
    checkpoint = first_checkpoint(hinge_run)
    assert check_parity(hinge_onnx, checkpoint, random_rois(6, 32)) < TOLERANCE
    phantoms = trained_engine(checkpoint, device="cpu").data.cache[:9]
    assert check_parity(hinge_onnx, checkpoint, phantoms) < TOLERANCE
    # not a degenerate model whose every output sits at 0 or 1
    assert np.ptp(onnx_outputs(hinge_onnx, phantoms)["bm"]) > 1e-3


@pytest.mark.skipif(not SHARED_BUSI.is_dir(), reason="../shared/data/busi is not present")
def test_the_export_predicts_what_the_engine_does_on_busi_rois(hinge_run, hinge_onnx):
    rois = busi_rois(SHARED_BUSI, 8, 32)
    assert check_parity(hinge_onnx, first_checkpoint(hinge_run), rois) < TOLERANCE


def busi_rois(root: Path, count: int, size: int) -> torch.Tensor:
    """The first ``count`` BUSI images' RoIs (mask extent, margin 0.2, as configs/busi.yaml)."""
    samples = busi_source(BusiOptions(root=str(root))).samples[:count]
    roi = RoiConfig(mode="mask", margin=0.2)
    crops = [
        crop_and_resize(image, roi_box(sample, image, roi), size)
        for sample in samples
        for image in [np.asarray(sample.image())]
    ]
    return torch.from_numpy(np.stack(crops))[:, None]


def test_the_metadata_reads_back(hinge_run, hinge_onnx):
    model = onnx.load(str(hinge_onnx))
    props = {p.key: p.value for p in model.metadata_props}
    document = read_metadata_props(props, hinge_onnx)
    pre = json.loads(props["mtlkit.preprocessing"])
    assert pre == document["preprocessing"]
    assert (pre["image_size"], pre["channels"], pre["dtype"], pre["range"]) == (
        32,
        1,
        "uint8",
        [0, 255],
    )
    assert pre["normalization"] == {
        "in_graph": True,
        "formula": "(image / 255 - mean) / std",
        "mean": 0.5,
        "std": 0.25,
    }
    assert (pre["roi"]["mode"], pre["roi"]["margin"]) == ("box", 0.5)
    tasks = {t["name"]: t for t in document["tasks"]}
    assert list(tasks) == ["bm", "alnm", "alnm_ge2", "alnm_ge3", "alnm_ge4"]
    assert tasks["bm"]["kind"] == "binary" and tasks["bm"]["threshold"] == 0.5
    assert tasks["bm"]["raw_output"] is None  # the hinge only trains; nothing is adjusted
    assert document["tta"]["in_graph"] is False
    checkpoint = first_checkpoint(hinge_run)
    assert document["checkpoint"]["file"] == "best.safetensors"
    assert len(document["checkpoint"]["sha256"]) == 64
    assert document["checkpoint"]["info"]["seed"] == 0
    assert document["config"]["backbone"]["model"] == "resnet10t"
    assert document["exporter"]["opset"] == 18
    assert document["exporter"]["max_abs_difference"] < TOLERANCE
    assert model.opset_import[0].version == 18 and model.producer_name == "mtlkit"
    graph_input = model.graph.input[0]
    assert graph_input.name == "image"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 32, 32]
    assert checkpoint.is_file()


def test_multiclass_segmentation_and_adjusted_outputs(combined_run, combined_onnx):
    checkpoint = first_checkpoint(combined_run)
    engine = trained_engine(checkpoint, device="cpu")
    rois = torch.cat([random_rois(3, 32), engine.data.cache[:5]])
    assert check_parity(combined_onnx, checkpoint, rois) < TOLERANCE
    got = onnx_outputs(combined_onnx, rois)
    assert got["bm_class"].shape == (8, 2) and np.allclose(got["bm_class"].sum(1), 1, atol=1e-5)
    assert got["lesion"].shape == (8, 32, 32)
    # the coherent constraint: bm is the max of bm and alnm, and it did change some
    assert np.allclose(got["bm"], np.maximum(got["bm_raw"], got["alnm_raw"]), atol=1e-6)
    assert np.allclose(got["alnm"], got["alnm_raw"])
    props = {p.key: p.value for p in onnx.load(str(combined_onnx)).metadata_props}
    tasks = {t["name"]: t for t in read_metadata_props(props, combined_onnx)["tasks"]}
    assert tasks["bm"]["raw_output"] == "bm_raw"
    assert tasks["bm_class"]["kind"] == "multiclass" and tasks["bm_class"]["threshold"] is None
    assert tasks["bm_class"]["classes"] == ["benign", "malignant"]
    assert (tasks["lesion"]["kind"], tasks["lesion"]["shape"]) == (
        "segmentation",
        ["batch", 32, 32],
    )


def test_hflip_tta_in_the_graph_matches_the_engine_with_tta(hinge_run, tmp_path):
    checkpoint = first_checkpoint(hinge_run)
    out = tmp_path / "tta.onnx"
    outcome = export_onnx(checkpoint, out, tta="hflip")
    assert outcome.metadata["tta"]["in_graph"] is True
    engine = trained_engine(checkpoint, device="cpu")
    engine.config.evaluation.tta = "hflip"
    rois = engine.data.cache[:6]
    with_tta = engine._forward_all(rois, tta=True)[0]
    without = engine._forward_all(rois, tta=False)[0]
    got = onnx_outputs(out, rois)
    assert sorted(got) == sorted(with_tta)
    for task in with_tta:
        assert np.abs(got[task] - with_tta[task]).max() < TOLERANCE
    assert max(np.abs(with_tta[t] - without[t]).max() for t in with_tta) > TOLERANCE


def test_an_existing_output_is_refused_unless_forced(hinge_run, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"keep me")
    code = main(["export", "--checkpoint", str(hinge_run), "--out", str(out), "--quiet"])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "already exists" in err and "--force" in err and "Traceback" not in err
    assert out.read_bytes() == b"keep me"
    argv = ["export", "--checkpoint", str(hinge_run), "--out", str(out), "--force", "--quiet"]
    assert main(argv) == 0
    assert onnx.load(str(out)).producer_name == "mtlkit"
    assert "written" in capsys.readouterr().out
    assert not list(tmp_path.glob(".model.onnx.*"))  # no temporary file left behind


def test_a_missing_onnx_extra_names_the_install_command(hinge_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # its import now fails
    out = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(hinge_run), "--out", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "onnxscript" in err and "pip install 'mtlkit[onnx]'" in err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda tmp: tmp / "nope", "does not exist"),
        (lambda tmp: tmp, "holds no checkpoints/best.safetensors"),
    ],
)
def test_a_bad_checkpoint_is_refused(make, words, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(make(tmp_path)), "--quiet"]) == 2
    assert words in " ".join(capsys.readouterr().err.split())


def test_an_unwritable_output_is_refused_before_exporting(tmp_path):
    (tmp_path / "plain").write_text("a file, not a folder")
    with pytest.raises(UsageError, match="not a writable folder"):
        output_path(tmp_path / "best.safetensors", tmp_path / "plain" / "model.onnx", False)


def test_an_output_name_clash_is_refused(tmp_path):
    raw = tiny_raw()
    raw["heads"] = ["bm", "alnm", {"type": "binary", "name": "bm_raw", "label": "bm"}]
    raw["constraints"] = [{"type": "coherent", "pairs": [["bm", "alnm"]]}]
    raw["evaluation"]["reference_columns"] = {}
    checkpoint = untrained_checkpoint(raw, tmp_path / "clash.safetensors")
    with pytest.raises(UsageError, match="bm_raw"):
        export_onnx(checkpoint, tmp_path / "clash.onnx")
    assert not (tmp_path / "clash.onnx").exists()


def untrained_checkpoint(raw: dict, path: Path) -> Path:
    """A freshly initialised model of ``raw`` saved as a run saves its weights."""
    engine = Engine(load_config(raw))
    engine.build_model()
    used = components_used(engine.config, engine.components, engine.host)
    save_weights(engine.model, path, engine.config, {"epoch": 0, "seed": engine.seed}, used)
    return path


@pytest.mark.slow  # about 40 s on 2 CPU cores: a full-size ResNet50 traced and checked
def test_a_resnet50_export_predicts_what_the_engine_does(tmp_path):
    raw = tiny_raw()
    raw["backbone"] = {"type": "resnet50", "pretrained": False, "in_chans": 1}
    raw["data"]["image_size"] = 128
    checkpoint = untrained_checkpoint(raw, tmp_path / "resnet50.safetensors")
    start = time.perf_counter()
    export_onnx(checkpoint, tmp_path / "resnet50.onnx")
    assert time.perf_counter() - start < 300
    rois = random_rois(4, 128)
    if SHARED_BUSI.is_dir():
        rois = torch.cat([rois, busi_rois(SHARED_BUSI, 4, 128)])
    assert check_parity(tmp_path / "resnet50.onnx", checkpoint, rois) < TOLERANCE
