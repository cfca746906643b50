"""How well a trained localiser finds the lesion: on its run's test split, the box of its
largest predicted region against the box of the drawn mask.

    python benchmarks/busi_localizer.py RUN_DIR [--split test]

Prints the mean box IoU, the share of images whose box IoU is at least 0.5 (the usual
detection criterion), the share whose predicted box holds the whole drawn box, and the
images where nothing was found (their RoI would be the whole image). The per-pixel Dice and
IoU of the masks are in the run's metrics.json.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from mtlkit import trained_engine
from mtlkit.training.localizer import checkpoint_of, load_localizer


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two boxes ``(x0, y0, x1, y1)``, end exclusive."""
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--refine", action="store_true", help="a second look (roi.refine)")
    parser.add_argument(
        "--mirror",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average with the mirror image (default: as the localiser's run, evaluation.tta)",
    )
    args = parser.parse_args()
    checkpoint = checkpoint_of(args.run)
    engine = trained_engine(checkpoint, device="cpu", load=False)
    locate = load_localizer(
        checkpoint, engine.host, torch.device("cpu"), refine=args.refine, mirror=args.mirror
    )
    data = engine.data
    ious, inside, missed = [], [], 0
    for index in data.indices(args.split):
        sample = data.samples[int(index)]
        if sample.mask is None:
            continue
        ys, xs = np.nonzero(sample.mask())
        if not len(xs):
            continue
        truth = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        found = locate(sample.image())
        if found is None:
            missed += 1
            ious.append(0.0)
            inside.append(False)
            continue
        ious.append(box_iou(found, truth))
        inside.append(
            found[0] <= truth[0]
            and found[1] <= truth[1]
            and found[2] >= truth[2]
            and found[3] >= truth[3]
        )
    n = len(ious)
    print(f"{args.run} ({args.split}, {n} images with a lesion mask):")
    print(f"  box IoU: mean {statistics.fmean(ious):.3f}, median {statistics.median(ious):.3f}")
    print(f"  box IoU >= 0.5: {np.mean(np.array(ious) >= 0.5):.3f}")
    print(f"  predicted box holds the whole drawn box: {np.mean(inside):.3f}")
    print(f"  nothing found (whole image): {missed}")


if __name__ == "__main__":
    main()
