"""Training throughput of the mtlkit engine vs a plain PyTorch loop, in one process.

Both train the same timm model with the same five heads, masked BCE losses, hierarchical
hinge chain, Adam, batch size, image size and thread count. The plain loop reads
pre-normalised in-memory tensors; the engine reads its in-memory RoI cache through its own
data loader (augmentation off, so both do the same arithmetic). Rounds of a few epochs
alternate between the two to share the machine's noise; the first epoch of each round is a
warm-up and is not counted.

    python benchmarks/train_overhead.py [--epochs 4] [--rounds 2] [--patients 120]

Prints images/s of both and the ratio engine / plain (target >= 0.97).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

from mtlkit import Engine, load_config
from mtlkit.data.transforms import normalize_batch
from mtlkit.training.losses import masked_task_loss

ROOT = Path(__file__).resolve().parents[1]


def engine_config(args: argparse.Namespace):
    overrides = [
        f"training.epochs={args.epochs}",
        f"training.batch_size={args.batch_size}",
        "training.augmentation.enabled=false",
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


def plain_epochs(
    config,
    images: torch.Tensor,
    targets: torch.Tensor,
    tasks: list[str],
    pairs: list[tuple[str, str]],
    seed: int,
    epochs: int,
) -> list[float]:
    """Training images/s of each epoch of a plain loop written the usual way."""
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
            x, y = images[index], targets[index]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch of a round is a warm-up)")
    torch.set_num_threads(args.threads)

    config = engine_config(args)
    probe = Engine(config)
    data = probe.data
    train = torch.from_numpy(data.indices("train"))
    images = normalize_batch(data.cache[train])
    targets = data.targets[train]
    tasks = data.task_names
    pairs = [tuple(p) for c in config.constraints for p in c["pairs"]]
    # The engine drops the last partial batch too, so both see the same number of images.
    print(
        f"{len(train)} training images of {args.image_size}px, {args.model}, batch "
        f"{args.batch_size}, {args.threads} threads, {args.epochs} epochs x {args.rounds} rounds"
    )

    engine_speeds, plain_speeds = [], []
    for round_ in range(args.rounds):
        plain_speeds += plain_epochs(config, images, targets, tasks, pairs, round_, args.epochs)[1:]
        engine = Engine(config, seed=round_, data=data)
        engine_speeds += [log.train_images_per_second for log in engine.fit().history][1:]
    engine_ips = statistics.median(engine_speeds)
    plain_ips = statistics.median(plain_speeds)
    print(f"plain loop: {plain_ips:.1f} images/s (median of {len(plain_speeds)} epochs)")
    print(f"engine    : {engine_ips:.1f} images/s (median of {len(engine_speeds)} epochs)")
    print(f"ratio engine/plain: {engine_ips / plain_ips:.3f}")


if __name__ == "__main__":
    main()
