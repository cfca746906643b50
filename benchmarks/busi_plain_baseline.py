"""The plain PyTorch + timm baseline of the BUSI issue, on the very split an mtlkit run used.

The recipe, as the issue states it: resnet18 from scratch at 128 px; RoI = the mask's box +
20% margin; Adam 1e-3 with cosine decay; batch 32; flips, random resized crop and light
colour jitter; 40 epochs; best epoch by validation AUC. Images are read the usual way
(``convert("RGB")``, three channels). Reading the train/val/test images from an mtlkit
run's ``splits.json`` makes the comparison fair: both are scored on the same test images.

    python benchmarks/busi_plain_baseline.py --splits runs/busi/<run>/splits.json \\
        [--root ../shared/data/busi] [--seeds 0 1 2] [--epochs 40]

Prints, per seed, the test AUC/ACC/SE/SP at 0.5, the wall time and training images/s, then
mean +- SD over seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import roc_auc_score
from torchvision.transforms import v2

ROOT = Path(__file__).resolve().parents[1]
SIZE = 128


def load_roi(image_path: Path, mask_path: Path) -> np.ndarray:
    """The mask's bounding box plus 20% on each side, as a SIZE x SIZE RGB array."""
    image = Image.open(image_path).convert("RGB")
    ys, xs = np.nonzero(np.asarray(Image.open(mask_path).convert("L")) > 0)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    mx, my = 0.2 * (x1 - x0), 0.2 * (y1 - y0)
    box = (
        max(0, round(x0 - mx)),
        max(0, round(y0 - my)),
        min(image.width, round(x1 + mx)),
        min(image.height, round(y1 + my)),
    )
    return np.asarray(image.crop(box).resize((SIZE, SIZE), Image.BILINEAR))


def load_split(root: Path, splits: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    rows = {r["image"]: r for r in csv.DictReader((root / "manifest.csv").open())}
    out = {}
    for split in ("train", "val", "test"):
        images, labels = [], []
        for image_id in splits[split]["images"]:
            row = rows[image_id]
            images.append(load_roi(root / row["image"], root / row["mask"]))
            labels.append(float(row["label"] == "malignant"))
        tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        out[split] = (tensor, torch.tensor(labels))
    return out


def scores(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        logits = [model(normalize(images[i : i + 64])) for i in range(0, len(images), 64)]
    return torch.sigmoid(torch.cat(logits).squeeze(1)).numpy()


def normalize(batch: torch.Tensor) -> torch.Tensor:
    return (batch.float() / 255.0 - 0.5) / 0.25


def train_one(data, seed: int, epochs: int) -> dict[str, float]:
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = timm.create_model("resnet18", pretrained=False, num_classes=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    augment = v2.Compose(
        [
            v2.RandomResizedCrop(SIZE, scale=(0.7, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.2, contrast=0.2),
        ]
    )
    images, labels = data["train"]
    best_auc, best_state, seen = -1.0, None, 0
    started = time.perf_counter()
    train_seconds = 0.0
    epoch_speeds, epoch_walls = [], []
    for _ in range(epochs):
        model.train()
        epoch_start = time.perf_counter()
        order = torch.randperm(len(images))
        for step in range(len(images) // 32):
            index = order[step * 32 : (step + 1) * 32]
            batch = torch.stack([augment(images[i]) for i in index.tolist()])
            loss = F.binary_cross_entropy_with_logits(
                model(normalize(batch)).squeeze(1), labels[index]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(index)
        epoch_train = time.perf_counter() - epoch_start
        train_seconds += epoch_train
        epoch_speeds.append((len(images) // 32) * 32 / epoch_train)
        scheduler.step()
        auc = roc_auc_score(data["val"][1].numpy(), scores(model, data["val"][0]))
        if auc > best_auc:
            best_auc = auc
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        epoch_walls.append(time.perf_counter() - epoch_start)
    model.load_state_dict(best_state)
    truth = data["test"][1].numpy()
    probs = scores(model, data["test"][0])
    predicted = probs >= 0.5
    return {
        "auc": roc_auc_score(truth, probs),
        "acc": float((predicted == truth).mean()),
        "se": float(predicted[truth == 1].mean()),
        "sp": float((~predicted[truth == 0]).mean()),
        "seconds": time.perf_counter() - started,
        "images_per_second": seen / train_seconds,
        "epoch_images_per_second": epoch_speeds,  # training only, per epoch
        "epoch_seconds": epoch_walls,  # training, validation and keeping the best weights
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", required=True, help="splits.json of an mtlkit BUSI run")
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "busi"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_split(Path(args.root), json.loads(Path(args.splits).read_text()))
    sizes = {k: len(v[1]) for k, v in data.items()}
    print(f"images per split: {sizes}")
    results = []
    for seed in args.seeds:
        result = train_one(data, seed, args.epochs)
        results.append(result)
        print(
            f"seed {seed}: test AUC {result['auc']:.4f} ACC {result['acc']:.3f} "
            f"SE {result['se']:.3f} SP {result['sp']:.3f}; {result['seconds']:.0f} s, "
            f"{result['images_per_second']:.1f} training images/s",
            flush=True,
        )
    for key in ("auc", "acc", "se", "sp", "seconds"):
        values = [r[key] for r in results]
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"{key}: {statistics.mean(values):.4f} +- {spread:.4f}")


if __name__ == "__main__":
    main()
