"""Robustness to another scanner without another scanner's images: a trained run's models
scored on its own test split as it is and under simulated acquisition shifts.

Each shift is one of mtlkit's ultrasound augmentations applied to every test RoI at a fixed
strength, with a fixed seed (the same altered images for every model): lower resolution
(another transducer frequency), another gain and grey map, more speckle, stronger depth
attenuation, another time-gain-compensation profile, and all of them at once. A model that
keeps its AUC under these is less tied to the training scanner's look; the held-back
hospital remains the real test.

    python benchmarks/busi_shift.py RUN_DIR [RUN_DIR ...] [--strength 0.7] [--task bm]
        [--split val] [--adapt-bn] [--prevalence 0.6]

Prints, per run, the test AUC of each fold and seed's model per shift, and mean +- SD.
With --adapt-bn also each model with its batch-norm statistics recomputed on the shifted
images it scores (``mtlkit.evaluation.bn_adaptation``; no labels used). --prevalence P
scores a subset of the split whose share of positives is P (every positive kept, negatives
dropped at random, or the other way round), as another hospital's case mix would be: the
statistics then come from a set unlike the training one in more than its scanner.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from mtlkit import trained_engine
from mtlkit.data.ultrasound_augment import (
    DepthAttenuation,
    Gain,
    ResolutionLoss,
    Speckle,
    TimeGainCompensation,
)
from mtlkit.evaluation.auc import binary_auc
from mtlkit.evaluation.bn_adaptation import adapted_to, in_batches

SHIFTS = {
    "none": [],
    "resolution": [ResolutionLoss],
    "gain": [Gain],
    "speckle": [Speckle],
    "depth": [DepthAttenuation],
    "tgc": [TimeGainCompensation],
    "all": [ResolutionLoss, DepthAttenuation, TimeGainCompensation, Speckle, Gain],
}


def shifted(rois: torch.Tensor, steps: list[type], strength: float, seed: int) -> torch.Tensor:
    """``rois`` (N, 1, S, S) uint8 with each step applied to every image (p = 1)."""
    torch.manual_seed(seed)
    transforms = [step(p=1.0, strength=strength) for step in steps]
    out = rois.clone()
    for i in range(len(out)):
        for transform in transforms:
            out[i] = transform(out[i])
    return out


def with_prevalence(rows: np.ndarray, truth: np.ndarray, share: float, seed: int) -> np.ndarray:
    """The rows of a subset whose share of positives is ``share``: all of one class and as
    many of the other, drawn at random, as that share needs."""
    positive, negative = rows[truth[rows] == 1], rows[truth[rows] == 0]
    rng = np.random.default_rng(seed)
    if share * (len(positive) + len(negative)) > len(positive):  # fewer negatives
        keep = int(round(len(positive) * (1 - share) / share))
        negative = rng.choice(negative, size=min(keep, len(negative)), replace=False)
    else:
        keep = int(round(len(negative) * share / (1 - share)))
        positive = rng.choice(positive, size=min(keep, len(positive)), replace=False)
    return np.sort(np.concatenate([positive, negative]))


def checkpoints(run_dir: Path) -> list[Path]:
    found = sorted(run_dir.glob("**/checkpoints/best.safetensors"))
    return [p for p in found if "lesion" not in p.parts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--strength", type=float, default=0.7)
    parser.add_argument("--task", default="bm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="test", help="val to choose a recipe, test to report")
    parser.add_argument("--adapt-bn", action="store_true", help="also with test-time BN stats")
    parser.add_argument("--prevalence", type=float, help="score a subset with this positive share")
    args = parser.parse_args()
    names = [*SHIFTS, *(f"{n}+adapt" for n in SHIFTS if args.adapt_bn)]
    for run_dir in args.runs:
        table: dict[str, list[float]] = {name: [] for name in names}
        found = checkpoints(run_dir)
        engine = trained_engine(found[0], device="cpu", load=False)
        data = engine.data  # read once, with the run's own config: its split, RoIs, localiser
        for checkpoint in found:
            engine.load_checkpoint(checkpoint)  # the seeds and folds share config and data
            fold_dir = next((p for p in checkpoint.parents if p.name.startswith("fold_")), None)
            fold_data = data.for_fold(int(fold_dir.name[5:]) - 1) if fold_dir else data
            test = fold_data.indices(args.split)
            column = fold_data.task_names.index(args.task)
            truth = fold_data.targets[test, column].numpy()
            known = ~np.isnan(truth)
            test, truth = test[known], truth[known].astype(np.int64)
            if args.prevalence is not None:
                chosen = with_prevalence(np.arange(len(test)), truth, args.prevalence, args.seed)
                test, truth = test[chosen], truth[chosen]
            trained = engine.model
            for name, steps in SHIFTS.items():
                rois = shifted(data.cache[torch.from_numpy(test)], steps, args.strength, args.seed)
                variants = {name: trained}
                if args.adapt_bn:
                    variants[f"{name}+adapt"] = adapted_to(trained, in_batches(rois), engine.device)
                for label, model in variants.items():
                    engine.model = model
                    probabilities = engine.predict([r[0].numpy() for r in rois])[args.task]
                    table[label].append(binary_auc(truth, probabilities))
                engine.model = trained
            print(f"{checkpoint}: " + ", ".join(f"{n} {v[-1]:.3f}" for n, v in table.items()))
        print(
            f"\n{run_dir} ({args.split} AUC of {args.task}, strength {args.strength}, "
            f"{len(test)} images, {truth.mean():.0%} positive):"
        )
        for name, values in table.items():
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            print(f"  {name:<16} {statistics.fmean(values):.3f} +- {sd:.3f}  (n={len(values)})")


if __name__ == "__main__":
    main()
