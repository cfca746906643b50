"""Training throughput of the mtlkit engine vs a plain PyTorch loop, in one process.

Both train the same timm model with the same five heads, masked BCE losses, hierarchical
hinge chain, Adam, batch size, image size and thread count. Two variants:

- ``plain``: augmentation off. The plain loop reads pre-normalised in-memory tensors; the
  engine reads its in-memory RoI cache through its own data loader (both do the same
  arithmetic).
- ``augmented``: quick.yaml's augmentation (random resized crop, horizontal flip,
  brightness and contrast jitter). The plain loop applies the same torchvision v2
  transforms the usual way, image by image, to the uint8 RoIs.

Each round runs a few epochs of both, the order alternating from round to round so that
neither always meets the warmer machine; the first epoch of each is a warm-up and is not
counted. A round's ratio is the engine's median epoch images/s over the plain loop's.

    python benchmarks/train_overhead.py [--epochs 4] [--rounds 5] [--patients 120]
        [--variants plain augmented]

Prints each round, then per variant the images/s of both and the ratio engine / plain
(min, median and max over rounds; target >= 0.97), and the same as one JSON object on a
line of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from mtlkit import Engine, load_config
from mtlkit.data.transforms import PIXEL_MEAN, PIXEL_STD, normalize_batch
from mtlkit.training.losses import masked_task_loss

ROOT = Path(__file__).resolve().parents[1]


def engine_config(args: argparse.Namespace, augmented: bool = False):
    overrides = [
        f"training.epochs={args.epochs}",
        f"training.batch_size={args.batch_size}",
        f"training.augmentation.enabled={str(augmented).lower()}",
        f"training.threads={args.threads}",
        f"data.source.patients={args.patients}",
        f"data.image_size={args.image_size}",
        f"backbone.model={args.model}",
        "data.split.val_fraction=0.1",
    ]
    return load_config(ROOT / "configs" / "quick.yaml", overrides)


class PlainModel(torch.nn.Module):
    def __init__(self, model: str, tasks: list[str]):
        super().__init__()
        self.backbone = timm.create_model(model, pretrained=False, num_classes=0, in_chans=1)
        width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.heads = torch.nn.ModuleDict({t: torch.nn.Linear(width, 1) for t in tasks})

    def forward(self, x):
        features = self.backbone(x)
        return {t: head(features).squeeze(1) for t, head in self.heads.items()}


def plain_augmentation(config) -> v2.Compose:
    """The config's augmentation written out the usual way, then the normalisation."""
    aug, size = config.training.augmentation, config.data.image_size
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=aug.scale, ratio=aug.ratio, antialias=True),
            v2.RandomHorizontalFlip(aug.hflip),
            v2.ColorJitter(brightness=aug.brightness, contrast=aug.contrast),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[PIXEL_MEAN], std=[PIXEL_STD]),
        ]
    )


def plain_epochs(
    config,
    images: torch.Tensor,
    targets: torch.Tensor,
    tasks: list[str],
    pairs: list[tuple[str, str]],
    seed: int,
    epochs: int,
    augment: v2.Compose | None = None,
) -> list[float]:
    """Training images/s of each epoch of a plain loop written the usual way; with
    ``augment``, ``images`` are uint8 RoIs augmented image by image."""
    torch.manual_seed(seed)
    model = PlainModel(config.backbone["model"], tasks)
    lr = config.training.optimizer["lr"]  # quick.yaml sets it
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batch = config.training.batch_size
    speeds = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(images))
        steps = len(images) // batch
        start = time.perf_counter()
        for step in range(steps):
            index = order[step * batch : (step + 1) * batch]
            if augment is None:
                x = images[index]
            else:
                x = torch.stack([augment(images[i]) for i in index.tolist()])
            y = targets[index]
            logits = model(x)
            loss = sum(masked_task_loss(_bce, logits[t], y[:, i]) for i, t in enumerate(tasks))
            probs = {t: torch.sigmoid(v) for t, v in logits.items()}
            hinge = sum(torch.clamp(probs[c] - probs[p] - 0.1, min=0).mean() for p, c in pairs)
            loss = loss + 0.05 * hinge
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()
        speeds.append(steps * batch / (time.perf_counter() - start))
    return speeds


def _bce(logits, targets):
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 4),
        "median": round(statistics.median(values), 4),
        "max": round(max(values), 4),
    }


def variant(args: argparse.Namespace, name: str, data=None) -> tuple[dict, object]:
    """Every round of one variant; returns its figures and the prepared data (shared)."""
    augmented = name == "augmented"
    config = engine_config(args, augmented)
    data = data if data is not None else Engine(config).data
    train = torch.from_numpy(data.indices("train"))
    rois = data.cache[train]
    images = rois if augmented else normalize_batch(rois)
    augment = plain_augmentation(config) if augmented else None
    targets = data.targets[train]
    tasks = data.task_names
    pairs = [tuple(p) for c in config.constraints for p in c["pairs"]]
    rounds = []
    for round_ in range(args.rounds):

        def plain(seed=round_):
            return plain_epochs(config, images, targets, tasks, pairs, seed, args.epochs, augment)

        def engine(seed=round_):
            return [log.train_images_per_second for log in _fit(config, seed, data)]

        runs = [("plain", plain), ("engine", engine)]
        speeds = {key: run()[1:] for key, run in (runs if round_ % 2 == 0 else runs[::-1])}
        figures = {key: statistics.median(values) for key, values in speeds.items()}
        figures["ratio"] = figures["engine"] / figures["plain"]
        rounds.append(figures)
        print(
            f"{name} round {round_}: plain {figures['plain']:.1f}, engine "
            f"{figures['engine']:.1f} images/s, ratio {figures['ratio']:.3f}",
            flush=True,
        )
    return {
        "plain_images_per_second": spread([r["plain"] for r in rounds]),
        "engine_images_per_second": spread([r["engine"] for r in rounds]),
        "ratio": spread([r["ratio"] for r in rounds]),
        "rounds": [{k: round(v, 4) for k, v in r.items()} for r in rounds],
    }, data


def _fit(config, seed: int, data):
    return Engine(config, seed=seed, data=data).fit().history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--variants", nargs="+", choices=["plain", "augmented"], default=["plain", "augmented"]
    )
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch of a round is a warm-up)")
    torch.set_num_threads(args.threads)
    print(
        f"{args.patients} patients at {args.image_size}px, {args.model}, batch "
        f"{args.batch_size}, {args.threads} threads, {args.epochs} epochs x {args.rounds} "
        f"rounds per variant; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results, data = {}, None
    for name in args.variants:
        results[name], data = variant(args, name, data)
    for name, figures in results.items():
        ratio = figures["ratio"]
        print(
            f"{name}: plain {figures['plain_images_per_second']['median']:.1f}, engine "
            f"{figures['engine_images_per_second']['median']:.1f} images/s (medians over "
            f"rounds); ratio engine/plain median {ratio['median']:.3f} (min {ratio['min']:.3f}, "
            f"max {ratio['max']:.3f}; target >= 0.97)"
        )
    summary = {
        "benchmark": "train_overhead",
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "load_average": round(os.getloadavg()[0], 2),
        "variants": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
