"""Which perceptual hash and threshold find BUSI's near-duplicates; the numbers behind the
defaults of ``mtlkit.data.duplicates.DuplicateSettings``.

    python benchmarks/busi_duplicates.py [BUSI_DIR] [--phantom-patients 300] [--scale 10000]

BUSI_DIR defaults to ../shared/data/busi. The reference is its ``near_duplicates.csv``: 232
pairs whose 32x32 thumbnails (Pillow bilinear resize) correlate at >= 0.95. For every
method and threshold the script reports

- found: reference pairs within the threshold;
- extra: further pairs, and how many of them have thumbnail correlation >= 0.9 (plausibly
  duplicates the reference missed) and < 0.9 (mostly different scans);
- together: pairs of images that share a reference group and also share a found group
  (groups are connected components, which is what a split uses);
- joined: pairs that the found groups put together across reference groups at
  correlation < 0.9 (false merges);
- phantom: pairs of images of different patients in a synthetic phantom set (300 patients,
  128 px) within the threshold; images of one patient are legitimately similar and are not
  counted;
- recall on pixel-level alterations of every BUSI image (resize, JPEG, noise, brightness,
  gamma, a combination, and 2% / 5% crops, which hashes are not built for).

It ends with the runtime of the pair search on N random hashes and the default's numbers.
"""

from __future__ import annotations

import argparse
import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mtlkit.data.duplicates import (
    DuplicateSettings,
    find_near_duplicates,
    group_duplicates,
    image_hash,
)
from mtlkit.plugins.synthetic.phantoms import PhantomSettings, generate_phantoms

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUSI = ROOT.parent / "shared" / "data" / "busi"
REFERENCE_CORRELATION = 0.95
PLAUSIBLE_CORRELATION = 0.9

# Methods and the thresholds tried for each; hash size 8 gives 64 bits, 16 gives 256 bits.
CANDIDATES: dict[str, tuple[DuplicateSettings, list[int]]] = {
    "average_hash 8": (DuplicateSettings("average_hash", 8, 0), [0, 2, 4]),
    "whash 8": (DuplicateSettings("whash", 8, 0), [0, 2, 4]),
    "phash 8": (DuplicateSettings("phash", 8, 0), [4, 6, 8, 10, 12]),
    "dhash 8": (DuplicateSettings("dhash", 8, 0), [6, 8, 10, 12]),
    "phash 16": (DuplicateSettings("phash", 16, 0), [40, 48, 56, 60, 64, 72, 80, 88]),
    "dhash 16": (DuplicateSettings("dhash", 16, 0), [40, 48, 56, 60, 64, 68, 72, 80]),
    "phash+dhash 16": (DuplicateSettings("phash+dhash", 16, 0), [116, 132, 148, 164]),
}
# "a AND b": both distances within their own thresholds (not offered by mtlkit.data.duplicates;
# measured to see whether requiring two hashes to agree buys anything).
AND_CANDIDATES = [
    (("phash 8", 8), ("dhash 8", 14)),
    (("phash 16", 84), ("dhash 16", 64)),
    (("phash 16", 100), ("dhash 16", 72)),
]
# Methods whose robustness to pixel-level alterations is measured, at these thresholds.
ALTERATION_CANDIDATES = [("phash 8", 8), ("dhash 8", 8), ("phash 16", 64), ("dhash 16", 60)]


@dataclass
class Busi:
    names: list[str]
    images: list[np.ndarray]
    reference: np.ndarray  # bool per upper-triangle pair: in near_duplicates.csv
    correlation: np.ndarray  # 32x32-thumbnail correlation per upper-triangle pair
    same_reference_group: np.ndarray  # bool per upper-triangle pair


def thumbnail_correlation(images: list[np.ndarray]) -> np.ndarray:
    """Pearson correlation of 32x32 bilinear thumbnails, per upper-triangle pair (row-major),
    as the BUSI README computes it."""
    thumbs = np.stack(
        [
            np.asarray(Image.fromarray(im).resize((32, 32), Image.Resampling.BILINEAR), float)
            for im in images
        ]
    ).reshape(len(images), -1)
    thumbs -= thumbs.mean(axis=1, keepdims=True)
    thumbs /= np.linalg.norm(thumbs, axis=1, keepdims=True)
    return (thumbs @ thumbs.T)[np.triu_indices(len(images), 1)]


def pair_index(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Position of pair (i, j), i < j, in the row-major upper triangle of an n x n matrix."""
    return i * n - i * (i + 1) // 2 + (j - i - 1)


def load_busi(root: Path) -> Busi:
    with open(root / "manifest.csv", newline="") as f:
        names = [row["image"] for row in csv.DictReader(f)]
    images = [np.asarray(Image.open(root / name).convert("L")) for name in names]
    index = {name: k for k, name in enumerate(names)}
    with open(root / "near_duplicates.csv", newline="") as f:
        pairs = sorted(
            tuple(sorted((index[row["image_a"]], index[row["image_b"]])))
            for row in csv.DictReader(f)
        )
    n = len(names)
    ref_pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    reference = np.zeros(n * (n - 1) // 2, dtype=bool)
    reference[pair_index(n, ref_pairs[:, 0], ref_pairs[:, 1])] = True
    groups = group_duplicates(n, ref_pairs)
    iu = np.triu_indices(n, 1)
    correlation = thumbnail_correlation(images)
    recomputed = int((correlation >= REFERENCE_CORRELATION).sum())
    agree = int(((correlation >= REFERENCE_CORRELATION) & reference).sum())
    print(
        f"BUSI {root}: {n} images, {len(pairs)} reference pairs in "
        f"{len(set(groups.tolist()))} groups (singletons included); thumbnail correlation "
        f">= {REFERENCE_CORRELATION} recomputed here: {recomputed} pairs, {agree} of them "
        "in the reference"
    )
    return Busi(names, images, reference, correlation, groups[iu[0]] == groups[iu[1]])


def all_distances(hashes: list[bytes], bits: int) -> np.ndarray:
    """Hamming distance of every upper-triangle pair, row-major (the pair search's order)."""
    return find_near_duplicates(hashes, bits)[:, 2]


def hash_all(images: list[np.ndarray], settings: DuplicateSettings) -> tuple[list[bytes], float]:
    start = time.perf_counter()
    hashes = [image_hash(im, settings) for im in images]
    return hashes, (time.perf_counter() - start) / max(len(images), 1)


@dataclass
class Row:
    label: str
    found: int
    extra: int
    extra_plausible: int
    together: int
    joined: int
    phantom: int


def evaluate(label: str, busi: Busi, within: np.ndarray, phantom_cross: int) -> Row:
    """Counts for one method and threshold; ``within`` marks BUSI pairs within it."""
    n = len(busi.names)
    iu = np.triu_indices(n, 1)
    groups = group_duplicates(n, np.stack([iu[0][within], iu[1][within]], axis=1))
    same = groups[iu[0]] == groups[iu[1]]
    extra = within & ~busi.reference
    wrong = same & ~busi.same_reference_group & (busi.correlation < PLAUSIBLE_CORRELATION)
    return Row(
        label,
        found=int((within & busi.reference).sum()),
        extra=int(extra.sum()),
        extra_plausible=int((extra & (busi.correlation >= PLAUSIBLE_CORRELATION)).sum()),
        together=int((same & busi.same_reference_group).sum()),
        joined=int(wrong.sum()),
        phantom=phantom_cross,
    )


def print_table(rows: list[Row], busi: Busi) -> None:
    n_ref = int(busi.reference.sum())
    n_group = int(busi.same_reference_group.sum())
    print(
        f"\n{'method, threshold':36s} {'found':>9s} {'extra':>6s} {'>=0.9':>6s} {'<0.9':>5s} "
        f"{'together':>9s} {'joined':>7s} {'phantom':>8s}"
    )
    for r in rows:
        print(
            f"{r.label:36s} {r.found:>5d}/{n_ref:<3d} {r.extra:>6d} {r.extra_plausible:>6d} "
            f"{r.extra - r.extra_plausible:>5d} {r.together:>5d}/{n_group:<3d} {r.joined:>7d} "
            f"{r.phantom:>8d}"
        )
    print(
        "found: reference pairs within the threshold; extra: further pairs (>=0.9 / <0.9: "
        "their thumbnail correlation); together: pairs of a reference group that share a "
        "found group; joined: pairs the found groups join across reference groups at "
        "correlation < 0.9; phantom: cross-patient phantom pairs within the threshold"
    )


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    im.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("L")


def alterations(seed: int) -> dict[str, Callable[[Image.Image], Image.Image]]:
    rng = np.random.default_rng(seed)

    def noise(im: Image.Image, sigma: float) -> Image.Image:
        a = np.asarray(im, float) + rng.normal(0, sigma, (im.height, im.width))
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))

    def brighter(im: Image.Image, shift: int) -> Image.Image:
        return Image.fromarray(np.clip(np.asarray(im, int) + shift, 0, 255).astype(np.uint8))

    def gamma(im: Image.Image, g: float) -> Image.Image:
        a = 255 * (np.asarray(im, float) / 255) ** g
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))

    def crop(im: Image.Image, fraction: float) -> Image.Image:
        dx, dy = int(im.width * fraction), int(im.height * fraction)
        return im.crop((dx, dy, im.width - dx, im.height - dy))

    def scaled(im: Image.Image, factor: float) -> Image.Image:
        size = (round(im.width * factor), round(im.height * factor))
        return im.resize(size, Image.Resampling.BILINEAR)

    return {
        "resize 0.5": lambda im: scaled(im, 0.5),
        "jpeg q60": lambda im: jpeg(im, 60),
        "noise s8": lambda im: noise(im, 8),
        "brightness +25": lambda im: brighter(im, 25),
        "gamma 0.8": lambda im: gamma(im, 0.8),
        "resize+bright+jpeg+noise": lambda im: noise(jpeg(brighter(scaled(im, 0.75), 15), 75), 4),
        "crop 2%": lambda im: crop(im, 0.02),
        "crop 5%": lambda im: crop(im, 0.05),
    }


def alteration_recall(busi: Busi, hashes: dict[str, list[bytes]]) -> None:
    print("\nPixel-level alterations of all BUSI images: share of altered copies within the")
    print("threshold of their original (max distance seen in brackets)")
    header = "".join(f"{f'{m} <= {t}':>20s}" for m, t in ALTERATION_CANDIDATES)
    print(f"{'alteration':26s}{header}")
    for name, alter in alterations(seed=0).items():
        altered = [np.asarray(alter(Image.fromarray(im))) for im in busi.images]
        cells = []
        for method, threshold in ALTERATION_CANDIDATES:
            settings = CANDIDATES[method][0]
            d = np.array(
                [
                    (
                        int.from_bytes(image_hash(a, settings), "big") ^ int.from_bytes(h, "big")
                    ).bit_count()
                    for a, h in zip(altered, hashes[method], strict=True)
                ]
            )
            cells.append(f"{np.mean(d <= threshold):>13.1%} ({d.max():>3d})")
        print(f"{name:26s}{''.join(cells)}")


def scale_runtime(n: int, settings: DuplicateSettings) -> None:
    rng = np.random.default_rng(0)
    n_bytes = len(image_hash(np.zeros((8, 8), np.uint8), settings))
    hashes = [rng.bytes(n_bytes) for _ in range(n)]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        pairs = find_near_duplicates(hashes, settings.max_distance)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    group_duplicates(n, pairs)
    grouping = time.perf_counter() - start
    print(
        f"\nPair search on N={n:,} random {settings.bits}-bit hashes (max distance "
        f"{settings.max_distance}): best of 3 {min(times):.2f} s (all: "
        f"{', '.join(f'{t:.2f}' for t in times)}), {len(pairs)} pairs; grouping "
        f"{grouping * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("busi", nargs="?", type=Path, default=DEFAULT_BUSI)
    parser.add_argument("--phantom-patients", type=int, default=300)
    parser.add_argument("--phantom-size", type=int, default=128)
    parser.add_argument("--scale", type=int, default=10_000, help="N for the runtime check")
    args = parser.parse_args()

    busi = load_busi(args.busi)
    phantoms = generate_phantoms(
        PhantomSettings(patients=args.phantom_patients, image_size=args.phantom_size), seed=0
    )
    patient = np.array([p.patient_id for p in phantoms])
    pu = np.triu_indices(len(phantoms), 1)
    cross = patient[pu[0]] != patient[pu[1]]
    print(
        f"Phantoms: {len(phantoms)} images of {args.phantom_patients} patients at "
        f"{args.phantom_size} px, {int(cross.sum())} cross-patient pairs"
    )

    unrelated = ~busi.same_reference_group & (busi.correlation < PLAUSIBLE_CORRELATION)
    busi_hashes: dict[str, list[bytes]] = {}
    busi_d: dict[str, np.ndarray] = {}
    phantom_d: dict[str, np.ndarray] = {}
    print(
        "\nHash statistics (unrelated = different reference groups and correlation < 0.9; "
        "a hash that\nspreads unrelated images apart puts them near 50% of its bits):"
    )
    for label, (settings, _) in CANDIDATES.items():
        busi_hashes[label], seconds = hash_all(busi.images, settings)
        busi_d[label] = all_distances(busi_hashes[label], settings.bits)
        phantom_hashes, _ = hash_all([p.pixels for p in phantoms], settings)
        phantom_d[label] = all_distances(phantom_hashes, settings.bits)
        d = busi_d[label][unrelated]
        print(
            f"  {label:16s} {settings.bits:>3d} bits, {seconds * 1000:.2f} ms/image; BUSI "
            f"unrelated pairs: median {np.median(d) / settings.bits:.0%} of bits, 0.1% "
            f"quantile {np.quantile(d, 0.001):.0f}, minimum {d.min()}; phantom "
            f"cross-patient minimum {phantom_d[label][cross].min()}"
        )

    rows = []
    for label, (_, thresholds) in CANDIDATES.items():
        for t in thresholds:
            phantom_cross = int(((phantom_d[label] <= t) & cross).sum())
            rows.append(evaluate(f"{label} <= {t}", busi, busi_d[label] <= t, phantom_cross))
    for (ma, ta), (mb, tb) in AND_CANDIDATES:
        within = (busi_d[ma] <= ta) & (busi_d[mb] <= tb)
        phantom_cross = int(((phantom_d[ma] <= ta) & (phantom_d[mb] <= tb) & cross).sum())
        rows.append(evaluate(f"{ma} <= {ta} AND {mb} <= {tb}", busi, within, phantom_cross))
    print_table(rows, busi)

    alteration_recall(busi, busi_hashes)

    default = DuplicateSettings()
    scale_runtime(args.scale, default)

    hashes = [image_hash(im, default) for im in busi.images]
    pairs = find_near_duplicates(hashes, default.max_distance)
    within = np.zeros(len(busi.reference), dtype=bool)
    within[pair_index(len(busi.names), pairs[:, 0], pairs[:, 1])] = True
    phantom_pairs = find_near_duplicates(
        [image_hash(p.pixels, default) for p in phantoms], default.max_distance
    )
    phantom_cross = int((patient[phantom_pairs[:, 0]] != patient[phantom_pairs[:, 1]]).sum())
    row = evaluate("default", busi, within, phantom_cross)
    print("\nDefault's pairs beyond the reference (spot check):")
    for i, j, d in pairs.tolist():
        k = pair_index(len(busi.names), i, j)
        if not busi.reference[k]:
            print(
                f"  {Path(busi.names[i]).stem:15s} {Path(busi.names[j]).stem:15s} distance "
                f"{d:>3d}, thumbnail correlation {busi.correlation[k]:.3f}"
            )
    groups = group_duplicates(len(hashes), pairs)
    print(
        f"\nDefault {default.method}, hash size {default.hash_size} ({default.bits} bits), "
        f"max distance {default.max_distance}: {len(set(groups.tolist()))} groups of "
        f"{len(hashes)} images (largest {np.bincount(groups).max()}); {row.together} of "
        f"{int(busi.same_reference_group.sum())} reference-group pairs kept together; "
        f"{row.joined} pair(s) joined across reference groups at correlation < 0.9; "
        f"{row.phantom} cross-patient phantom pairs"
    )
    print(
        f"found {row.found} of {int(busi.reference.sum())} reference pairs; {row.extra} "
        f"further pairs ({row.extra_plausible} of them with thumbnail correlation >= 0.9)"
    )


if __name__ == "__main__":
    main()
