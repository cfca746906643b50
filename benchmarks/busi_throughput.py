"""Training throughput of the BUSI recipe through mtlkit vs the plain PyTorch + timm loop of
``busi_plain_baseline.py``, on the same split, in one process.

Both train resnet18 from scratch at 128 px on the mask's box + 20% margin with batch 32,
Adam 1e-3 and cosine decay, random resized crop (0.7-1.0), horizontal flips and brightness
and contrast jitter of 0.2, and validate every epoch keeping the best weights. mtlkit runs
``configs/busi.yaml`` (one grey channel, its speckle augmentation off unless
``--speckle``, so both draw the same augmentations) and writes what ``mtl run`` writes
while training: the ``best`` weights on every improvement and the training state every
``state_every`` epochs, in a temporary folder. The plain loop reads RGB images the usual
way (``busi_plain_baseline.py``). Rounds alternate which goes first; the first epoch of
each run is a warm-up and is not counted.

    python benchmarks/busi_throughput.py [--epochs 4] [--rounds 2] [--root ../shared/data/busi]

Prints each round's training images/s and epoch seconds (training, validation and saved
weights) of both, the ratios mtlkit / plain (min, median, max over rounds; target >= 0.97)
and the same figures as one JSON object on a line of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mtlkit import Engine, hookimpl, load_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import busi_plain_baseline as plain  # noqa: E402  (the sibling scripts, not a package)
from train_overhead import spread  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class EpochClock:
    """A plugin that notes when each epoch (training, validation, saves) ends."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    @hookimpl
    def mtl_fit_start(self, engine) -> None:
        self.ends = [time.perf_counter()]

    @hookimpl
    def mtl_epoch_end(self, engine, epoch, logs) -> None:
        self.ends.append(time.perf_counter())


def mtlkit_config(args: argparse.Namespace):
    overrides = [
        f"training.epochs={args.epochs}",
        f"training.threads={args.threads}",
        f"data.source.root={args.root}",
        "training.device=cpu",
        *([] if args.speckle else ["training.augmentation.ultrasound.speckle=0"]),
        *args.set,
    ]
    return load_config(ROOT / "configs" / "busi.yaml", overrides)


def mtlkit_round(config, data, seed: int, clock: EpochClock) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="mtl-busi-throughput-") as folder:
        engine = Engine(config, seed=seed, data=data, plugins=[clock])
        engine.checkpoint_dir = Path(folder)
        history = engine.fit().history
    walls = [b - a for a, b in zip(clock.ends, clock.ends[1:], strict=False)]
    return {"ips": [log.train_images_per_second for log in history][1:], "epoch_s": walls[1:]}


def plain_round(split_data, seed: int, epochs: int) -> dict[str, list[float]]:
    result = plain.train_one(split_data, seed, epochs)
    return {"ips": result["epoch_images_per_second"][1:], "epoch_s": result["epoch_seconds"][1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "busi"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speckle", action="store_true", help="keep busi.yaml's speckle")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch of a run is a warm-up)")
    torch.set_num_threads(args.threads)

    config = mtlkit_config(args)
    started = time.perf_counter()
    data = Engine(config).data
    prepare_seconds = time.perf_counter() - started
    split_data = plain.load_split(Path(args.root), data.split_file())
    sizes = {k: len(v[1]) for k, v in split_data.items()}
    print(
        f"BUSI {sizes}, resnet18 at 128 px, batch 32, {args.threads} threads, "
        f"{args.epochs} epochs x {args.rounds} rounds; mtlkit data prepared in "
        f"{prepare_seconds:.0f} s; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    clock = EpochClock()
    rounds = []
    for round_ in range(args.rounds):
        runs = [
            ("mtlkit", lambda seed: mtlkit_round(config, data, seed, clock)),
            ("plain", lambda seed: plain_round(split_data, seed, args.epochs)),
        ]
        # Alternate which goes first, so that neither always meets the warmer machine.
        measured = {name: run(round_) for name, run in (runs if round_ % 2 else runs[::-1])}
        figures = {
            f"{name}_{key}": statistics.median(values)
            for name, run in measured.items()
            for key, values in run.items()
        }
        figures["ips_ratio"] = figures["mtlkit_ips"] / figures["plain_ips"]
        figures["epoch_time_ratio"] = figures["plain_epoch_s"] / figures["mtlkit_epoch_s"]
        rounds.append(figures)
        print(
            f"round {round_}: mtlkit {figures['mtlkit_ips']:.1f} images/s, "
            f"{figures['mtlkit_epoch_s']:.1f} s/epoch; plain {figures['plain_ips']:.1f} "
            f"images/s, {figures['plain_epoch_s']:.1f} s/epoch; ratio {figures['ips_ratio']:.3f} "
            f"(epoch time {figures['epoch_time_ratio']:.3f})",
            flush=True,
        )
    summary = {
        "benchmark": "busi_throughput",
        "epochs": args.epochs,
        "rounds": args.rounds,
        "threads": args.threads,
        "speckle": args.speckle,
        "prepare_seconds": round(prepare_seconds, 2),
        "load_average": round(os.getloadavg()[0], 2),
        "mtlkit_images_per_second": spread([r["mtlkit_ips"] for r in rounds]),
        "plain_images_per_second": spread([r["plain_ips"] for r in rounds]),
        "ratio": spread([r["ips_ratio"] for r in rounds]),
        "epoch_time_ratio": spread([r["epoch_time_ratio"] for r in rounds]),
    }
    print(
        f"ratio mtlkit/plain training images/s: median {summary['ratio']['median']:.3f} "
        f"(min {summary['ratio']['min']:.3f}, max {summary['ratio']['max']:.3f}); "
        f"epoch time plain/mtlkit: median {summary['epoch_time_ratio']['median']:.3f}"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
