"""Radiomics feature extraction over the BUSI RoIs: sequential vs parallel processes.

The images, RoIs and settings are those of ``mtl radiomics configs/busi.yaml``: the BUSI
images of ``configs/busi.yaml`` (645 after its ``data.exclude``), cropped as the CNN crops
them (mask box + 20% margin), the radiomics baseline's default settings (six feature
classes, 93 features, bin width 25, region = the whole RoI box). No feature cache, so every
image is extracted each time. One sequential warm-up pass over a few images first (imports,
PyRadiomics' extractor), then rounds alternating sequential (one process) and parallel (one
process per core, pool start-up included) to share the machine's noise.

    python benchmarks/radiomics_extraction.py [--config configs/busi.yaml] [--rounds 2]
        [--workers N] [--limit N]

Prints JSON: images/s of both (median over rounds), the ratio parallel / sequential
(target >= 1.8 on 2 cores), every round's figures, and whether both gave bit-identical
features. On a shared machine the wall-time ratio depends on whether the second core is
free; the CPU seconds per image of both (this process, plus its worker processes for the
parallel pass) show what the parallel pass costs in work, whatever the contention, and the
load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

from mtlkit import Engine, load_config
from mtlkit.plugins.radiomics.extraction import (
    ExtractionSettings,
    available_cpus,
    extract_features,
)
from mtlkit.plugins.radiomics.options import RadiomicsOptions

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "busi.yaml"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=available_cpus())
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    args = parser.parse_args()

    os.chdir(ROOT)  # the config's data path is relative to the repository
    config = load_config(args.config, ["reports=[]"])
    data = Engine(config).data  # the run's own samples: source, exclusions, checks
    samples = data.samples[: args.limit] if args.limit else data.samples
    settings = ExtractionSettings.from_options(RadiomicsOptions(), config.data.roi)
    extract_features(samples[:8], config.data.roi, settings)  # warm-up

    load_before = [round(v, 2) for v in os.getloadavg()]
    rounds = []
    reference = None
    identical = True
    for _ in range(args.rounds):
        row = {}
        for label, workers in (("sequential", 1), ("parallel", args.workers)):
            cpu_before = cpu_seconds()
            started = time.perf_counter()
            table = extract_features(samples, config.data.roi, settings, workers=workers)
            seconds = time.perf_counter() - started
            row[label] = round(len(samples) / seconds, 2)
            row[f"{label}_cpu_ms_per_image"] = round(
                1000 * (cpu_seconds() - cpu_before) / len(samples), 2
            )
            if reference is None:
                reference = table
            identical &= (
                table.values.tobytes() == reference.values.tobytes()
                and table.failures == reference.failures
            )
        rounds.append(row)
    sequential = statistics.median(r["sequential"] for r in rounds)
    parallel = statistics.median(r["parallel"] for r in rounds)
    print(
        json.dumps(
            {
                "images": len(samples),
                "features": len(reference.names),
                "failed": len(reference.failures),
                "workers": args.workers,
                "cpus": available_cpus(),
                "sequential_images_per_s": sequential,
                "parallel_images_per_s": parallel,
                "ratio": round(parallel / sequential, 3),
                "rounds": rounds,
                "best_round_ratio": round(max(r["parallel"] / r["sequential"] for r in rounds), 3),
                "bit_identical": identical,
                "load_average_before": load_before,
                "load_average_after": [round(v, 2) for v in os.getloadavg()],
            },
            indent=2,
        )
    )


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the extraction workers)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
