"""PyRadiomics features of every image's RoI, in 2D, in parallel processes, cached per image.

The RoI is cut exactly as the CNN's (``mtlkit.roi_box``: the same ``data.roi`` mode and
margin), at native resolution unless ``image_size`` is set. The region PyRadiomics measures
is either the whole crop (``region: box``, as the paper, which had boxes only) or the lesion
mask inside it (``region: mask``; any non-zero mask pixel is lesion, so masks stored as 0/255
and as 0/1 give the same features). An image whose features cannot be computed (no mask, a
region of a few pixels, a constant region, a PyRadiomics error, a non-finite value) gets a
failure reason instead; the extraction goes on with the next image.

Parallel and sequential extraction run the same function on the same arrays, so they give
bit-identical features; so does a cache hit, which stores the float64 values themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from mtlkit import MtlError, RoiConfig, Sample, crop_and_resize, roi_box
from mtlkit.plugins.radiomics.cache import FeatureCache, ImageFeatures
from mtlkit.plugins.radiomics.options import RadiomicsOptions

EXTRACTION_VERSION = 1
"""Bump when what an entry holds or how a region is cut changes: old cache entries are then
never read again."""


@dataclass(frozen=True)
class ExtractionSettings:
    """Everything that changes the numbers (besides the pixels): part of every cache key."""

    classes: tuple[str, ...]
    region: str
    bin_width: float | None
    bin_count: int | None
    normalize: bool
    normalize_scale: float
    image_size: int | None
    min_pixels: int
    roi_mode: str
    roi_margin: float
    roi_shape: str

    @classmethod
    def from_options(cls, options: RadiomicsOptions, roi: RoiConfig) -> ExtractionSettings:
        return cls(
            classes=tuple(options.features),
            region=options.region,
            bin_width=None if options.bin_count is not None else options.bin_width,
            bin_count=options.bin_count,
            normalize=options.normalize,
            normalize_scale=options.normalize_scale,
            image_size=options.image_size,
            min_pixels=options.min_pixels,
            roi_mode=roi.mode,
            roi_margin=roi.margin,
            roi_shape=roi.shape,
        )

    def pyradiomics_settings(self) -> dict[str, Any]:
        """The PyRadiomics extractor settings: 2D, the original image only, no resampling."""
        settings: dict[str, Any] = {
            "force2D": True,
            "force2Ddimension": 0,  # the images are given as one slice (1, H, W)
            "label": 1,
            "normalize": self.normalize,
            "normalizeScale": self.normalize_scale,
            "minimumROIDimensions": 2,
            "additionalInfo": False,  # no diagnostics_* entries: only features
        }
        if self.bin_count is not None:
            settings["binCount"] = self.bin_count
        else:
            settings["binWidth"] = self.bin_width
        return settings

    def fingerprint(self) -> str:
        """Settings and versions, as text, for the cache key and ``extraction.json``."""
        fields = asdict(self)
        if fields["roi_shape"] == "stretch":  # as before the option: earlier caches stay valid
            del fields["roi_shape"]
        return json.dumps(
            {"version": EXTRACTION_VERSION, **fields, **library_versions()}, sort_keys=True
        )


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """PyRadiomics and SimpleITK versions: a new release may compute other numbers."""
    import radiomics
    import SimpleITK

    return {
        "pyradiomics": str(radiomics.__version__),
        "simpleitk": SimpleITK.Version_VersionString(),
    }


class RegionError(Exception):
    """Why an image's region cannot be measured."""


def region_of(
    sample: Sample, roi: RoiConfig, settings: ExtractionSettings
) -> tuple[np.ndarray, np.ndarray]:
    """The RoI crop (2-D uint8) and the region inside it (2-D bool) PyRadiomics measures."""
    try:
        image = _gray(np.asarray(sample.image()))
        box = roi_box(sample, image, roi)
        mask = None
        if settings.region == "mask":
            if sample.mask is None:
                raise RegionError("it has no lesion mask (region: mask)")
            mask = _gray(np.asarray(sample.mask()))
            if mask.shape != image.shape:
                raise RegionError(
                    f"its mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                    f"{image.shape[1]}x{image.shape[0]}"
                )
    except RegionError:
        raise
    except Exception as exc:  # what a data source's loader raised (a DataError, an OSError)
        raise RegionError(str(exc) or type(exc).__name__) from None
    x0, y0, x1, y1 = box
    if settings.image_size:
        size = settings.image_size
        crop = crop_and_resize(image, box, size)
        if mask is None:
            region = np.ones((size, size), dtype=bool)
        else:
            cut = Image.fromarray(np.ascontiguousarray(mask[y0:y1, x0:x1] > 0).astype(np.uint8))
            region = np.asarray(cut.resize((size, size), Image.NEAREST)) > 0
    else:
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        region = np.ones(crop.shape, dtype=bool) if mask is None else mask[y0:y1, x0:x1] > 0
    return crop, region


def _gray(pixels: np.ndarray) -> np.ndarray:
    """2-D pixels as they are; RGB(A) arrays (a source that does not convert them) as 8-bit
    gray with PIL's luma weights, the way ``mtlkit.load_grayscale`` reads RGB files."""
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        return np.asarray(Image.fromarray(pixels[..., :3].astype(np.uint8)).convert("L"))
    if pixels.ndim != 2:
        raise RegionError(f"expected a 2-D image, got shape {pixels.shape}")
    return pixels


def feature_key(crop: np.ndarray, region: np.ndarray, settings: ExtractionSettings) -> str:
    """The cache key: the crop's and the region's pixels and the settings."""
    digest = hashlib.sha256(settings.fingerprint().encode())
    digest.update(f"{crop.shape}|{crop.dtype}|".encode())
    digest.update(np.ascontiguousarray(crop).tobytes())
    digest.update(np.packbits(region.astype(bool)).tobytes())
    return digest.hexdigest()


def extract_region(
    crop: np.ndarray, region: np.ndarray, settings: ExtractionSettings
) -> ImageFeatures:
    """PyRadiomics features of ``region`` in ``crop``, or the reason there are none."""
    count = int(region.sum())
    if count < settings.min_pixels:
        least = settings.min_pixels
        return ImageFeatures(
            failure=f"the region has {count} pixel(s), fewer than min_pixels ({least})"
        )
    inside = crop[region]
    if inside.min() == inside.max():
        return ImageFeatures(
            failure=f"the region is constant (every pixel is {inside.min()}): its texture is "
            "undefined"
        )
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(crop.astype(np.float64)[np.newaxis])
    mask = sitk.GetImageFromArray(region.astype(np.uint8)[np.newaxis])
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            result = _extractor(settings).execute(image, mask)
    except Exception as exc:  # PyRadiomics refuses some regions (e.g. one pixel wide)
        return ImageFeatures(failure=f"PyRadiomics: {type(exc).__name__}: {exc}")
    names = tuple(k for k in result if not k.startswith("diagnostics_"))
    values = np.array([float(result[k]) for k in names], dtype=np.float64)
    bad = [n for n, v in zip(names, values, strict=True) if not np.isfinite(v)]
    if bad:
        return ImageFeatures(
            failure=f"PyRadiomics gave {len(bad)} non-finite value(s), e.g. {bad[0]}"
        )
    return ImageFeatures(names, values)


@lru_cache(maxsize=4)
def _extractor(settings: ExtractionSettings):
    """One PyRadiomics extractor per process and setting (building one reads its config)."""
    from radiomics import featureextractor

    # PyRadiomics logs every refused region and degenerate matrix; the reasons are reported
    # per image instead.
    logging.getLogger("radiomics").setLevel(logging.CRITICAL)
    extractor = featureextractor.RadiomicsFeatureExtractor(**settings.pyradiomics_settings())
    extractor.disableAllFeatures()
    extractor.enableImageTypes(Original={})
    for name in settings.classes:
        extractor.enableFeatureClassByName(name)
    return extractor


def process_image(
    sample: Sample, roi: RoiConfig, settings: ExtractionSettings, cache: FeatureCache | None
) -> ImageFeatures:
    """One image: its region, then the cached features or new ones (stored in the cache)."""
    try:
        crop, region = region_of(sample, roi, settings)
    except RegionError as exc:
        return ImageFeatures(failure=str(exc))
    return _features(crop, region, settings, cache)


def _features(
    crop: np.ndarray, region: np.ndarray, settings: ExtractionSettings, cache: FeatureCache | None
) -> ImageFeatures:
    key = feature_key(crop, region, settings) if cache is not None else ""
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    features = extract_region(crop, region, settings)
    if cache is not None:
        problem = cache.put(key, features)
        if problem:
            return ImageFeatures(
                features.names, features.values, features.failure, cache_problem=problem
            )
    return features


@dataclass
class FeatureTable:
    """Every image's features (NaN rows where there are none) and how they were obtained."""

    names: list[str]
    values: np.ndarray  # (images, features) float64
    failures: dict[int, str]  # image index -> reason
    extracted: int
    from_cache: int
    workers: int
    seconds: float
    cache_problem: str | None = None


def extract_features(
    samples: Sequence[Sample],
    roi: RoiConfig,
    settings: ExtractionSettings,
    *,
    cache: FeatureCache | None = None,
    workers: int = 1,
    advance: Callable[[], None] = lambda: None,
) -> FeatureTable:
    """Features of every sample, in sample order; ``workers`` > 1 extracts in that many
    processes (the result is the same, bit for bit)."""
    started = time.perf_counter()
    results: list[ImageFeatures] = []
    used = max(1, min(workers, len(samples)))
    if used > 1:
        stream = _parallel(samples, roi, settings, cache, used)
    else:
        stream = (process_image(s, roi, settings, cache) for s in samples)
    for result in stream:
        results.append(result)
        advance()
    names: list[str] | None = None
    for result in results:
        if result.failure is None:
            if names is None:
                names = list(result.names)
            elif list(result.names) != names:  # cannot happen with one setting: say so
                raise MtlError("PyRadiomics returned different features for two images")
    names = names or []
    values = np.full((len(samples), len(names)), np.nan, dtype=np.float64)
    failures = {}
    for index, result in enumerate(results):
        if result.failure is None:
            values[index] = result.values
        else:
            failures[index] = result.failure
    computed = [r for r in results if not r.from_cache]
    return FeatureTable(
        names=names,
        values=values,
        failures=failures,
        extracted=len(computed),
        from_cache=len(results) - len(computed),
        workers=used,
        seconds=time.perf_counter() - started,
        cache_problem=next((r.cache_problem for r in results if r.cache_problem), None),
    )


def available_cpus() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --- processes ---------------------------------------------------------------------------

_JOB: tuple[Sequence[Sample], RoiConfig, ExtractionSettings, FeatureCache | None] | None = None
"""The samples of the extraction under way, inherited by forked workers: samples hold image
loaders (closures) that cannot be sent to another process."""


def _can_fork() -> bool:
    # fork is fast (no re-import of torch in every worker) and is what torch's DataLoader
    # uses on Linux; on macOS it is unsafe, so there the regions are cut here and sent.
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def _parallel(
    samples: Sequence[Sample],
    roi: RoiConfig,
    settings: ExtractionSettings,
    cache: FeatureCache | None,
    workers: int,
) -> Iterator[ImageFeatures]:
    global _JOB
    fork = _can_fork()
    context = multiprocessing.get_context("fork" if fork else "spawn")
    if fork:
        _JOB = (samples, roi, settings, cache)
        items: Iterable[Any] = range(len(samples))
        work: Callable[[Any], ImageFeatures] = _process_index
    else:
        items = (_cut(s, roi, settings) for s in samples)
        work = _process_arrays
    try:
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_ignore_interrupts
        ) as pool:
            window: deque = deque()
            for item in items:  # a bounded window of images in flight, results in order
                window.append(
                    pool.submit(work, item) if fork else pool.submit(work, item, settings, cache)
                )
                if len(window) >= 4 * workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
    except BrokenProcessPool:
        raise MtlError(
            "a radiomics extraction process died (out of memory?); rerun with fewer "
            "workers (baselines[..].workers: 1 extracts in this process)"
        ) from None
    finally:
        _JOB = None


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the main process, which ends us


def _process_index(index: int) -> ImageFeatures:
    samples, roi, settings, cache = _JOB
    return process_image(samples[index], roi, settings, cache)


def _cut(sample: Sample, roi: RoiConfig, settings: ExtractionSettings):
    try:
        return region_of(sample, roi, settings)
    except RegionError as exc:
        return str(exc)


def _process_arrays(
    item, settings: ExtractionSettings, cache: FeatureCache | None
) -> ImageFeatures:
    if isinstance(item, str):
        return ImageFeatures(failure=item)
    crop, region = item
    return _features(crop, region, settings, cache)
