"""Training under torchrun (DDP, gloo) against one process, on configs/quick.yaml's data.

1. Agreement: a model without batch norm (timm's LayerNorm ``test_convnext``) and without
   augmentation, trained by ``mtl run --nproc 2`` with B images per rank and by ``mtl run``
   with 2B images per step. Each step sees the same 2B images in both and DDP averages the
   ranks' gradients, so only float summation order (and the masked task means when the
   ranks' labelled shares differ) separates them: the largest difference of a test
   probability, of an epoch's training loss (relative) and of a test AUC.
2. Throughput: quick.yaml's resnet10t (batch norm, augmentation on) trained by 2 ranks of
   one thread each, and by one process of 2 threads and of 1 thread with twice the batch,
   in alternating rounds: training images/s from each run's ``timing.json`` (start-up and
   evaluation not counted; the median and spread over rounds), and the median wall time
   of each command (start-up included).

    python benchmarks/ddp_check.py [--patients 200] [--epochs 3] [--batch-size 16] [--rounds 2]

Writes under a temporary folder, removed at the end. Prints a readable summary and one JSON
object on a line of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def quick(args: argparse.Namespace, **training) -> dict:
    raw = yaml.safe_load((ROOT / "configs" / "quick.yaml").read_text(encoding="utf-8"))
    raw["data"]["source"]["patients"] = args.patients
    raw["training"].update({"epochs": args.epochs, "device": "cpu", **training})
    raw["evaluation"]["statistics"] = {"bootstrap_resamples": 0}
    raw["reports"] = []
    return raw


def mtl(
    folder: Path, name: str, raw: dict, nproc: int | None, threads: int = 1
) -> tuple[Path, float]:
    """``mtl run`` of ``raw`` into ``folder/name`` (under torchrun with ``nproc``); returns
    the run directory and the command's wall time."""
    config = folder / f"{name}.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    out = folder / name
    command = [sys.executable, "-m", "mtlkit.cli", "run", str(config), "--out", str(out)]
    command += ["--quiet"] + (["--nproc", str(nproc)] if nproc else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    return out, time.perf_counter() - started


def test_rows(out: Path) -> tuple[list[str], np.ndarray]:
    lines = (out / "predictions.csv").read_text().splitlines()
    header = lines[0].split(",")
    columns = [i for i, name in enumerate(header) if name.endswith("_prob")]
    rows = [r.split(",") for r in lines[1:] if r.split(",")[header.index("split")] == "test"]
    return [r[0] for r in rows], np.array([[float(r[i]) for i in columns] for r in rows])


def read(out: Path, name: str):
    return json.loads((out / name).read_text())


def agreement(folder: Path, args: argparse.Namespace) -> dict:
    def exact(batch: int) -> dict:
        raw = quick(args, batch_size=batch, threads=1, augmentation={"enabled": False})
        raw["backbone"]["model"] = "test_convnext"
        return raw

    two, _ = mtl(folder, "exact_two", exact(args.batch_size), 2)
    one, _ = mtl(folder, "exact_one", exact(2 * args.batch_size), None)
    (ids_two, p_two), (ids_one, p_one) = test_rows(two), test_rows(one)
    assert ids_two == ids_one, "the two runs have different test rows"
    losses = [np.array([e["train_loss"] for e in read(f, "history.json")]) for f in (two, one)]
    aucs = [
        {t: v["auc"] for t, v in read(f, "metrics.json")["sets"]["test"]["tasks"].items()}
        for f in (two, one)
    ]
    auc_gap = max(abs(aucs[0][t] - aucs[1][t]) for t in aucs[1] if aucs[1][t] is not None)
    return {
        "max_probability_difference": float(np.abs(p_two - p_one).max()),
        "max_train_loss_relative_difference": float(np.max(np.abs(losses[0] / losses[1] - 1))),
        "max_test_auc_difference": float(auc_gap),
        "test_images": len(ids_one),
    }


THROUGHPUT_VARIANTS = {
    # name: (processes, torch threads per process, images per step of each process)
    "two_ranks": (2, 1, 1),
    "one_process_2_threads": (None, 2, 2),
    "one_process_1_thread": (None, 1, 2),
}


def throughput(folder: Path, args: argparse.Namespace) -> dict:
    """Training images/s of each variant, over ``args.rounds`` alternating rounds."""
    rates: dict[str, list[float]] = {name: [] for name in THROUGHPUT_VARIANTS}
    walls: dict[str, list[float]] = {name: [] for name in THROUGHPUT_VARIANTS}
    for round_ in range(args.rounds):
        for name, (nproc, threads, share) in THROUGHPUT_VARIANTS.items():
            raw = quick(args, batch_size=share * args.batch_size, threads=threads)
            out, wall = mtl(folder, f"{name}_{round_}", raw, nproc, threads)
            rates[name].append(read(out, "timing.json")["train_images_per_second"])
            walls[name].append(wall)
    result: dict = {}
    for name in THROUGHPUT_VARIANTS:
        result[name] = {
            "images_per_second": statistics.median(rates[name]),
            "spread": [min(rates[name]), max(rates[name])],
            "wall_seconds": round(statistics.median(walls[name]), 1),
        }
    two = result["two_ranks"]["images_per_second"]
    result["ratio_vs_2_threads"] = two / result["one_process_2_threads"]["images_per_second"]
    result["ratio_vs_1_thread"] = two / result["one_process_1_thread"]["images_per_second"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="per rank")
    parser.add_argument("--rounds", type=int, default=2, help="alternating throughput rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mtl-ddp-") as tmp:
        folder = Path(tmp)
        result = {
            "benchmark": "ddp_check",
            "patients": args.patients,
            "epochs": args.epochs,
            "batch_size_per_rank": args.batch_size,
            "cpus": os.cpu_count(),
            "rounds": args.rounds,
            "agreement": agreement(folder, args),
            "throughput": throughput(folder, args),
        }
    a, t = result["agreement"], result["throughput"]
    print(
        f"agreement (no batch norm, no augmentation, {a['test_images']} test images): "
        f"max |p2 - p1| {a['max_probability_difference']:.2e}, "
        f"train loss {a['max_train_loss_relative_difference']:.2e} relative, "
        f"test AUC {a['max_test_auc_difference']:.4f}"
    )
    for name in THROUGHPUT_VARIANTS:
        v = t[name]
        print(
            f"{name}: {v['images_per_second']:.1f} training images/s "
            f"(rounds {v['spread'][0]:.1f}-{v['spread'][1]:.1f}), command {v['wall_seconds']} s"
        )
    print(
        f"ratio 2 ranks / 1 process: {t['ratio_vs_2_threads']:.2f} (2 threads), "
        f"{t['ratio_vs_1_thread']:.2f} (1 thread)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
