"""How long the training loop waits for a checkpoint and a training state: written at once
(serialise, write, fsync, rename) vs handed to the background writer (serialise only).

A fit of ``configs/busi.yaml``'s model (resnet18, one channel) after one Adam step saves
its weights (``best``, ~45 MB) and its complete training state (~180 MB) into a temporary
folder, alternating the two ways over rounds, in one process.

    python benchmarks/checkpoint_writes.py [--rounds 5] [--model resnet18]

Prints the median wait per save of each way and their ratio, and the same as one JSON
object on a line of its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from mtlkit import Engine, load_config
from mtlkit.background_writer import BackgroundWriter
from mtlkit.files import atomic_write_bytes
from mtlkit.training.checkpoint import save_weights
from mtlkit.training.fit import FitRecord, build_fit_objects
from mtlkit.training.resume import capture_state
from mtlkit.training.selection import BestEpoch
from mtlkit.training.state import save_state

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default="resnet18")
    args = parser.parse_args()
    config = load_config(
        ROOT / "configs" / "busi.yaml", [f"backbone.model={args.model}", "training.device=cpu"]
    )
    engine = Engine(config)
    objects = build_fit_objects(
        engine.build_model(), engine.components, config.training, 0, engine.device
    )
    loss = sum(p.sum() for p in objects.model.parameters())
    loss.backward()
    objects.optimizer.step()  # the optimizer's moments exist, as in a saved state
    record = FitRecord(BestEpoch(config.evaluation.select, engine.components.metrics))
    record.best.offer(1, 0.5, objects.selected())

    waits: dict[str, list[float]] = {"direct": [], "background": []}
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="mtl-checkpoint-writes-") as folder:
        folder = Path(folder)
        with BackgroundWriter() as writer:
            for round_ in range(args.rounds):
                ways = [("direct", atomic_write_bytes), ("background", writer.write)]
                for way, write in ways if round_ % 2 == 0 else ways[::-1]:
                    writer.flush()  # each measurement starts with an idle disk queue
                    started = time.perf_counter()
                    save_weights(
                        objects.model, folder / f"{way}-best.safetensors", config, {}, [], write
                    )
                    state = capture_state(1, objects, record, "benchmark")
                    save_state(folder / f"{way}-state.safetensors", state, write)
                    waits[way].append(time.perf_counter() - started)
            writer.flush()
        sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    direct, background = (statistics.median(waits[k]) for k in ("direct", "background"))
    summary = {
        "benchmark": "checkpoint_writes",
        "model": args.model,
        "rounds": args.rounds,
        "megabytes": {
            "best": round(sizes["direct-best.safetensors"] / 1e6, 1),
            "state": round(sizes["direct-state.safetensors"] / 1e6, 1),
        },
        "direct_wait_seconds": round(direct, 4),
        "background_wait_seconds": round(background, 4),
        "wait_ratio": round(background / direct, 4),
        "direct_rounds": [round(w, 4) for w in waits["direct"]],
        "background_rounds": [round(w, 4) for w in waits["background"]],
    }
    print(
        f"{args.model}: best {summary['megabytes']['best']} MB + state "
        f"{summary['megabytes']['state']} MB; the training loop waits {direct:.3f} s written "
        f"at once, {background:.3f} s handed to the background writer (median of "
        f"{args.rounds}; ratio {background / direct:.3f})"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
