"""The paper's recipe on BUSI benign vs malignant, sized to a time budget on one GPU.

``configs/paper.yaml``'s model and training (ResNet50 from scratch, 256 px, Adam 1e-4, the
learning rate divided by 10 at each quarter of the schedule, its augmentation, AMP) on
``configs/busi.yaml``'s data (mask RoI + 20%, its split and exclusions), task ``bm`` only
(the hinge chain needs ALNM labels, which BUSI lacks). One probe epoch measures the time
per epoch (it also warms up cuDNN's autotuner); then as many epochs as fit in the budget
are trained from scratch, up to the full 200 (the schedule's steps scaled to them), and the
best epoch's model is scored on the test split. On the GPU: ``training.amp: true`` (bf16
where supported, else fp16), ``channels_last``, 4 loader workers, pinned memory.

    python benchmarks/gpu_paper_recipe.py [--budget-s 420] [--epochs 200] [--out FILE.json]
    python benchmarks/gpu_paper_recipe.py --device cpu --epochs 1 --limit 64 --image-size 64

(the second: a check on a CPU that the script runs). Prints a summary and one JSON object
on a line of its own: the device and GPU model, epochs trained, training images/s, wall
times, the test AUC.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import yaml

from mtlkit import Engine, load_config

ROOT = Path(__file__).resolve().parents[1]
FULL_EPOCHS = 200


def recipe(args: argparse.Namespace, root: Path, epochs: int) -> dict:
    """The paper's training on BUSI as a raw config."""
    paper = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    busi = yaml.safe_load((ROOT / "configs" / "busi.yaml").read_text())
    raw = copy.deepcopy(paper)
    raw.update(name="paper-busi", seed=0, heads=["bm"], constraints=[], reports=[])
    raw["data"] = {**busi["data"], "source": {"type": "busi", "root": str(root)}}
    raw["data"]["image_size"] = args.image_size
    if args.limit:
        raw["data"]["exclude"] = []  # the excluded pair may not be in the subset
    gpu = args.device.startswith("cuda")
    raw["training"].update(
        epochs=epochs,
        device=args.device,
        num_workers=4 if gpu else 0,
        channels_last=gpu,
        amp=True,  # bf16 where the GPU has it, else fp16; off on a CPU
        scheduler={"name": "step", "step_size": max(1, round(epochs / 4)), "gamma": 0.1},
    )
    raw["evaluation"] = {"metrics": ["acc", "se", "sp", "auc"], "select": "bm.auc"}
    return raw


def subset(source: Path, limit: int, folder: Path) -> Path:
    """A BUSI folder with every k-th image of ``source``'s manifest (both classes), up to
    ``limit`` images, reading the same image and mask files."""
    with (source / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    step = max(1, len(rows) // limit)
    kept = rows[::step][:limit]
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    for name in ("images", "masks"):
        (folder / name).symlink_to((source / name).resolve())
    return folder


def fit(raw: dict, data=None, checkpoints: Path | None = None):
    engine = Engine(load_config(raw), data=data)
    engine.checkpoint_dir = checkpoints
    started = time.perf_counter()
    result = engine.fit()
    return engine, result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "busi"))
    parser.add_argument("--budget-s", type=float, default=420.0, help="seconds of training")
    parser.add_argument("--epochs", type=int, default=FULL_EPOCHS, help="at most this many")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--limit", type=int, default=0, help="only this many images (a check)")
    parser.add_argument("--out", help="also write the JSON object to this file")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mtl-gpu-recipe-") as folder:
        folder = Path(folder)
        root = Path(args.root)
        if args.limit:
            root = subset(root, args.limit, Path(tempfile.mkdtemp(dir=folder)))
        probe_raw = recipe(args, root, 1)
        prepare = time.perf_counter()
        data = Engine(load_config(probe_raw)).data
        prepare = time.perf_counter() - prepare
        # The probe epoch: time per epoch (training + validation), autotuner warmed up.
        _, probe, probe_seconds = fit(probe_raw, data)
        per_epoch = max(probe_seconds, 1e-3)
        epochs = max(1, min(args.epochs, int(args.budget_s // per_epoch)))
        engine, result, seconds = fit(recipe(args, root, epochs), data, folder / "checkpoints")
        test = engine.evaluate("test").tasks["bm"]
    device = engine.device
    summary = {
        "benchmark": "gpu_paper_recipe",
        "device": device.type,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "amp": str(engine.config.training.amp),
        "bf16_supported": device.type == "cuda" and torch.cuda.is_bf16_supported(),
        "image_size": args.image_size,
        "images": {split: int(len(data.indices(split))) for split in ("train", "val", "test")},
        "epochs": epochs,
        "full_schedule": epochs == FULL_EPOCHS,
        "probe_epoch_seconds": round(probe_seconds, 2),
        "train_images_per_second": round(result.train_images_per_second, 2),
        "probe_images_per_second": round(probe.train_images_per_second, 2),
        "fit_seconds": round(seconds, 1),
        "prepare_seconds": round(prepare, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "best_epoch": result.best_epoch,
        "test_auc": round(float(test["auc"]), 4),
        "test_acc": round(float(test["acc"]), 4),
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(
        f"{summary['gpu'] or device.type}: {epochs} epochs of ResNet50 at {args.image_size} px "
        f"in {seconds:.0f} s ({summary['train_images_per_second']:.1f} training images/s, "
        f"amp {summary['amp']}); best epoch {result.best_epoch}, test AUC {summary['test_auc']}"
    )
    line = json.dumps(summary)
    print(line)
    if args.out:
        Path(args.out).write_text(line + "\n")


if __name__ == "__main__":
    main()
