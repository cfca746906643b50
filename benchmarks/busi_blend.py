"""The automatic RoI's blend (``data.roi.blend``) on a trained classifier run: each task's
AUC with the localiser's own probability of the whole image mixed in at each weight.

    python benchmarks/busi_blend.py RUN_DIR [--splits val test] [--weights 0 0.25 0.5 0.75 1]

RUN_DIR is a run with ``data.roi.mode: auto``. Weight 0 is the classifier on the crop
alone, 1 the localiser alone. Choose the weight on the validation split, report the test
split. The run's data is read once: the localiser's probabilities do not depend on it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from mtlkit import Engine, load_config
from mtlkit.training.checkpoint import checkpoint_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument("--weights", nargs="+", type=float, default=[0, 0.25, 0.5, 0.75, 1])
    args = parser.parse_args()
    raw = yaml.safe_load((args.run / "config.yaml").read_text(encoding="utf-8"))
    if raw["data"]["roi"].get("mode") != "auto":
        parser.error(f"{args.run} did not use data.roi.mode: auto")
    raw["data"]["roi"]["blend"] = 1.0  # any weight: the localiser's probabilities are kept
    raw["reports"], raw["baselines"] = [], []
    engine = Engine(load_config(raw))
    data = engine.data
    engine.load_checkpoint(checkpoint_of(args.run))
    tasks = list(data.localized)
    print(f"{args.run}: AUC of {', '.join(tasks)} per blend weight")
    for split in args.splits:
        for weight in args.weights:
            data.blend = weight
            result = engine.evaluate(split)
            scores = ", ".join(f"{t} {result.tasks[t]['auc']:.3f}" for t in tasks)
            print(f"  {split}, weight {weight:g}: {scores}")


if __name__ == "__main__":
    main()
