"""Prediction speed: ``mtl predict`` and ``mtlkit.predict_files`` on BUSI images with a
ResNet50 at the shipped BUSI config's input size (configs/busi.yaml: 128 px, hflip TTA).

The checkpoint is untrained (``pretrained: false``, one epoch on a handful of synthetic
phantoms, so that it is a real run's checkpoint): speed does not depend on the weights.
The BUSI image files are predicted as new images (no drawn RoI: the whole image, as a
deployer's would be; configs/busi.yaml trains on mask RoIs, which a manifest beside the
images would give).

    python benchmarks/predict_speed.py [--root ../shared/data/busi] [--images 100] [--threads 2]

Prints the seconds and images/s of the API (model already loaded) and of the command
(the whole process: start-up, loading the checkpoint, reading, predicting, writing the CSV),
and of the model alone on random input in the same batches, for comparison.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mtlkit import load_config, load_predictor, predict_files, read_csv_rows, run

ROOT = Path(__file__).resolve().parents[1]


def make_checkpoint(out: Path, threads: int) -> Path:
    """A ResNet50 run at configs/busi.yaml's input size, trained for one epoch on phantoms."""
    config = load_config(
        ROOT / "configs" / "busi.yaml",
        [
            "data.source={type: synthetic, patients: 8, image_size: 128, seed: 0}",
            "data.exclude=[]",
            "data.roi.mode=box",
            "backbone.model=resnet50",
            "backbone.pretrained=false",
            "training.epochs=1",
            "training.batch_size=8",
            "training.device=cpu",
            f"training.threads={threads}",
            "evaluation.statistics.bootstrap_resamples=0",
            "reports=[]",
        ],
    )
    run(config, out_dir=out / "run")
    return out / "run"


def busi_images(root: Path, count: int) -> list[Path]:
    """The first ``count`` images of the BUSI manifest (benign, malignant and normal)."""
    rows, _ = read_csv_rows(root / "manifest.csv")
    return [root / row["image"] for _, row in rows[:count]]


def bare_forward(engine, count: int) -> float:
    """Images/s of the engine's model alone on random RoIs in the same batches and views
    (x2 with hflip TTA): the bound that reading, cutting and recording add to."""
    size, batch = engine.config.data.image_size, engine.config.training.batch_size
    views = 2 if engine.config.evaluation.tta == "hflip" else 1
    model = engine.model.eval()
    images = torch.randn(batch, 1, size, size)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(0, count, batch):
            for _ in range(views):
                model(images)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "busi"))
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = busi_images(Path(args.root), args.images)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = make_checkpoint(Path(tmp), args.threads)
        engine = load_predictor(checkpoint, device="cpu")
        print(
            f"{len(images)} BUSI images, {engine.config.backbone['model']} at "
            f"{engine.config.data.image_size} px, tta {engine.config.evaluation.tta}, "
            f"batch {engine.config.training.batch_size}, {torch.get_num_threads()} threads"
        )
        predict_files(engine, images[:2])  # warm-up: first-call allocations
        start = time.perf_counter()
        records = predict_files(engine, images)
        seconds = time.perf_counter() - start
        failed = sum(1 for r in records if r["error"])
        print(f"API  predict_files: {seconds:.1f} s, {len(images) / seconds:.1f} images/s")
        out = Path(tmp) / "predictions.csv"
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        command = [str(Path(sys.executable).parent / "mtl"), "predict", "--quiet", "--device"]
        command += ["cpu", "--checkpoint", str(checkpoint), "--out", str(out), *map(str, images)]
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, capture_output=True)
        seconds = time.perf_counter() - start
        print(f"CLI  mtl predict:   {seconds:.1f} s, {len(images) / seconds:.1f} images/s")
        print(f"{failed} image(s) could not be predicted")
        reference = bare_forward(engine, len(images))
        print(f"the model alone (random input, same batches and views): {reference:.1f} images/s")


if __name__ == "__main__":
    main()
