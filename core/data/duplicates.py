"""Near-duplicate images by perceptual hashing, so that splits keep near-duplicates together.

Three steps, each usable on its own:

- :func:`image_hash` turns one 2-D uint8 grayscale image into a fixed-length ``bytes`` hash
  (one or more `imagehash <https://github.com/JohannesBuchner/imagehash>`_ hashes, packed);
- :func:`find_near_duplicates` returns every pair of hashes within a Hamming distance (through
  a band index where that is selective, else by comparing all pairs: the same pairs);
- :func:`group_duplicates` turns those pairs into one group id per image (connected
  components, so near-duplicates of near-duplicates share a group).

:func:`duplicate_groups` chains the three. The defaults in :class:`DuplicateSettings` (dhash,
hash size 16, distance <= 60 of 256 bits) come from ``benchmarks/busi_duplicates.py``: on BUSI
they find most reference pairs with no clear false positive, and they join no two patients'
images in a synthetic phantom set. Low-frequency hashes (average hash, wavelet hash) are a
poor choice for ultrasound: the dark lower part that every image shares makes unrelated
images hash alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image

HASHERS: dict[str, Callable[[Image.Image, int], imagehash.ImageHash]] = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "whash": imagehash.whash,
    "average_hash": imagehash.average_hash,
}
"""The imagehash functions a method may name; ``"phash+dhash"`` concatenates two of them."""

_WORD_BITS = 64


@dataclass(frozen=True)
class DuplicateSettings:
    """How images are hashed and how close two hashes must be to count as near-duplicates.

    ``method`` names one hash of :data:`HASHERS` or several joined by ``+`` (their bits are
    concatenated, so the distance is the sum of the parts' distances). ``hash_size`` is
    imagehash's side length: each part has ``hash_size ** 2`` bits. ``max_distance`` is the
    largest Hamming distance, over all :attr:`bits`, of a near-duplicate pair.
    """

    # From benchmarks/busi_duplicates.py. On BUSI, dhash 16 <= 60 finds 213 of the 232
    # reference pairs, and its 6 further pairs all have thumbnail correlation >= 0.9. Its groups
    # keep 236 of the 246 reference-group pairs together. Outside the reference, the closest
    # pairs at 61 and 65 are further frames of one lesion (checked by eye). The first clearly
    # different scans lie at 66. Different phantom patients lie at least 87 apart.
    method: str = "dhash"
    hash_size: int = 16
    max_distance: int = 60

    def __post_init__(self) -> None:
        """Reject impossible settings with a ValueError that names the field."""
        parts = self.method.split("+")
        unknown = [p for p in parts if p not in HASHERS]
        if unknown:
            raise ValueError(
                f"method: unknown hash {unknown[0]!r}; choose from {', '.join(HASHERS)} "
                "or join several with '+'"
            )
        if len(set(parts)) != len(parts):
            raise ValueError(f"method: {self.method!r} names a hash twice")
        if isinstance(self.hash_size, bool) or not isinstance(self.hash_size, (int, np.integer)):
            raise ValueError(f"hash_size must be an integer, got {self.hash_size!r}")
        if self.hash_size < 2:
            raise ValueError(f"hash_size must be >= 2, got {self.hash_size}")
        if "whash" in parts and self.hash_size & (self.hash_size - 1):
            raise ValueError(f"hash_size must be a power of 2 for whash, got {self.hash_size}")
        if isinstance(self.max_distance, bool) or not isinstance(
            self.max_distance, (int, np.integer)
        ):
            raise ValueError(f"max_distance must be an integer, got {self.max_distance!r}")
        if not 0 <= self.max_distance <= self.bits:
            raise ValueError(f"max_distance must lie in [0, {self.bits}], got {self.max_distance}")

    @property
    def parts(self) -> tuple[str, ...]:
        """The hash functions, in the order their bits are concatenated."""
        return tuple(self.method.split("+"))

    @property
    def bits(self) -> int:
        """Number of hash bits that distances count (padding excluded)."""
        return len(self.parts) * self.hash_size**2


def image_hash(image: np.ndarray, settings: DuplicateSettings = DuplicateSettings()) -> bytes:
    """Hash one 2-D uint8 grayscale image of any size.

    Returns ``settings.bits`` bits packed into bytes and zero-padded to a multiple of 8 bytes
    (the padding never adds to a distance); equal settings give equal lengths.
    """
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"image must be 2-D (grayscale), got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {array.dtype}")
    if array.size == 0:
        raise ValueError(f"image is empty, shape {array.shape}")
    pil = Image.fromarray(np.ascontiguousarray(array))  # 2-D uint8 -> mode "L"
    bits = np.concatenate(
        [HASHERS[name](pil, settings.hash_size).hash.ravel() for name in settings.parts]
    )
    padded = np.zeros(-(-bits.size // _WORD_BITS) * _WORD_BITS, dtype=bool)
    padded[: bits.size] = bits
    return np.packbits(padded).tobytes()


def _popcount_table(words: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 by a byte lookup table (numpy < 2.0 has no bitwise_count)."""
    table = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)
    as_bytes = words.view(np.uint8).reshape(*words.shape, 8)
    return table[as_bytes].sum(axis=-1, dtype=np.uint8)


def _popcount_into(words: np.ndarray, out: np.ndarray) -> None:
    """Write the set bits of each uint64 of ``words`` into the uint8 array ``out``."""
    if hasattr(np, "bitwise_count"):
        np.bitwise_count(words, out=out)
    else:
        out[...] = _popcount_table(words)


def _as_words(hashes: Sequence[bytes]) -> np.ndarray:
    """Hashes of one length as an (N, words) uint64 array."""
    lengths = {len(h) for h in hashes}
    if len(lengths) > 1:
        raise ValueError(f"hashes differ in length: {sorted(lengths)} bytes")
    length = lengths.pop() if lengths else 8
    if length == 0 or length % 8:
        raise ValueError(f"hash length must be a positive multiple of 8 bytes, got {length}")
    joined = b"".join(bytes(h) for h in hashes)
    return np.frombuffer(joined, dtype=np.uint64).reshape(len(hashes), length // 8)


def find_near_duplicates(
    hashes: Sequence[bytes],
    max_distance: int,
    *,
    block_rows: int | None = None,
    index: bool | None = None,
) -> np.ndarray:
    """Every pair of hashes at Hamming distance <= ``max_distance``.

    Returns an int64 array of shape (K, 3), one row ``(i, j, distance)`` per pair with
    ``i < j``, sorted by ``(i, j)``. Two exact searches give the same result:

    - the band index (:func:`_index_candidates`): near-linear when the hashes' bands are
      selective, as with a small ``max_distance`` for its hash length;
    - all pairs compared (O(N^2) work, vectorised in blocks of ``block_rows`` rows; None picks
      about 130,000 distances per block, whose buffers stay in a CPU's L2 cache).

    ``index`` None picks the index whenever it would verify far fewer pairs than all of them
    (it counts its candidates first, which costs O(N) per band); True or False forces one
    search. ``block_rows`` and ``index`` change only speed and memory, never the result.
    """
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)):
        raise ValueError(f"max_distance must be an integer, got {max_distance!r}")
    if max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {max_distance}")
    words = _as_words(hashes)
    if block_rows is not None and block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    if index is not False and len(words) > 1:
        all_pairs = len(words) * (len(words) - 1) // 2
        budget = all_pairs if index else all_pairs // _INDEX_ADVANTAGE
        bands = _bands(words, int(max_distance), budget)
        if bands is not None and _candidate_count(bands) <= budget:
            return _verified(words, _index_candidates(bands), int(max_distance))
    return _all_pairs(words, int(max_distance), block_rows)


_INDEX_ADVANTAGE = 8
"""The index is used when it verifies at most 1/8 of all pairs: verifying one candidate
(gather, sort, unique) costs several times as much as one pair of the block search."""


def _bands(words: np.ndarray, max_distance: int, budget: int) -> list[np.ndarray] | None:
    """Each hash's key in each of ``max_distance + 1`` bands of its bits, or None when every
    pair is within ``max_distance`` (too few varying bits to split) or when the bands are too
    narrow to share keys among fewer than ``budget`` pairs, whatever the hashes.

    Pigeonhole: two hashes at distance <= r differ in at most r bits, so with r + 1 disjoint
    bands at least one band is identical. Bits that no hash varies (the zero padding) never
    add to a distance and are left out; band k takes every (r + 1)-th varying bit from k on,
    so that neighbouring bits, which image hashes correlate, fall into different bands.
    """
    bits = np.unpackbits(words.view(np.uint8), axis=1)
    varying = np.flatnonzero(bits.min(axis=0) != bits.max(axis=0))
    if len(varying) <= max_distance:
        return None
    # A band of w bits has at most 2^w keys; n hashes spread evenly over k keys share them
    # in k * C(n / k, 2) pairs, the fewest possible. w is the widest band's, so this is a
    # lower bound for every band. (BUSI's dhash, 60 of 256 bits: w = 5.)
    n, width = len(words), -(-len(varying) // (max_distance + 1))
    keys_at_most = min(2.0**width, n)
    fewest = (max_distance + 1) * n * (n / keys_at_most - 1) / 2
    if fewest > budget:
        return None
    keys = []
    for band in range(max_distance + 1):
        packed = np.packbits(bits[:, varying[band :: max_distance + 1]], axis=1)
        _, key = np.unique(packed, axis=0, return_inverse=True)
        keys.append(key.reshape(-1).astype(np.int64, copy=False))
    return keys


def _candidate_count(bands: list[np.ndarray]) -> int:
    """Pairs sharing a band key, counted once per band they share."""
    total = 0
    for key in bands:
        sizes = np.bincount(key)
        total += int((sizes * (sizes - 1) // 2).sum())
    return total


def _index_candidates(bands: list[np.ndarray]) -> np.ndarray:
    """Sorted unique pair codes ``i * n + j`` (i < j) of the hashes sharing a band key."""
    n = len(bands[0])
    codes = []
    for key in bands:
        order = np.argsort(key, kind="stable")  # members of a bucket in index order
        sizes = np.bincount(key)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        # Buckets of one size at a time: a (buckets, size) matrix of members, whose upper
        # triangle is every pair, vectorised however many buckets there are.
        for size in np.unique(sizes[sizes > 1]).tolist():
            first = starts[sizes == size]
            members = order[first[:, None] + np.arange(size)]
            a, b = np.triu_indices(size, 1)
            codes.append(members[:, a].ravel() * n + members[:, b].ravel())
    if not codes:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(codes))


def _verified(words: np.ndarray, codes: np.ndarray, max_distance: int) -> np.ndarray:
    """The candidate pairs whose full distance is within ``max_distance``, as (K, 3)."""
    n = len(words)
    rows, cols = codes // n, codes % n
    distance = np.zeros(len(codes), dtype=np.int64)
    count = np.empty(len(codes), dtype=np.uint8)
    for w in range(words.shape[1]):
        _popcount_into(words[rows, w] ^ words[cols, w], count)
        distance += count
    keep = distance <= max_distance
    return np.stack([rows[keep], cols[keep], distance[keep]], axis=1).astype(np.int64)


def _all_pairs(words: np.ndarray, max_distance: int, block_rows: int | None) -> np.ndarray:
    """Every pair compared, block by block of rows (the upper triangle only)."""
    n, n_words = words.shape
    if block_rows is None:
        # 2**17 distances: 25-40% faster than 2**19 at 20,000 hashes (buffers of 1 MiB
        # stay in cache); much smaller blocks pay numpy's per-call cost.
        block_rows = max(1, 2**17 // max(n, 1))
    dtype = np.uint16 if n_words * _WORD_BITS < 2**16 else np.uint32
    columns = np.ascontiguousarray(words.T)  # one contiguous row per word
    xor_buffer = np.empty(min(block_rows, n) * n, dtype=np.uint64)
    count_buffer = np.empty(xor_buffer.size, dtype=np.uint8)
    found: list[np.ndarray] = []
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        # Compare rows [start, stop) with columns [start, n): the upper triangle only.
        shape = (stop - start, n - start)
        xor = xor_buffer[: shape[0] * shape[1]].reshape(shape)
        count = count_buffer[: xor.size].reshape(shape)
        distance = np.zeros(shape, dtype=dtype)
        for w in range(n_words):
            np.bitwise_xor(words[start:stop, w, None], columns[w, None, start:], out=xor)
            _popcount_into(xor, count)
            distance += count
        rows, cols = np.nonzero(distance <= max_distance)
        upper = cols > rows  # column offset equals row offset on the diagonal
        rows, cols = rows[upper], cols[upper]
        found.append(np.stack([rows + start, cols + start, distance[rows, cols]], axis=1))
    if not found:
        return np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(found).astype(np.int64, copy=False)


def group_duplicates(n: int, pairs: Iterable[Sequence[int]] | np.ndarray) -> np.ndarray:
    """One group id per image: the connected components of the near-duplicate pairs.

    ``pairs`` holds rows ``(i, j, ...)`` (extra columns such as the distance are ignored).
    Every image gets a group, a singleton its own. Ids run from 0 in the order of each group's
    smallest image index, so they depend only on which images are connected, not on the order
    of the pairs. Returns an int64 array of length ``n``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps the trees shallow
            i = parent[i]
        return i

    for pair in pairs:
        i, j = int(pair[0]), int(pair[1])
        if not (0 <= i < n and 0 <= j < n):
            raise ValueError(f"pair ({i}, {j}) has an index outside [0, {n})")
        ri, rj = root(i), root(j)
        if ri != rj:
            # The smaller index becomes the root, so every root is its group's smallest member.
            parent[max(ri, rj)] = min(ri, rj)
    group = np.empty(n, dtype=np.int64)
    ids: dict[int, int] = {}
    for i in range(n):
        group[i] = ids.setdefault(root(i), len(ids))
    return group


def duplicate_groups(
    images: Iterable[np.ndarray], settings: DuplicateSettings = DuplicateSettings()
) -> np.ndarray:
    """Near-duplicate group id per image (see :func:`group_duplicates`), hashing each image."""
    hashes = [image_hash(image, settings) for image in images]
    pairs = find_near_duplicates(hashes, settings.max_distance)
    return group_duplicates(len(hashes), pairs)
