"""The inference paths of ``evaluation.inference`` against eager fp32: throughput at batch 32,
single-image latency (median and p95), the time to prepare each path, the test AUC of a
``configs/quick.yaml`` and a ``configs/busi.yaml`` model through each path, and the cost of
a fit's per-epoch validation (eager against the folded copy ``auto`` makes for each
epoch's weights).

    python benchmarks/inference.py [--paths eager,folded,...] [--models quick,busi] [--rounds 12]
        [--quick-epochs 3] [--busi-epochs 2] [--quick-run RUN_DIR] [--busi-run RUN_DIR]
        [--busi DIR]

Without ``--quick-run``/``--busi-run`` each model is trained here first, briefly (the
configs with ``training.epochs`` set to ``--quick-epochs``/``--busi-epochs``, nothing
written): enough for AUCs well above 0.5, so that a path that changed the ranking would
show. With a run directory (or checkpoint) that model is used instead.

Every figure comes from one process, the paths measured in alternating rounds (a fresh
random order each round), so a busy machine slows them alike; each path's ``speedup`` is
the median over rounds of its images/s divided by eager's in the same round, with the
smallest and largest. Inputs are each model's own test RoIs. The last line of output is
one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mtlkit import Engine, checkpoint_of, load_config, trained_engine
from mtlkit.inference.paths import EXACT_PATHS, PATHS, InferencePaths

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32
SINGLES_PER_ROUND = 6
MEASURED = [p for p in PATHS if p != "auto"]


def trained(name: str, epochs: int, run_dir: Path | None, busi: Path) -> tuple[Engine, dict]:
    """The engine of ``configs/<name>.yaml``: trained here for ``epochs`` or read from
    ``run_dir``; and how it was obtained."""
    if run_dir is not None:
        checkpoint = checkpoint_of(run_dir)
        return trained_engine(checkpoint, device="cpu"), {"checkpoint": str(checkpoint)}
    overrides = [f"training.epochs={epochs}", "training.device=cpu", "reports=[]"]
    if name == "busi":
        overrides.append(f"data.source.root={busi}")
    engine = Engine(load_config(ROOT / "configs" / f"{name}.yaml", overrides))
    start = time.perf_counter()
    engine.fit()
    return engine, {"trained_epochs": epochs, "train_seconds": time.perf_counter() - start}


def test_rois(engine: Engine) -> torch.Tensor:
    return engine.data.cache[torch.from_numpy(engine.data.indices("test"))]


def timed(engine: Engine, runner: InferencePaths, rois: torch.Tensor) -> float:
    """Seconds for one call of the engine's inference on ``rois`` (no TTA) via ``runner``."""
    engine.inference = runner
    start = time.perf_counter()
    engine._forward_all(rois, tta=False)
    return time.perf_counter() - start


def speed(engine: Engine, runners: dict[str, InferencePaths], rounds: int) -> dict:
    """Each path's images/s at batch 32, single-image latency and preparation time."""
    rois = test_rois(engine)
    batch = rois[:BATCH]
    prepare = {}
    for path, runner in runners.items():  # the first call builds the path's copy
        first = timed(engine, runner, batch)
        prepare[path] = max(0.0, first - timed(engine, runner, batch))
        timed(engine, runner, rois[:1])  # a new batch size (compile specialises on it)
    throughput = {p: [] for p in runners}
    latency = {p: [] for p in runners}
    order = list(runners)
    shuffle = random.Random(0)
    for round_ in range(rounds):
        shuffle.shuffle(order)
        for path in order:
            throughput[path].append(BATCH / timed(engine, runners[path], batch))
            for i in range(SINGLES_PER_ROUND):
                one = rois[(round_ * SINGLES_PER_ROUND + i) % len(rois)][None]
                latency[path].append(1000 * timed(engine, runners[path], one))
    out = {}
    for path in runners:
        ratios = [a / b for a, b in zip(throughput[path], throughput["eager"], strict=True)]
        lat = sorted(latency[path])
        out[path] = {
            "images_per_second": round(statistics.median(throughput[path]), 1),
            "speedup": round(statistics.median(ratios), 3),
            "speedup_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "latency_ms_median": round(statistics.median(lat), 2),
            "latency_ms_p95": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 2),
            "latency_speedup": round(
                statistics.median(latency["eager"]) / statistics.median(lat), 3
            ),
            "prepare_seconds": round(prepare[path], 2),
        }
    return out


def validation_cost(engine: Engine, rounds: int) -> dict:
    """Seconds of one per-epoch validation (the validation split, no TTA) after the weights
    changed, as during a fit: eager on the live model against ``folded`` (what ``auto``
    runs there), which makes a new copy each time (the copy's cost included)."""
    rois = engine.data.cache[torch.from_numpy(engine.data.indices("val"))]
    weight = next(engine.model.parameters())
    runners = {"eager": InferencePaths("eager", engine.device)}
    runners["folded"] = InferencePaths("folded", engine.device)
    seconds = {path: [] for path in runners}
    for _ in range(rounds):
        for path, runner in runners.items():
            with torch.no_grad():
                weight.add_(0.0)  # an in-place update, as an optimiser step makes
            with runner.validating():
                seconds[path].append(timed(engine, runner, rois))
    ratios = [e / f for e, f in zip(seconds["eager"], seconds["folded"], strict=True)]
    return {
        "val_images": int(len(rois)),
        "eager_seconds": round(statistics.median(seconds["eager"]), 3),
        "folded_seconds": round(statistics.median(seconds["folded"]), 3),
        "folded_speedup": round(statistics.median(ratios), 3),
    }


def break_even(speed: dict) -> float | None:
    """How many images ONNX Runtime must score before its export has paid for itself
    against ``folded`` (what ``auto``'s ONNX_AFTER_IMAGES stands for); None when it never
    does or either path was not measured."""
    if "onnx" not in speed or "folded" not in speed:
        return None
    saved = 1 / speed["folded"]["images_per_second"] - 1 / speed["onnx"]["images_per_second"]
    extra = speed["onnx"]["prepare_seconds"] - speed["folded"]["prepare_seconds"]
    return round(extra / saved) if saved > 0 else None


def accuracy(engine: Engine, runners: dict[str, InferencePaths]) -> dict:
    """Each path's test AUC per binary task (as ``mtl run`` reports it, TTA included), and
    its largest probability difference from eager on the test split."""
    rois = test_rois(engine)
    engine.inference = runners["eager"]
    eager_probabilities = engine._forward_all(rois)[0]
    out = {}
    for path, runner in runners.items():
        engine.inference = runner
        probabilities = engine._forward_all(rois)[0]
        result = engine.evaluate("test")
        aucs = {
            task: round(float(metrics["auc"]), 5)
            for task, metrics in result.tasks.items()
            if "auc" in metrics
        }
        out[path] = {
            "auc": aucs,
            "max_abs_probability_difference": float(
                max(np.abs(probabilities[t] - eager_probabilities[t]).max() for t in aucs)
            ),
        }
    for path in runners:
        out[path]["max_auc_difference"] = round(
            max(abs(out[path]["auc"][t] - out["eager"]["auc"][t]) for t in out[path]["auc"]),
            5,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", default=",".join(MEASURED), help="comma-separated paths")
    parser.add_argument("--models", default="quick,busi", help="quick, busi or both")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--quick-epochs", type=int, default=3)
    parser.add_argument("--busi-epochs", type=int, default=2)
    parser.add_argument("--quick-run", type=Path, help="a run dir or checkpoint of quick.yaml")
    parser.add_argument("--busi-run", type=Path, help="a run dir or checkpoint of busi.yaml")
    parser.add_argument("--busi", type=Path, default=ROOT.parent / "shared" / "data" / "busi")
    args = parser.parse_args()
    paths = ["eager", *[p for p in args.paths.split(",") if p and p != "eager"]]
    unknown = sorted(set(paths) - set(MEASURED))
    if unknown:
        parser.error(f"unknown paths {unknown}; choices: {MEASURED}")
    report: dict = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "batch": BATCH,
        "rounds": args.rounds,
        "exact_paths": list(EXACT_PATHS),
        "models": {},
    }
    runs = {"quick": (args.quick_epochs, args.quick_run), "busi": (args.busi_epochs, args.busi_run)}
    models = [m for m in args.models.split(",") if m]
    if not models or set(models) - set(runs):
        parser.error(f"--models: expected quick, busi or quick,busi, got {args.models!r}")
    runs = {name: runs[name] for name in models}
    for name, (epochs, run_dir) in runs.items():
        engine, origin = trained(name, epochs, run_dir, args.busi)
        threads = engine.config.training.threads
        if threads:
            torch.set_num_threads(threads)
        runners = {path: InferencePaths(path, engine.device) for path in paths}
        auto = InferencePaths("auto", engine.device).choose(engine.model, 10**6)
        model = {
            **origin,
            "backbone": dict(engine.config.backbone).get("model"),
            "image_size": engine.config.data.image_size,
            "test_images": int(len(engine.data.indices("test"))),
            "auto_for_large_workloads": auto,
            "speed": speed(engine, runners, args.rounds),
            "test": accuracy(engine, runners),
        }
        model["onnx_break_even_images"] = break_even(model["speed"])
        model["per_epoch_validation"] = validation_cost(engine, max(3, args.rounds // 2))
        report["models"][name] = model
        print(f"\n{name}: {model['backbone']} at {model['image_size']} px; auto -> {auto}")
        for path in paths:
            s, t = model["speed"][path], model["test"][path]
            print(
                f"  {path:14s} {s['images_per_second']:7.1f} img/s  x{s['speedup']:.2f} "
                f"[{s['speedup_range'][0]:.2f}-{s['speedup_range'][1]:.2f}]  latency "
                f"{s['latency_ms_median']:.1f} ms (p95 {s['latency_ms_p95']:.1f})  prepare "
                f"{s['prepare_seconds']:.1f} s  |dAUC| {t['max_auc_difference']:.4f}  "
                f"|dp| {t['max_abs_probability_difference']:.1e}"
            )
        v = model["per_epoch_validation"]
        print(
            f"  per-epoch validation ({v['val_images']} images, weights changed): eager "
            f"{v['eager_seconds']:.2f} s, folded (auto: a new copy) {v['folded_seconds']:.2f} "
            f"s, x{v['folded_speedup']:.2f}; ONNX pays off after "
            f"{model['onnx_break_even_images']} images"
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
