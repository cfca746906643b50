"""How data preparation, one training epoch and peak memory grow with the number of images.

Phantom PNGs (the built-in generator, ``--phantom-size`` px, about three views per patient)
are written once for the largest size into a temporary folder; each size then runs in a
subprocess of its own, so that its peak resident memory (``VmHWM``) is that size's
alone, on a manifest of the first N images. Beyond ``--generated`` images (20,000: the
generator takes about 5 ms an image) the set is filled with mirrored copies of the
rendered phantoms (flipped or transposed, each a new patient, no duplicate of another):

- preparation: ``Engine(config).data``: list the files, decode, check, hash, crop every
  image into the RoI cache, find near-duplicates, draw the patient split (cache_mode disk
  adds the data.cache_dir look-ups of each file);
  the near-duplicate pair search is also timed on its own;
- one training epoch (timm ``resnet10t``, ``--image-size`` px RoIs, batch 32, one thread,
  validation included), for the sizes of ``--sizes``; ``--prep-sizes`` are prepared only.

    python benchmarks/scaling.py [--sizes 1000,5000,20000] [--prep-sizes 100000]
                                 [--generated 20000] [--cache-modes memory,disk]

Each cost's growth is the slope of log(cost) against log(images), least squares over the
sizes (1 = linear). Memory is fitted on the growth of the peak over the
process's resident memory once torch, mtlkit and its plugins are loaded:
``prepare_rss_growth_mb`` at the end of the preparation, ``rss_growth_mb`` after the epoch
(the model and optimiser included). Prints a readable table, then one JSON object on a
line of its own. Everything is written under a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIEWS = (2, 4)  # images per patient, at least and at most: three on average


def memory_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"needs Linux /proc/self/status ({field})")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far: VmHWM, which exec starts afresh (unlike
    ru_maxrss, which a child inherits from the process that forked it)."""
    return memory_mb("VmHWM")


def mirrored(phantom, variant: int):
    """Phantom ``variant`` (1-4) of a generated one: flipped, turned or transposed, with its
    mask and box, as a new patient. Its pixels differ from the original's everywhere, and
    its dhash lies far from it, so it is neither an exact nor a near duplicate."""
    n = phantom.pixels.shape[0]
    x0, y0, x1, y1 = phantom.box
    turn = {
        1: (lambda a: a[:, ::-1], (n - x1, y0, n - x0, y1)),
        2: (lambda a: a[::-1, :], (x0, n - y1, x1, n - y0)),
        3: (lambda a: a[::-1, ::-1], (n - x1, n - y1, n - x0, n - y0)),
        4: (lambda a: a.T, (y0, x0, y1, x1)),
    }
    flip, box = turn[variant]
    return dataclasses.replace(
        phantom,
        image_id=f"{phantom.image_id}_v{variant}",
        patient_id=f"{phantom.patient_id}_v{variant}",
        pixels=np.ascontiguousarray(flip(phantom.pixels)),
        mask=np.ascontiguousarray(flip(phantom.mask)),
        box=box,
    )


def write_phantoms(folder: Path, images: int, generated: int, size: int) -> Path:
    """At least ``images`` phantom PNGs and their manifest; returns the manifest. The
    generator renders ``generated`` images at most (5.5 ms each); the rest are their
    mirrored copies (:func:`mirrored`, up to four per image), listed after all originals."""
    from mtlkit.plugins.synthetic.phantoms import (
        PhantomSettings,
        generate_phantoms,
        write_phantom_set,
    )

    rendered = min(images, generated)
    patients = math.ceil(rendered / VIEWS[0])  # enough whatever the drawn view counts
    settings = PhantomSettings(
        patients=patients, image_size=size, images_min=VIEWS[0], images_max=VIEWS[1]
    )
    phantoms = generate_phantoms(settings, seed=0)[:rendered]
    copies = math.ceil(images / len(phantoms)) - 1
    if copies > 4:
        raise SystemExit(f"{images} images need --generated >= {math.ceil(images / 5)}")
    phantoms += [mirrored(p, v) for v in range(1, copies + 1) for p in phantoms[:rendered]]
    return write_phantom_set(phantoms, folder)


def first_rows(manifest: Path, images: int, out: Path) -> Path:
    """A manifest of the first ``images`` rows (beside the images, so paths still resolve)."""
    lines = manifest.read_text(encoding="utf-8").splitlines(keepends=True)
    if len(lines) - 1 < images:
        raise SystemExit(f"{manifest} has {len(lines) - 1} images, fewer than {images}")
    out.write_text("".join(lines[: images + 1]), encoding="utf-8")
    return out


def measure(args: argparse.Namespace) -> dict:
    """One size, in this process: preparation, optionally one epoch, peak memory."""
    import torch

    import mtlkit.data.inspection as inspection
    from mtlkit import Engine, load_config

    torch.set_num_threads(1)
    raw = {
        "name": "scaling",
        "seed": 0,
        "output_dir": str(Path(args.work) / "runs"),
        "data": {
            "source": {"type": "manifest", "path": args.manifest},
            "split": {"test_fraction": 0.3, "val_fraction": 0.15, "stratify": ["bm"]},
            "roi": {"mode": "box", "margin": 0.5},
            "image_size": args.image_size,
            "cache_mode": args.cache_mode,
            "cache_dir": str(Path(args.work) / "cache") if args.cache_mode == "disk" else None,
        },
        "backbone": {"type": "timm", "model": "resnet10t", "pretrained": False, "in_chans": 1},
        "heads": ["bm"],
        "training": {
            "epochs": 1,
            "batch_size": 32,
            "device": "cpu",
            "threads": 1,
            "state_every": 0,
            "optimizer": {"name": "adam", "lr": 0.001},
        },
        "reports": [],
    }
    config = load_config(raw)
    searching = []
    search = inspection.find_near_duplicates

    def timed_search(*a, **k):  # the pair search's share of the preparation
        start = time.perf_counter()
        try:
            return search(*a, **k)
        finally:
            searching.append(time.perf_counter() - start)

    inspection.find_near_duplicates = timed_search
    engine = Engine(config)  # plugins loaded; the data is read on first use
    baseline = peak_rss_mb()
    start = time.perf_counter()
    data = engine.data
    prepare = time.perf_counter() - start
    result = {
        "images": len(data.samples),
        "prepare_s": prepare,
        "pair_search_s": sum(searching),
        "cache_mb": data.cache.untyped_storage().nbytes() / 2**20,
        "baseline_rss_mb": baseline,
        "prepare_peak_rss_mb": peak_rss_mb(),
        # Resident now, split: the process's own memory, and pages of mapped files (with
        # cache_mode disk, the RoI file's pages, which the kernel drops under pressure).
        "anon_rss_mb": memory_mb("RssAnon"),
        "file_rss_mb": memory_mb("RssFile"),
    }
    if args.epoch:
        fit = engine.fit()
        result["epoch_s"] = fit.history[0].seconds
        result["train_images"] = len(data.indices("train"))
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def slope(sizes: list[int], costs: list[float]) -> float | None:
    """Least-squares slope of log(cost) on log(size); None with fewer than two sizes."""
    points = [(math.log(n), math.log(c)) for n, c in zip(sizes, costs, strict=True) if c > 0]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else None


def run_size(manifest: Path, work: Path, images: int, epoch: bool, mode: str, args) -> dict:
    """``measure`` for one size and cache mode in a fresh interpreter; returns its figures."""
    folder = work / f"{mode}-{images}"
    folder.mkdir()
    subset = manifest.parent / f"manifest-{images}.csv"
    if not subset.exists():
        first_rows(manifest, images, subset)
    command = [sys.executable, __file__, "--child", "--manifest", str(subset)]
    command += ["--work", str(folder), "--image-size", str(args.image_size)]
    command += ["--cache-modes", mode] + (["--epoch"] if epoch else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"size {images} ({mode}) failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(rows: dict[int, dict]) -> dict[str, float | None]:
    """Derived figures of each size (in place) and each cost's fitted exponent."""
    sizes = sorted(rows)
    for r in rows.values():
        r["prepare_rss_growth_mb"] = r["prepare_peak_rss_mb"] - r["baseline_rss_mb"]
        r["rss_growth_mb"] = r["peak_rss_mb"] - r["baseline_rss_mb"]
        r["prepare_without_pair_search_s"] = r["prepare_s"] - r["pair_search_s"]
    epochs = [n for n in sizes if "epoch_s" in rows[n]]

    def fitted(key: str, over: list[int]) -> float | None:
        value = slope(over, [rows[n][key] for n in over])
        return None if value is None else round(value, 3)

    return {
        "prepare_s": fitted("prepare_s", sizes),
        "pair_search_s": fitted("pair_search_s", sizes),
        "prepare_without_pair_search_s": fitted("prepare_without_pair_search_s", sizes),
        "epoch_s": fitted("epoch_s", epochs),
        "prepare_rss_growth_mb": fitted("prepare_rss_growth_mb", sizes),
        "rss_growth_mb": fitted("rss_growth_mb", epochs),
        "cache_mb": fitted("cache_mb", sizes),
    }


def print_table(mode: str, rows: dict[int, dict], exponents: dict) -> None:
    print(f"cache_mode {mode}:")
    header = "images prepare_s pair_search_s epoch_s cache_MiB peak_RSS growth anon file"
    print(" ".join(f"{h:>13}" for h in header.split()))
    for n in sorted(rows):
        r = rows[n]
        cells = [
            n,
            f"{r['prepare_s']:.1f}",
            f"{r['pair_search_s']:.2f}",
            f"{r['epoch_s']:.1f}" if "epoch_s" in r else "-",
            f"{r['cache_mb']:.1f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['rss_growth_mb']:.0f}",
            f"{r['anon_rss_mb']:.0f}",
            f"{r['file_rss_mb']:.0f}",
        ]
        print(" ".join(f"{c:>13}" for c in cells))
    print("fitted exponents (1 = linear): " + ", ".join(f"{k} {v}" for k, v in exponents.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,20000", help="prepared and trained")
    parser.add_argument("--prep-sizes", default="100000", help="prepared only ('' for none)")
    parser.add_argument(
        "--generated", type=int, default=20000, help="images rendered; more are mirrored copies"
    )
    parser.add_argument("--image-size", type=int, default=32, help="RoI side")
    parser.add_argument("--phantom-size", type=int, default=64, help="generated image side")
    parser.add_argument(
        "--cache-modes", default="memory", help="data.cache_mode values, e.g. memory,disk"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--epoch", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    modes = [m for m in args.cache_modes.split(",") if m]
    if not modes or set(modes) - {"memory", "disk"}:
        parser.error("--cache-modes takes memory, disk or memory,disk")
    if args.child:
        args.cache_mode = modes[0]
        print(json.dumps(measure(args)))
        return

    trained = [int(n) for n in args.sizes.split(",") if n]
    prepared = [int(n) for n in args.prep_sizes.split(",") if n and int(n) not in trained]
    work = Path(tempfile.mkdtemp(prefix="mtlkit-scaling-"))
    results = {}
    try:
        start = time.perf_counter()
        manifest = write_phantoms(
            work / "phantoms", max(trained + prepared), args.generated, args.phantom_size
        )
        generation = time.perf_counter() - start
        for mode in modes:
            rows = {n: run_size(manifest, work, n, True, mode, args) for n in trained}
            rows |= {n: run_size(manifest, work, n, False, mode, args) for n in prepared}
            results[mode] = rows
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"phantoms of {args.phantom_size}px ({min(args.generated, max(trained + prepared))} "
        f"rendered in {generation:.0f} s, not counted) cut to {args.image_size}px RoIs"
    )
    summary = {
        "benchmark": "scaling",
        "phantom_size": args.phantom_size,
        "image_size": args.image_size,
        "generated": args.generated,
        "modes": {},
    }
    for mode, rows in results.items():
        exponents = summarise(rows)
        print_table(mode, rows, exponents)
        summary["modes"][mode] = {
            "sizes": {str(n): rows[n] for n in sorted(rows)},
            "exponents": exponents,
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
