"""Reading every image once: the RoI crop, the image's size, its content digest and its
perceptual hash, with every unreadable file or bad annotation collected, not just the first.

This single pass feeds the in-memory RoI cache (later epochs never decode an image again),
the data check and the duplicate detection. With a cache folder, each image's result is also
kept on disk, keyed by the content of its files and the preprocessing settings, so a later
run over the same data skips decoding altogether. New entries are only collected here
(``Scan.cache_writes``) and written once every check has passed (:class:`CacheWrites`), so
that a refused run leaves nothing behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mtlkit.components.contracts import image_problem
from mtlkit.config.schema import RoiConfig
from mtlkit.data.disk_cache import DiskCache, Entry
from mtlkit.data.roi import Locator, crop_and_resize, crop_mask, roi_box
from mtlkit.data.roi_store import new_roi_array
from mtlkit.data.samples import Sample
from mtlkit.errors import DataError

# Bump when what a scan stores changes, so that stale cache entries are ignored.
SCAN_VERSION = 1

ImageHasher = Callable[[np.ndarray], bytes]


@dataclass(frozen=True)
class ImageFacts:
    """What the scan learnt about one readable image."""

    width: int
    height: int
    digest: str  # of the decoded pixels: equal digests = identical images
    phash: bytes | None  # perceptual hash, None when duplicate detection is off


@dataclass
class PendingEntry:
    """A cache entry not yet written: its key, the image's facts, and where its crop (and
    mask) lie in the scan's arrays. The crop is not copied: a scan of many images would
    otherwise hold every crop twice until the run is accepted."""

    key: str
    facts: Entry
    rois: torch.Tensor
    index: int
    masks: torch.Tensor | None = None  # None: no mask stored for this image

    def entry(self) -> Entry:
        """The entry as the disk cache stores it (:func:`_from_entry` reads it back)."""
        entry = {"roi": self.rois[self.index, 0].numpy(), **self.facts}
        if self.masks is not None:
            entry["mask"] = self.masks[self.index, 0].numpy()
        return entry


@dataclass
class CacheWrites:
    """Cache entries decoded by a scan, written to the disk cache only by :meth:`save`."""

    cache: DiskCache | None = None
    entries: list[PendingEntry] = field(default_factory=list)

    def save(self) -> str | None:
        """Write the pending entries (once); returns why the cache failed, or None."""
        if self.cache is None:
            return None
        for pending in self.entries:
            self.cache.put(pending.key, pending.entry())
        self.entries.clear()
        return self.cache.failure


@dataclass
class Scan:
    """RoIs (N, 1, S, S) uint8, facts per image (None where unreadable), every problem, and
    the new cache entries, not yet written. With ``masks`` wanted, the lesion masks cropped
    and resized as the RoIs (N, 1, S, S) uint8 0/1, and which images have one (N,) bool."""

    rois: torch.Tensor
    facts: list[ImageFacts | None]
    problems: list[str]
    from_cache: int = 0
    cache_failure: str | None = None
    cache_writes: CacheWrites = field(default_factory=CacheWrites)
    masks: torch.Tensor | None = None
    has_mask: torch.Tensor | None = None
    whole_image: list[int] = field(default_factory=list)
    """``roi.mode: auto``: the images where the localiser found no lesion, whose RoI is the
    whole image."""


def scan_samples(
    samples: Sequence[Sample],
    roi: RoiConfig,
    size: int,
    *,
    hasher: ImageHasher | None = None,
    hasher_name: str = "",
    cache: DiskCache | None = None,
    advance: Callable[[], None] = lambda: None,
    masks: bool = False,
    locate: Locator | None = None,
    roi_folder: Path | None = None,
) -> Scan:
    """Read, check and crop every sample; problems are collected, never raised one by one.

    ``masks``: also crop each image's lesion mask with its RoI (for segmentation heads).
    ``locate``: where ``roi.mode`` is ``auto``, finds the lesion box of a whole image.
    ``roi_folder``: keep the RoIs (and masks) in memory-mapped files there, not in memory
    (:mod:`mtlkit.data.roi_store`)."""
    shape = (len(samples), 1, size, size)
    rois = new_roi_array(shape, roi_folder)
    mask_rois = new_roi_array(shape, roi_folder) if masks else None
    has_mask = torch.zeros(len(samples), dtype=torch.bool) if masks else None
    facts: list[ImageFacts | None] = []
    problems: list[str] = []
    from_cache = 0
    writes = CacheWrites(cache)
    settings = f"v{SCAN_VERSION}|{roi.mode}|{roi.margin}|{size}|{hasher_name}"
    if roi.shape != "stretch":  # the default leaves the caches of earlier runs valid
        settings += f"|{roi.shape}"
    settings += "|masks" if masks else ""
    # The localiser's RoIs are not kept on disk: they depend on a model, not on the files.
    cached = cache is not None and roi.mode != "auto"
    whole_image: list[int] = []
    for index, sample in enumerate(samples):
        key = _cache_key(sample, settings) if cached and sample.files else None
        record = _from_entry(cache.get(key), size, masks) if key else None
        if record is not None:
            crop, fact, mask = record
            from_cache += 1
        else:
            try:
                crop, fact, mask, found = scan_one(sample, roi, size, hasher, masks, locate)
            except DataError as exc:
                problems.append(f"{sample.where()}: {exc}")
                facts.append(None)
                advance()
                continue
            if key:
                with_mask = mask_rois if masks and mask is not None else None
                writes.entries.append(PendingEntry(key, _facts_entry(fact), rois, index, with_mask))
            if not found:
                whole_image.append(index)
        rois[index, 0] = torch.from_numpy(np.array(crop, dtype=np.uint8))
        if mask_rois is not None and mask is not None:
            mask_rois[index, 0] = torch.from_numpy(np.array(mask, dtype=np.uint8))
            has_mask[index] = True
        facts.append(fact)
        advance()
    return Scan(
        rois,
        facts,
        problems,
        from_cache,
        cache.failure if cache else None,
        writes,
        masks=mask_rois,
        has_mask=has_mask,
        whole_image=whole_image,
    )


def scan_one(
    sample: Sample,
    roi: RoiConfig,
    size: int,
    hasher: ImageHasher | None,
    masks: bool = False,
    locate: Locator | None = None,
) -> tuple[np.ndarray, ImageFacts, np.ndarray | None, bool]:
    """One sample's RoI, facts, (with ``masks``) its mask cropped as the RoI, 0/1 (None
    when it has none), and False where ``roi.mode: auto`` found no lesion (the RoI is then
    the whole image); raises DataError saying what is wrong with it."""
    image = sample.image()
    problem = image_problem(image)
    if problem:
        raise DataError(problem)
    height, width = image.shape
    if roi.mode == "auto" and locate is None:
        raise DataError("roi.mode is 'auto' but no localiser was given")
    found = locate(image) if roi.mode == "auto" else None
    box = roi_box(sample, image, roi, found=found)
    crop = crop_and_resize(image, box, size)
    mask = crop_mask(sample, image, box, size) if masks else None
    digest = hashlib.blake2b(
        image.tobytes() + f"{width}x{height}".encode(), digest_size=16
    ).hexdigest()
    fact = ImageFacts(width, height, digest, hasher(image) if hasher else None)
    return crop, fact, mask, roi.mode != "auto" or found is not None


def _facts_entry(fact: ImageFacts) -> Entry:
    """The facts part of a cache entry (:class:`PendingEntry` adds the crop and mask)."""
    return {
        "size": np.array([fact.width, fact.height]),
        "digest": np.array(fact.digest),
        "phash": np.frombuffer(fact.phash or b"", dtype=np.uint8),
        "has_phash": np.array(fact.phash is not None),
    }


ENTRY_KEYS = {"roi", "size", "digest", "phash", "has_phash"}


def _from_entry(
    entry: Entry | None, size: int, masks: bool = False
) -> tuple[np.ndarray, ImageFacts, np.ndarray | None] | None:
    """The crop, facts and mask of a cache entry; None when absent or not of this schema
    (the image is then decoded again and the entry rebuilt): a ``size`` x ``size`` uint8
    crop (and, with ``masks``, optionally such a 0/1 mask), two positive integer sides, a
    32-digit hex digest and a uint8 hash."""
    if entry is None or not ENTRY_KEYS <= set(entry) <= ENTRY_KEYS | ({"mask"} if masks else set()):
        return None
    mask = entry.get("mask")
    if mask is not None and (
        mask.shape != (size, size) or mask.dtype != np.uint8 or mask.max(initial=0) > 1
    ):
        return None
    roi, sides, digest = entry["roi"], entry["size"], entry["digest"]
    phash, has_phash = entry["phash"], entry["has_phash"]
    if roi.shape != (size, size) or roi.dtype != np.uint8:
        return None
    if sides.shape != (2,) or sides.dtype.kind not in "iu" or (sides <= 0).any():
        return None
    if digest.shape != () or digest.dtype.kind != "U" or len(str(digest)) != 32:
        return None
    if phash.ndim != 1 or phash.dtype != np.uint8 or has_phash.shape != ():
        return None
    if has_phash.dtype != np.bool_:
        return None
    width, height = (int(v) for v in sides)
    hashed = phash.tobytes() if bool(has_phash) else None
    return roi, ImageFacts(width, height, str(digest), hashed), mask


def _cache_key(sample: Sample, settings: str) -> str:
    """Content of the sample's files + its box + the preprocessing settings."""
    digest = hashlib.sha256(settings.encode())
    digest.update(repr(sample.box).encode())
    for path in sample.files:
        digest.update(file_digest(Path(path)).encode())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes ("missing" when it cannot be read: the scan reports it)."""
    digest = hashlib.sha256()
    try:
        if not path.is_file():  # a FIFO or device is never read (the scan reports it)
            return "missing"
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return "missing"
    return digest.hexdigest()
