"""Training epochs on BUSI PNG files through mtlkit's whole input pipeline vs the same epochs
on pre-decoded in-memory tensors, in one process.

mtlkit: the ``busi`` source lists the files, the scan decodes, checks, hashes and crops every
image once into the RoI cache (its time is added to epoch 1), then each epoch augments the
cached RoIs through the engine's data loader. The baseline starts from the same RoIs already
decoded in memory and runs the same model, augmentation, loss and optimiser in a plain loop.
No validation split, so both do only training work. Rounds alternate between the two to
share the machine's noise. A last part times the data loading alone with a cold and a warm
on-disk cache (``data.cache_dir``).

    python benchmarks/input_pipeline.py [--root ../shared/data/busi] [--epochs 3] [--rounds 2]

Prints seconds per epoch and the ratio in-memory time / pipeline time per epoch (target:
>= 0.9 from the second epoch on).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

from mtlkit import Engine, load_config
from mtlkit.data.transforms import train_transform

ROOT = Path(__file__).resolve().parents[1]


def busi_config(args: argparse.Namespace, cache_dir: str | None = None):
    overrides = [
        f"data.source.root={args.root}",
        f"training.epochs={args.epochs}",
        f"training.threads={args.threads}",
        "data.split.val_fraction=0",
        "training.device=cpu",
        "reports=[]",
    ]
    if cache_dir:
        overrides.append(f"data.cache_dir={cache_dir}")
    return load_config(ROOT / "configs" / "busi.yaml", overrides)


def pipeline_epochs(config) -> tuple[list[float], float, torch.Tensor, torch.Tensor]:
    """Seconds of each mtlkit epoch (epoch 1 includes reading the PNGs), the loading time,
    and the decoded training RoIs and targets for the baseline."""
    start = time.perf_counter()
    engine = Engine(config)
    data = engine.data  # list files, decode, check, hash, crop: the whole input pipeline
    loading = time.perf_counter() - start
    fit = engine.fit()
    seconds = [log.seconds for log in fit.history]
    seconds[0] += loading
    train = torch.from_numpy(data.indices("train"))
    return seconds, loading, data.cache[train].clone(), data.targets[train, 0].clone()


def in_memory_epochs(config, rois: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """The same training on RoIs already in memory: a plain loop, written the usual way."""
    cfg = config.training
    torch.manual_seed(0)
    backbone = timm.create_model(
        config.backbone["model"], pretrained=False, num_classes=0, in_chans=1
    )
    head = torch.nn.Linear(backbone.num_features, 1)
    model = torch.nn.Sequential(backbone, head)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer["lr"])  # set in busi.yaml
    transform = train_transform(cfg.augmentation, config.data.image_size)
    batch = cfg.batch_size
    seconds = []
    for _ in range(cfg.epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(rois))
        for step in range(len(rois) // batch):
            index = order[step * batch : (step + 1) * batch]
            images = torch.stack([transform(rois[i]) for i in index.tolist()])
            loss = F.binary_cross_entropy_with_logits(model(images).squeeze(1), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "busi"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipeline: list[list[float]] = []
    memory: list[list[float]] = []
    loads = []
    for round_ in range(args.rounds):
        config = busi_config(args)
        seconds, loading, rois, targets = pipeline_epochs(config)
        pipeline.append(seconds)
        loads.append(loading)
        memory.append(in_memory_epochs(config, rois, targets))
        print(
            f"round {round_ + 1}: pipeline {', '.join(f'{s:.1f}' for s in seconds)} s; "
            f"in memory {', '.join(f'{s:.1f}' for s in memory[-1])} s "
            f"({len(rois)} training images, loading {loading:.1f} s)"
        )
    print("\nepoch  pipeline s  in-memory s  ratio (in-memory / pipeline)")
    for epoch in range(args.epochs):
        p = statistics.median(r[epoch] for r in pipeline)
        m = statistics.median(r[epoch] for r in memory)
        note = "  (includes reading the PNGs)" if epoch == 0 else ""
        print(f"{epoch + 1:>5}  {p:>10.2f}  {m:>11.2f}  {m / p:>6.3f}{note}")
    later = [r[e] for r in memory for e in range(1, args.epochs)]
    later_p = [r[e] for r in pipeline for e in range(1, args.epochs)]
    print(f"epochs 2+: ratio {sum(later) / sum(later_p):.3f} (target >= 0.9)")

    with tempfile.TemporaryDirectory() as cache:
        times = []
        for _ in range(2):
            start = time.perf_counter()
            Engine(busi_config(args, cache)).data  # noqa: B018 - loading is what is timed
            times.append(time.perf_counter() - start)
    print(
        f"data loading: {statistics.median(loads):.1f} s in memory only; with data.cache_dir "
        f"{times[0]:.1f} s cold, {times[1]:.1f} s warm"
    )


if __name__ == "__main__":
    main()
