"""Near-duplicate detection: hashing, pair search, grouping."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image, ImageFilter

from mtlkit.data.duplicates import (
    DuplicateSettings,
    _popcount_table,
    duplicate_groups,
    find_near_duplicates,
    group_duplicates,
    image_hash,
)

DEFAULT = DuplicateSettings()


def scan(seed: int, height: int = 180, width: int = 220) -> np.ndarray:
    """An ultrasound-like image: smooth speckle, a dark lesion, and a dark lower part that
    every scan shares (the reason low-frequency hashes confuse different patients)."""
    rng = np.random.default_rng(seed)
    noise = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
    tissue = np.asarray(noise.filter(ImageFilter.GaussianBlur(3)), dtype=float)
    tissue = (tissue - tissue.mean()) / tissue.std() * 40 + 120
    yy, xx = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0.25, 0.55) * height, rng.uniform(0.25, 0.75) * width
    lesion = ((yy - cy) / 18) ** 2 + ((xx - cx) / 28) ** 2 < 1
    tissue[lesion] *= 0.3
    tissue *= np.clip(1.6 - 1.4 * yy / height, 0.15, 1.0)  # darker with depth
    return np.clip(np.rint(tissue), 0, 255).astype(np.uint8)


def resized(image: np.ndarray, factor: float) -> np.ndarray:
    h, w = image.shape
    size = (round(w * factor), round(h * factor))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"))


def noisy(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)


def brighter(image: np.ndarray, shift: int) -> np.ndarray:
    return np.clip(image.astype(int) + shift, 0, 255).astype(np.uint8)


ALTERATIONS = {
    "identical": lambda im: im.copy(),
    "resized": lambda im: resized(im, 0.6),
    "enlarged": lambda im: resized(im, 1.7),
    "jpeg": lambda im: jpeg(im, 60),
    "noise": lambda im: noisy(im, 8, seed=1),
    "brightness": lambda im: brighter(im, 25),
    "all": lambda im: noisy(jpeg(brighter(resized(im, 0.75), 15), 75), 4, seed=2),
}


def distance(a: bytes, b: bytes) -> int:
    """Reference Hamming distance on Python ints."""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def brute_force(hashes: list[bytes], max_distance: int) -> list[tuple[int, int, int]]:
    pairs = []
    for i, j in itertools.combinations(range(len(hashes)), 2):
        d = distance(hashes[i], hashes[j])
        if d <= max_distance:
            pairs.append((i, j, d))
    return pairs


def flip_bits(h: bytes, positions: np.ndarray) -> bytes:
    bits = np.unpackbits(np.frombuffer(h, dtype=np.uint8))
    bits[positions] ^= 1
    return np.packbits(bits).tobytes()


# --- hashing ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALTERATIONS)
def test_altered_copy_is_grouped_with_its_original(name):
    original = scan(0)
    altered = ALTERATIONS[name](original)
    assert distance(image_hash(original), image_hash(altered)) <= DEFAULT.max_distance
    groups = duplicate_groups([scan(1), original, scan(2), altered])
    assert groups[1] == groups[3]
    assert len(set(groups.tolist())) == 3


def test_different_scans_with_a_shared_dark_background_are_not_grouped():
    images = [scan(seed) for seed in range(30)]
    groups = duplicate_groups(images)
    assert groups.tolist() == list(range(30))
    hashes = [image_hash(im) for im in images]
    closest = min(distance(a, b) for a, b in itertools.combinations(hashes, 2))
    assert closest > 1.5 * DEFAULT.max_distance  # a wide margin, not a near miss


def test_hash_length_and_padding():
    image = scan(3)
    assert len(image_hash(image)) == DEFAULT.bits // 8 == 32
    small = DuplicateSettings(method="dhash", hash_size=5, max_distance=3)  # 25 bits
    h = image_hash(image, small)
    assert len(h) == 8
    assert int.from_bytes(h, "big") & ((1 << 39) - 1) == 0  # padding bits stay zero


def test_concatenated_method_distance_is_the_sum_of_its_parts():
    a, b = scan(4), scan(5)
    both = DuplicateSettings(method="phash+dhash", hash_size=8, max_distance=20)
    assert both.bits == 128
    parts = [DuplicateSettings(method=m, hash_size=8, max_distance=20) for m in both.parts]
    expected = sum(distance(image_hash(a, s), image_hash(b, s)) for s in parts)
    assert distance(image_hash(a, both), image_hash(b, both)) == expected


@pytest.mark.parametrize("method", ["phash", "dhash", "whash", "average_hash"])
def test_every_method_hashes_deterministically_any_size(method):
    settings = DuplicateSettings(method=method, hash_size=8, max_distance=8)
    for shape in [(1, 1), (7, 300), (256, 215)]:
        image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        assert image_hash(image, settings) == image_hash(image.copy(), settings)
        assert len(image_hash(image, settings)) == 8


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4, 3), dtype=np.uint8), "2-D"),
        (np.zeros((4, 4), dtype=np.float32), "uint8"),
        (np.zeros((0, 4), dtype=np.uint8), "empty"),
    ],
)
def test_bad_images_are_rejected(image, message):
    with pytest.raises(ValueError, match=message):
        image_hash(image)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "md5"}, "unknown hash 'md5'"),
        ({"method": "dhash+dhash"}, "twice"),
        ({"hash_size": 1}, "hash_size"),
        ({"method": "whash", "hash_size": 12, "max_distance": 5}, "power of 2"),
        ({"max_distance": -1}, "max_distance"),
        ({"max_distance": 257}, "max_distance"),
        ({"max_distance": 2.5}, "max_distance"),
    ],
)
def test_impossible_settings_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DuplicateSettings(**kwargs)


# --- pair search -----------------------------------------------------------------------


@pytest.mark.parametrize("n_bytes", [8, 32, 64])
@pytest.mark.parametrize("block_rows", [None, 1, 7])
def test_pair_search_agrees_with_brute_force(n_bytes, block_rows):
    rng = np.random.default_rng(n_bytes)
    bits = n_bytes * 8
    hashes = [rng.bytes(n_bytes) for _ in range(40)]
    # plant near copies at several distances so that every threshold has pairs to find
    for _ in range(30):
        source = hashes[rng.integers(len(hashes))]
        flips = rng.choice(bits, size=rng.integers(0, bits // 3), replace=False)
        hashes.append(flip_bits(source, flips))
    order = rng.permutation(len(hashes))
    hashes = [hashes[k] for k in order]
    for max_distance in [0, bits // 8, bits // 4, bits // 2, bits]:
        got = find_near_duplicates(hashes, max_distance, block_rows=block_rows)
        expected = brute_force(hashes, max_distance)
        assert got.dtype == np.int64 and got.shape == (len(expected), 3)
        assert [tuple(row) for row in got.tolist()] == expected
    assert len(find_near_duplicates(hashes, bits)) == len(hashes) * (len(hashes) - 1) // 2


def test_threshold_is_inclusive():
    a = bytes(8)
    b = flip_bits(a, np.arange(5))
    assert find_near_duplicates([a, b], 5).tolist() == [[0, 1, 5]]
    assert find_near_duplicates([a, b], 4).shape == (0, 3)


def test_empty_and_single_inputs():
    assert find_near_duplicates([], 10).shape == (0, 3)
    assert find_near_duplicates([bytes(32)], 10).shape == (0, 3)
    assert group_duplicates(0, []).tolist() == []
    assert group_duplicates(1, []).tolist() == [0]
    assert duplicate_groups([]).tolist() == []
    assert duplicate_groups([scan(0)]).tolist() == [0]


def test_hashes_of_different_lengths_are_rejected():
    with pytest.raises(ValueError, match="differ in length"):
        find_near_duplicates([bytes(8), bytes(16)], 3)
    with pytest.raises(ValueError, match="multiple of 8"):
        find_near_duplicates([bytes(5), bytes(5)], 3)
    with pytest.raises(ValueError, match="max_distance"):
        find_near_duplicates([bytes(8)], -1)


def test_popcount_fallback_matches_numpy():
    words = np.random.default_rng(0).integers(0, 2**63, (50, 4), dtype=np.uint64)
    words[0, 0] = np.uint64(2**64 - 1)
    expected = [[bin(int(w)).count("1") for w in row] for row in words]
    assert _popcount_table(words).tolist() == expected


def test_scale_finds_exactly_the_planted_pairs():
    """5,000 random 256-bit hashes: unrelated hashes lie ~128 bits apart, far beyond 60."""
    rng = np.random.default_rng(7)
    hashes = [rng.bytes(32) for _ in range(5000)]
    planted = set()
    for i in rng.choice(len(hashes), size=300, replace=False):
        j = len(hashes)
        hashes.append(flip_bits(hashes[i], rng.choice(256, size=60, replace=False)))
        planted.add((int(i), j))
    pairs = find_near_duplicates(hashes, DEFAULT.max_distance)
    assert {(i, j) for i, j, _ in pairs.tolist()} == planted
    assert set(pairs[:, 2].tolist()) == {60}
    groups = group_duplicates(len(hashes), pairs)
    assert len(set(groups.tolist())) == len(hashes) - len(planted)


# --- grouping --------------------------------------------------------------------------


def test_groups_are_transitive():
    # a ~ b and b ~ c, but a and c are too far apart to be a pair themselves
    a = bytes(32)
    b = flip_bits(a, np.arange(0, 40))
    c = flip_bits(b, np.arange(40, 80))
    d = flip_bits(a, np.arange(100, 230))
    pairs = find_near_duplicates([a, b, c, d], 60)
    assert [(i, j) for i, j, _ in pairs.tolist()] == [(0, 1), (1, 2)]
    assert group_duplicates(4, pairs).tolist() == [0, 0, 0, 1]


def test_group_ids_follow_the_smallest_member_whatever_the_pair_order():
    pairs = [(5, 2), (7, 3), (3, 0), (6, 7), (8, 8)]
    expected = [0, 1, 2, 0, 3, 2, 0, 0, 4, 5]
    assert group_duplicates(10, pairs).tolist() == expected
    rng = np.random.default_rng(0)
    for _ in range(5):
        shuffled = [pairs[k][:: rng.choice([1, -1])] for k in rng.permutation(len(pairs))]
        assert group_duplicates(10, shuffled).tolist() == expected
    with_distance = np.array([(i, j, 3) for i, j in pairs])
    assert group_duplicates(10, with_distance).tolist() == expected


def test_group_ids_match_connected_components_on_random_graphs():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        pairs = rng.integers(0, n, (int(rng.integers(0, 30)), 2))
        groups = group_duplicates(n, pairs)
        # reference: repeated relabelling to the minimum over edges until it settles
        label = list(range(n))
        changed = True
        while changed:
            changed = False
            for i, j in pairs.tolist():
                low = min(label[i], label[j])
                if label[i] != low or label[j] != low:
                    label[i] = label[j] = low
                    changed = True
        for i, j in itertools.combinations(range(n), 2):
            assert (groups[i] == groups[j]) == (label[i] == label[j])
        # ids appear in increasing order of first occurrence
        firsts = [int(g) for k, g in enumerate(groups) if g not in groups[:k]]
        assert firsts == list(range(len(firsts)))


def test_pairs_outside_the_image_range_are_rejected():
    with pytest.raises(ValueError, match="outside"):
        group_duplicates(3, [(0, 3)])
    with pytest.raises(ValueError, match="outside"):
        group_duplicates(3, [(-1, 2)])


# --- the band index ----------------------------------------------------------------------


def planted_hashes(seed: int, n_bytes: int, n: int) -> list[bytes]:
    """Random hashes with near copies planted at every distance from 0 to a third of the
    bits, identical copies, and one hash copied many times."""
    rng = np.random.default_rng(seed)
    bits = n_bytes * 8
    hashes = [rng.bytes(n_bytes) for _ in range(n)]
    for _ in range(n):
        source = hashes[rng.integers(len(hashes))]
        hashes.append(
            flip_bits(source, rng.choice(bits, rng.integers(0, bits // 3), replace=False))
        )
    hashes += [hashes[0]] * 12 + [hashes[1]] * 2
    return [hashes[k] for k in rng.permutation(len(hashes))]


@pytest.mark.parametrize("n_bytes", [8, 32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_band_index_finds_exactly_the_pairs_of_the_all_pairs_search(n_bytes, seed):
    hashes = planted_hashes(seed, n_bytes, 60)
    bits = n_bytes * 8
    for max_distance in [0, 1, 2, 3, 5, 8, bits // 16, bits // 4, bits - 1, bits]:
        indexed = find_near_duplicates(hashes, max_distance, index=True)
        every_pair = find_near_duplicates(hashes, max_distance, index=False)
        assert indexed.dtype == np.int64
        assert indexed.tolist() == every_pair.tolist(), max_distance
        assert indexed.tolist() == find_near_duplicates(hashes, max_distance).tolist()


def test_band_index_keeps_pairs_exactly_at_the_threshold():
    """Each distance from 0 to 12 planted once, with 64 bits per hash: a pair at the
    threshold is found, one bit further is not, in every band layout."""
    rng = np.random.default_rng(5)
    base = [rng.bytes(8) for _ in range(13)]
    hashes = base + [
        flip_bits(h, rng.choice(64, size=d, replace=False)) for d, h in enumerate(base)
    ]
    for max_distance in range(13):
        pairs = find_near_duplicates(hashes, max_distance, index=True)
        planted = {(d, 13 + d) for d in range(max_distance + 1)}
        found = {(i, j) for i, j, _ in pairs.tolist()}
        assert planted <= found
        assert not {(d, 13 + d) for d in range(max_distance + 1, 13)} & found
        assert pairs.tolist() == find_near_duplicates(hashes, max_distance, index=False).tolist()


def test_band_index_on_identical_hashes_and_constant_bits():
    """All-equal hashes (no bit varies) and hashes that differ in fewer bits than the
    threshold: every pair, as the all-pairs search gives."""
    same = [bytes(8)] * 5
    assert len(find_near_duplicates(same, 0, index=True)) == 10
    few = [flip_bits(bytes(8), [k]) for k in range(3)]  # three varying bits
    assert find_near_duplicates(few, 3, index=True).tolist() == [
        [0, 1, 2],
        [0, 2, 2],
        [1, 2, 2],
    ]


def test_index_is_chosen_only_where_it_is_selective(monkeypatch):
    """With few errors allowed per bit the index is used; at BUSI's 60 of 256 bits its
    5-bit bands could not beat comparing all pairs, and it is not even counted."""
    import mtlkit.data.duplicates as duplicates

    calls = []
    for name in ("_candidate_count", "_index_candidates"):
        original = getattr(duplicates, name)
        monkeypatch.setattr(
            duplicates, name, lambda bands, f=original, n=name: calls.append(n) or f(bands)
        )
    hashes = planted_hashes(3, 32, 400)
    small = find_near_duplicates(hashes, 8)
    assert calls == ["_candidate_count", "_index_candidates"]
    assert small.tolist() == find_near_duplicates(hashes, 8, index=False).tolist()
    calls.clear()
    find_near_duplicates(hashes, 60)
    assert calls == []


@pytest.mark.slow
def test_band_index_scales_to_100k_hashes():
    """100,000 random 256-bit hashes with 1,000 planted pairs at distance 8: the index
    finds exactly those (the all-pairs search would compare 5e9 pairs)."""
    rng = np.random.default_rng(11)
    hashes = [rng.bytes(32) for _ in range(100_000)]
    planted = set()
    for i in rng.choice(len(hashes), size=1000, replace=False):
        planted.add((int(i), len(hashes)))
        hashes.append(flip_bits(hashes[i], rng.choice(256, size=8, replace=False)))
    pairs = find_near_duplicates(hashes, 8)
    assert {(i, j) for i, j, _ in pairs.tolist()} == planted
