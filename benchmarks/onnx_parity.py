"""How closely an exported ONNX model (in ONNX Runtime) follows the engine (in PyTorch) on
BUSI RoIs: the largest absolute difference of any output.

    python benchmarks/onnx_parity.py [--checkpoint CKPT] [--images 64] [--busi DIR]

Without ``--checkpoint`` it exports a ResNet50 (``pretrained: false``, as initialised)
built from configs/busi.yaml (128 px, mask RoIs with margin 0.2, ``tta: hflip``); with one
it exports that. Both graphs are measured: without TTA against the engine with TTA off,
and with the mirror image inside the graph against the engine with TTA on. RoIs are cut
from the first ``--images`` BUSI images as the config cuts them and scored in batches of
1 and of 16.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from mtlkit import Engine, crop_and_resize, load_config, roi_box, trained_engine
from mtlkit.components.usage import components_used
from mtlkit.export.onnx_file import export_onnx
from mtlkit.plugins.busi import BusiOptions, busi_source
from mtlkit.training.checkpoint import save_weights

ROOT = Path(__file__).resolve().parents[1]


def untrained_resnet50(folder: Path) -> Path:
    """configs/busi.yaml with a freshly initialised ResNet50, saved as a run saves it."""
    config = load_config(ROOT / "configs" / "busi.yaml", ["backbone.model=resnet50"])
    engine = Engine(config)
    engine.build_model()
    used = components_used(engine.config, engine.components, engine.host)
    path = folder / "resnet50.safetensors"
    save_weights(engine.model, path, engine.config, {"epoch": 0, "seed": engine.seed}, used)
    return path


def busi_rois(engine: Engine, root: Path, count: int) -> torch.Tensor:
    """The first ``count`` BUSI images' RoIs, cut and resized as the engine's config says."""
    samples = busi_source(BusiOptions(root=str(root))).samples[:count]
    roi, size = engine.config.data.roi, engine.config.data.image_size
    crops = []
    for sample in samples:
        image = np.asarray(sample.image())
        crops.append(crop_and_resize(image, roi_box(sample, image, roi), size))
    return torch.from_numpy(np.stack(crops))[:, None]


def largest_difference(path: Path, engine: Engine, rois: torch.Tensor, tta: bool) -> float:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    largest = 0.0
    for batch in (1, 16):
        for start in range(0, len(rois), batch):
            part = rois[start : start + batch]
            adjusted, raw, _ = engine._forward_all(part, tta=tta)
            expected = {**adjusted, **{f"{t}_raw": p for t, p in (raw or {}).items()}}
            got = dict(zip(names, session.run(names, {"image": part.numpy()}), strict=True))
            for name, value in expected.items():
                largest = max(largest, float(np.abs(got[name] - value).max()))
    return largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--busi", type=Path, default=ROOT.parent / "shared" / "data" / "busi")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint or untrained_resnet50(Path(folder))
        engine = trained_engine(checkpoint, device="cpu")
        rois = busi_rois(engine, args.busi, args.images)
        size = engine.config.data.image_size
        print(f"{engine.config.backbone}, {size} px, {len(rois)} BUSI RoIs")
        for tta in ("none", "hflip"):
            out = Path(folder) / f"model-{tta}.onnx"
            start = time.perf_counter()
            outcome = export_onnx(checkpoint, out, tta=tta)
            seconds = time.perf_counter() - start
            engine.config.evaluation.tta = tta
            difference = largest_difference(out, engine, rois, tta == "hflip")
            print(
                f"tta {tta}: export {seconds:.1f} s ({out.stat().st_size / 2**20:.0f} MiB), "
                f"max |ONNX Runtime - engine| = {difference:.2e} on BUSI RoIs "
                f"({outcome.max_difference:.2e} on the export's own random RoIs)"
            )


if __name__ == "__main__":
    main()
