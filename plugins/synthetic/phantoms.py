"""Synthetic B-mode breast-ultrasound phantoms with known ground truth.

No public ultrasound data set carries axillary lymph-node labels, so this module draws
patients from a known generative model and renders B-mode-like images of their primary
breast lesion. Because the model is known, every image carries the Bayes-optimal
("oracle") probability of each label given the lesion's latent features, and the best
achievable AUC of each task can be measured.

The generative model, per patient:

1. latent lesion features, drawn from class-agnostic distributions (size, aspect ratio,
   margin irregularity, spiculation, internal heterogeneity, posterior acoustic feature,
   echogenic halo, plus nuisance features that carry no label information);
2. malignancy, ``p_bm = sigmoid((w . z + b) / difficulty)`` on standardised features ``z``,
   with the intercept ``b`` calibrated so the expected malignant share is as requested;
3. for malignant patients, nodal metastasis ``sigmoid((c . z + c0) / difficulty)`` and a
   node count ``1 + Poisson(lambda(z))``;
4. several views of the same lesion, each with its own anatomy, speckle and gain;
5. for malignant patients, a molecular subtype from a softmax over visible traits (internal
   echogenicity, heterogeneity, posterior feature, spiculation, halo), drawn from a stream
   of its own so that the other labels and every image stay what they were without it.
"""

from __future__ import annotations

import csv
import functools
import os
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.optimize import brentq
from scipy.special import expit, gammainc, ndtr, ndtri
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

TASKS: tuple[str, ...] = ("bm", "alnm", "alnm_ge2", "alnm_ge3", "alnm_ge4")
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image",
    "mask",
    "patient_id",
    "x0",
    "y0",
    "x1",
    "y1",
    "bm",
    "alnm_count",
    "subtype",
    "oracle_bm",
    "oracle_alnm",
    "oracle_alnm_ge2",
    "oracle_alnm_ge3",
    "oracle_alnm_ge4",
)

# Physical scale: a 60 mm wide field of view and lesions of 6-27 mm put the lesion's long
# axis at 10-45 % of the image width.
FOV_MM = 60.0
SIZE_RANGE_MM = (6.0, 27.0)
# Rendering constants are tuned for 128 px images and scaled by image_size / 128.
REFERENCE_SIZE = 128

# Order of the predictors the label models see (columns of the standardised matrix z).
PREDICTORS: tuple[str, ...] = (
    "log_size",
    "log_aspect",
    "irregularity",
    "spiculation",
    "heterogeneity",
    "posterior",
    "halo",
)
# Malignant: larger, taller-than-wide, irregular, spiculated, heterogeneous, posterior
# shadowing (negative posterior), echogenic halo. Sized for an oracle AUC of about 0.92.
BM_WEIGHTS = np.array([0.55, 1.25, 1.25, 1.4, 0.95, -1.1, 1.0])
# Nodal metastasis grows mainly with size, then spiculation, halo and heterogeneity.
ALNM_WEIGHTS = np.array([0.9, 0.0, 0.2, 0.35, 0.25, -0.15, 0.4])
# Nodal burden: log-rate of extra nodes beyond the first.
NODE_WEIGHTS = np.array([0.25, 0.0, 0.0, 0.1, 0.0, 0.0, 0.15])
NODE_LOG_RATE = float(np.log(1.6))
MAX_NODE_RATE = 30.0
# Share of ALNM-positive among malignant patients (paper: 489 / 1811; a bit higher keeps
# positives for the burden tasks).
ALNM_POSITIVE_SHARE = 0.35

# Molecular subtypes, and how each shows in the lesion. Rows: SUBTYPES; columns:
# SUBTYPE_TRAITS, standardised. Luminal A: posterior shadowing, echogenic halo, homogeneous;
# luminal B: heterogeneous; HER2-enriched: a brighter, heterogeneous interior
# (microcalcified); triple-negative: markedly hypoechoic, posterior enhancement, no halo.
# Spiculation hardly shows at small image sizes, so it weighs little.
SUBTYPES: tuple[str, ...] = ("luminal A", "luminal B", "HER2-enriched", "triple-negative")
SUBTYPE_TRAITS: tuple[str, ...] = (
    "echogenicity",
    "heterogeneity",
    "posterior",
    "spiculation",
    "halo",
)
SUBTYPE_WEIGHTS = np.array(
    [
        [0.0, -0.8, -1.6, 0.4, 1.0],
        [0.0, 1.8, -0.4, 0.0, 0.0],
        [2.0, 0.6, 0.0, 0.0, -0.3],
        [-1.6, -0.4, 1.8, -0.4, -0.8],
    ]
)
# Shares the intercepts aim at (luminal A the most common, as in clinical series); the
# drawn shares also follow the malignant lesions' traits.
SUBTYPE_PRIOR = np.array([0.40, 0.25, 0.15, 0.20])
SUBTYPE_STRENGTH = 2.5

# Large fixed draw used to standardise features and calibrate intercepts; independent of
# the user's seed so that calibration never changes with it.
_REFERENCE_SEED = 20_240_601
_REFERENCE_DRAWS = 100_000
_MAX_SPIKES = 16
# Angular resolution of the tabulated boundary, fine enough for the narrowest spike.
_ANGLE_TABLE = 512
# Lowest speckle intensity shown (relative to the mean): -10 dB.
_SPECKLE_FLOOR = 0.1


@dataclass(frozen=True)
class PhantomSettings:
    """Settings of a synthetic phantom set; validated on construction."""

    patients: int = 300
    images_min: int = 2
    images_max: int = 4
    image_size: int = 128
    malignant_fraction: float = 0.5
    difficulty: float = 1.0
    alnm_missing_fraction: float = 0.1
    subtype_missing_fraction: float = 0.1

    def __post_init__(self) -> None:
        """Reject impossible settings with a ValueError that names the field."""
        if self.patients < 1:
            raise ValueError(f"patients must be >= 1, got {self.patients}")
        if self.images_min < 1:
            raise ValueError(f"images_min must be >= 1, got {self.images_min}")
        if self.images_max < self.images_min:
            raise ValueError(
                f"images_max ({self.images_max}) must be >= images_min ({self.images_min})"
            )
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        for name in ("malignant_fraction", "alnm_missing_fraction", "subtype_missing_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if not self.difficulty > 0.0 or not np.isfinite(self.difficulty):
            raise ValueError(f"difficulty must be a finite number > 0, got {self.difficulty}")


# eq=False: the fields hold numpy arrays, for which generated __eq__/__hash__ would fail.
@dataclass(frozen=True, eq=False)
class Phantom:
    """One synthetic image with its lesion mask, labels and generator ground truth."""

    image_id: str
    patient_id: str
    pixels: np.ndarray
    mask: np.ndarray
    box: tuple[int, int, int, int]
    bm: str
    alnm_count: int | None
    oracle: dict[str, float]
    features: dict[str, float]
    subtype: str | None = None  # None: benign, or a malignant lesion never typed
    subtype_oracle: dict[str, float] = field(default_factory=dict)  # P(subtype | traits)


@dataclass(frozen=True)
class _Patient:
    """A patient's latent lesion (features and boundary shape), labels and oracle."""

    features: dict[str, float]
    harmonics: np.ndarray  # rows: (order, relative amplitude, phase)
    spikes: np.ndarray  # rows: (angle, relative amplitude, angular width)
    bm: str
    alnm_count: int | None
    oracle: dict[str, float]


@dataclass(frozen=True)
class _View:
    """Per-image acquisition: where and how the lesion is seen, and display settings."""

    cx: float
    cy: float
    angle: float  # radians, lesion orientation plus view rotation
    half_w: float  # pixels, before boundary perturbation
    half_h: float
    radius: float  # pixels, largest boundary radius
    table: np.ndarray  # boundary radius (pixels) at the angles of _angle_table()
    gain_db: float
    range_db: float


@dataclass(frozen=True)
class _Calibration:
    """Feature standardisation and intercepts for one (malignant_fraction, difficulty)."""

    mean: np.ndarray
    std: np.ndarray
    bm_intercept: float
    alnm_intercept: float


# --------------------------------------------------------------------------- latent model


def _one_blas_thread(function):
    """``function`` with numpy's BLAS on one thread: a matrix product's float sums depend on
    how many threads share it, and a phantom set must be the same bytes on every machine
    and under torchrun (which sets ``OMP_NUM_THREADS=1``) as in one process."""

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)

    return wrapped


def _truncated_normal(
    rng: np.random.Generator, mean: float, sd: float, low: float, high: float, n: int
) -> np.ndarray:
    """Draw n normal values restricted to [low, high] by inverting the CDF."""
    lo, hi = ndtr((low - mean) / sd), ndtr((high - mean) / sd)
    return mean + sd * ndtri(rng.uniform(lo, hi, n))


def _draw_features(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Draw n patients' latent lesion features; class-agnostic, so labels come later."""
    log_lo, log_hi = np.log(SIZE_RANGE_MM)
    return {
        "size_mm": np.exp(_truncated_normal(rng, np.log(13.0), 0.45, log_lo, log_hi, n)),
        # height / width; > 1 is taller-than-wide.
        "aspect": np.exp(_truncated_normal(rng, np.log(0.72), 0.3, np.log(0.4), np.log(1.7), n)),
        "irregularity": rng.beta(1.6, 2.4, n),
        "spiculation": rng.beta(1.1, 2.8, n),
        "heterogeneity": rng.beta(2.0, 2.5, n),
        # -1 strong shadowing ... +1 strong enhancement.
        "posterior": 2.0 * rng.beta(2.0, 2.0, n) - 1.0,
        "halo": rng.beta(1.1, 3.0, n),
        # Nuisance features: change the look, carry no label information.
        "echogenicity": rng.beta(2.0, 2.0, n),
        "orientation_deg": _truncated_normal(rng, 0.0, 10.0, -30.0, 30.0, n),
    }


def _predictor_matrix(features: dict[str, np.ndarray]) -> np.ndarray:
    """Stack the label-relevant features (logs for scale-like ones) as PREDICTORS columns."""
    columns = [
        np.log(features["size_mm"]),
        np.log(features["aspect"]),
        features["irregularity"],
        features["spiculation"],
        features["heterogeneity"],
        features["posterior"],
        features["halo"],
    ]
    return np.stack([np.atleast_1d(c) for c in columns], axis=-1)


@lru_cache(maxsize=1)
def _reference_features() -> dict[str, np.ndarray]:
    """Features of a large fixed population, used for standardisation and calibration."""
    return _draw_features(np.random.default_rng(_REFERENCE_SEED), _REFERENCE_DRAWS)


@lru_cache(maxsize=1)
def _reference_predictors() -> np.ndarray:
    """Predictors of the reference population (:func:`_reference_features`)."""
    return _predictor_matrix(_reference_features())


def _solve_intercept(linear: np.ndarray, weights: np.ndarray, target: float, scale: float) -> float:
    """Intercept b with weighted mean of sigmoid((linear + b) / scale) equal to target."""
    if target <= 0.0:
        return -np.inf
    if target >= 1.0:
        return np.inf
    share = weights / weights.sum()

    def excess(b: float) -> float:
        return float(share @ expit((linear + b) / scale)) - target

    # The bracket pushes every logit past +-40, beyond any representable target share.
    reach = float(np.abs(linear).max()) + 40.0 * scale
    if excess(-reach) > 0.0:
        return -reach
    if excess(reach) < 0.0:
        return reach
    return float(brentq(excess, -reach, reach, xtol=1e-10))


@lru_cache(maxsize=32)
def _calibration(malignant_fraction: float, difficulty: float) -> _Calibration:
    """Standardise features and calibrate intercepts on the fixed reference population."""
    x = _reference_predictors()
    mean, std = x.mean(axis=0), x.std(axis=0)
    z = (x - mean) / std
    b = _solve_intercept(z @ BM_WEIGHTS, np.ones(len(z)), malignant_fraction, difficulty)
    p_bm = expit((z @ BM_WEIGHTS + b) / difficulty)
    # The ALNM share is a share among malignant patients, hence weighted by p_bm; with no
    # malignant patients at all any intercept is moot, so weight uniformly.
    weights = p_bm if p_bm.sum() > 0 else np.ones(len(z))
    c0 = _solve_intercept(z @ ALNM_WEIGHTS, weights, ALNM_POSITIVE_SHARE, difficulty)
    return _Calibration(mean=mean, std=std, bm_intercept=b, alnm_intercept=c0)


def _oracle_probabilities(
    features: dict[str, np.ndarray], calib: _Calibration, difficulty: float
) -> dict[str, np.ndarray]:
    """Bayes-optimal label probabilities given the latent features only (never the labels).

    Returns arrays for "bm", "alnm_given_malignant", "node_rate" and the five TASKS.
    """
    z = (_predictor_matrix(features) - calib.mean) / calib.std
    p_bm = expit((z @ BM_WEIGHTS + calib.bm_intercept) / difficulty)
    p_pos = expit((z @ ALNM_WEIGHTS + calib.alnm_intercept) / difficulty)
    # Capped: a very small difficulty would otherwise ask for absurd (or unsampleable) counts.
    rate = np.minimum(np.exp(NODE_LOG_RATE + (z @ NODE_WEIGHTS) / difficulty), MAX_NODE_RATE)
    out = {"bm": p_bm, "alnm_given_malignant": p_pos, "node_rate": rate}
    out["alnm"] = p_bm * p_pos
    for k in (2, 3, 4):
        # P(1 + Poisson(rate) >= k) = P(Poisson(rate) >= k - 1) = regularised gamma(k-1, rate).
        out[f"alnm_ge{k}"] = p_bm * p_pos * gammainc(k - 1, rate)
    return out


def _draw_boundary_shape(
    rng: np.random.Generator, irregularity: float, spiculation: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the lesion's boundary harmonics and spikes (shared by all of its views)."""
    orders = np.arange(2, 7, dtype=float)
    # Low orders dominate: lobulation rather than jitter. A small floor keeps even
    # circumscribed lesions gently lobulated.
    raw = rng.uniform(0.2, 1.0, len(orders)) / orders
    amplitudes = raw / raw.sum() * (0.03 + 0.3 * irregularity)
    phases = rng.uniform(0.0, 2 * np.pi, len(orders))
    harmonics = np.stack([orders, amplitudes, phases], axis=1)
    # Always draw the maximum number so the count never shifts later draws.
    angles = rng.uniform(0.0, 2 * np.pi, _MAX_SPIKES)
    heights = spiculation * 0.9 * rng.uniform(0.5, 1.0, _MAX_SPIKES)
    widths = rng.uniform(0.04, 0.08, _MAX_SPIKES)
    count = int(round(spiculation * _MAX_SPIKES))
    spikes = np.stack([angles, heights, widths], axis=1)[:count]
    return harmonics, spikes


def _draw_patient(
    seq: np.random.SeedSequence, settings: PhantomSettings, calib: _Calibration
) -> _Patient:
    """Draw one patient's latent lesion, labels and oracle from its own seed sequence."""
    rng = np.random.default_rng(seq)
    arrays = _draw_features(rng, 1)
    features = {k: float(v[0]) for k, v in arrays.items()}
    harmonics, spikes = _draw_boundary_shape(rng, features["irregularity"], features["spiculation"])
    features["spike_count"] = float(len(spikes))
    probs = {
        k: float(v[0]) for k, v in _oracle_probabilities(arrays, calib, settings.difficulty).items()
    }
    # Every uniform is drawn whatever the outcome, so one setting never shifts other draws.
    u_bm, u_alnm, u_missing = rng.random(3)
    extra_nodes = int(rng.poisson(probs["node_rate"]))
    malignant = bool(u_bm < probs["bm"])
    count: int | None = 0
    if malignant and u_alnm < probs["alnm_given_malignant"]:
        count = 1 + extra_nodes
    if malignant and u_missing < settings.alnm_missing_fraction:
        count = None
    return _Patient(
        features=features,
        harmonics=harmonics,
        spikes=spikes,
        bm="malignant" if malignant else "benign",
        alnm_count=count,
        oracle={task: probs[task] for task in TASKS},
    )


@lru_cache(maxsize=1)
def _trait_scale() -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD of SUBTYPE_TRAITS over the fixed reference population."""
    traits = np.stack([_reference_features()[t] for t in SUBTYPE_TRAITS], axis=-1)
    return traits.mean(axis=0), traits.std(axis=0)


@_one_blas_thread
def subtype_probabilities(features: dict[str, float], difficulty: float = 1.0) -> np.ndarray:
    """P(subtype | the lesion's traits) of a malignant lesion, in SUBTYPES order: the oracle
    of the subtype task."""
    mean, sd = _trait_scale()
    z = (np.array([features[t] for t in SUBTYPE_TRAITS]) - mean) / sd
    logits = SUBTYPE_STRENGTH * (SUBTYPE_WEIGHTS @ z) / difficulty + np.log(SUBTYPE_PRIOR)
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def _draw_subtype(
    seq: np.random.SeedSequence, patient: _Patient, settings: PhantomSettings
) -> tuple[str | None, dict[str, float]]:
    """A patient's molecular subtype (None when benign or untyped) and its oracle, from a
    seed sequence of their own: no other draw moves with it."""
    probs = subtype_probabilities(patient.features, settings.difficulty)
    u_class, u_missing = np.random.default_rng(seq).random(2)
    oracle = dict(zip(SUBTYPES, map(float, probs), strict=True))
    if patient.bm != "malignant" or u_missing < settings.subtype_missing_fraction:
        return None, oracle
    index = min(int(np.searchsorted(np.cumsum(probs), u_class, side="right")), len(SUBTYPES) - 1)
    return SUBTYPES[index], oracle


# --------------------------------------------------------------------------- rendering


@lru_cache(maxsize=8)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre row (y) and column (x) coordinate grids of an n x n image."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _white_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal noise in float32: images need no more precision, and it is faster."""
    return rng.standard_normal(shape, dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, n: int, sigma: tuple[float, float]) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean and unit standard deviation."""
    field = ndimage.gaussian_filter(_white_noise(rng, (n, n)), sigma, mode="wrap", truncate=3.0)
    return (field - field.mean()) / (field.std() + 1e-12)


def _wavy_depth(rng: np.random.Generator, n: int, depth: float, wobble: float) -> np.ndarray:
    """Depth (pixels) of a tissue interface across the columns: a smooth random curve."""
    x = np.arange(n) / n
    phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.5)
    curve = np.sin(2 * np.pi * freq * x + phase)
    curve += 2.0 * ndimage.gaussian_filter1d(rng.standard_normal(n), n / 12, mode="wrap")
    return n * (depth + wobble * curve)


def _fat_lobules(
    rng: np.random.Generator, n: int, top: np.ndarray, bottom: np.ndarray
) -> np.ndarray:
    """dB offsets of hypoechoic fat lobules (flat ellipses) with bright septa between them."""
    offset = np.zeros((n, n), dtype=np.float32)
    for _ in range(int(rng.integers(3, 7))):
        cx = rng.uniform(0, n)
        col = int(np.clip(cx, 0, n - 1))
        cy = rng.uniform(top[col], max(bottom[col], top[col] + 1))
        ax, ay = rng.uniform(0.08, 0.2) * n, rng.uniform(0.03, 0.06) * n
        # Only a window around the lobule is touched: outside it both terms are ~0.
        x0, x1 = max(int(cx - 1.5 * ax), 0), min(int(cx + 1.5 * ax) + 1, n)
        y0, y1 = max(int(cy - 1.5 * ay), 0), min(int(cy + 1.5 * ay) + 1, n)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        r = np.hypot((xx - cx) / ax, (yy - cy) / ay).astype(np.float32)
        window = offset[y0:y1, x0:x1]
        # Piecewise-linear profiles: as good as smooth ones under speckle, and cheaper.
        window -= 5.0 * np.clip((1.0 - r) * 4.0 + 0.5, 0.0, 1.0)
        # Cooper's-ligament-like septum: a thin bright rim around the lobule.
        window += 4.0 * np.clip(1.0 - np.abs(r - 1.0) * 5.0, 0.0, None)
    return offset


def _overlay_layer(tissue: np.ndarray, layer: np.ndarray, depth: np.ndarray, scale: float) -> None:
    """Replace tissue by layer below the interface depth (per column), blending softly across it.

    Only the band of rows the interface crosses is blended; rows below it are copied.
    """
    n = tissue.shape[0]
    width = 0.8 * scale  # the soft step is a pixel or two wide
    top = int(np.clip(np.floor(depth.min() - 8 * width), 0, n))
    bottom = int(np.clip(np.ceil(depth.max() + 8 * width), top, n))
    rows = np.arange(top, bottom, dtype=float)[:, None]
    w = expit((rows - depth[None, :]) / width)
    tissue[top:bottom] += w * (layer[top:bottom] - tissue[top:bottom])
    tissue[bottom:] = layer[bottom:]


def _background_db(rng: np.random.Generator, n: int) -> np.ndarray:
    """Echogenicity map (dB) of normal breast anatomy: skin, fat, gland, pectoral muscle."""
    yy, xx = _grid(n)
    scale = n / REFERENCE_SIZE
    skin_end = _wavy_depth(rng, n, rng.uniform(0.03, 0.045), 0.004)
    fat_end = _wavy_depth(rng, n, rng.uniform(0.16, 0.28), 0.03)
    gland_end = _wavy_depth(rng, n, rng.uniform(0.76, 0.88), 0.025)
    # One horizontally elongated texture field serves every layer (they barely overlap),
    # at different strengths: strongest in the fibroglandular tissue.
    texture = _smooth_noise(rng, n, (1.2 * scale, 3.5 * scale))
    fat = -16.0 + 2.5 * texture + _fat_lobules(rng, n, skin_end, fat_end)
    gland = -7.0 + 6.0 * texture
    period, slope = rng.uniform(4.5, 7.0) * scale, rng.uniform(-0.25, 0.25)
    striation = np.sin(2 * np.pi * (yy - slope * xx) / period)
    muscle = -10.0 + 5.0 * striation + 1.5 * texture
    tissue = np.full((n, n), 5.0, dtype=np.float32)  # skin
    for layer, depth in ((fat, skin_end), (gland, fat_end), (muscle, gland_end)):
        _overlay_layer(tissue, layer, depth, scale)
    _add_fascia(tissue, gland_end, scale)
    return tissue


def _add_fascia(tissue: np.ndarray, depth: np.ndarray, scale: float) -> None:
    """Add the bright fascia line that lies on top of the pectoral muscle, in place."""
    n = tissue.shape[0]
    width = 1.2 * scale
    top = int(np.clip(np.floor(depth.min() - 4 * width), 0, n))
    bottom = int(np.clip(np.ceil(depth.max() + 4 * width), top, n))
    rows = np.arange(top, bottom, dtype=float)[:, None]
    tissue[top:bottom] += 6.0 * np.exp(-(((rows - depth[None, :]) / width) ** 2))


def _radius_profile(phi: np.ndarray, patient: _Patient, half_w: float, half_h: float) -> np.ndarray:
    """Boundary radius (pixels) at lesion-frame angle phi: ellipse x harmonics x spikes."""
    a, b = half_w, half_h
    ellipse = a * b / np.sqrt((b * np.cos(phi)) ** 2 + (a * np.sin(phi)) ** 2)
    order, amp, phase = patient.harmonics.T
    factor = 1.0 + np.cos(np.outer(phi, order) + phase) @ amp
    if len(patient.spikes):
        angle, height, width = patient.spikes.T
        gap = (phi[:, None] - angle + np.pi) % (2 * np.pi) - np.pi  # wrapped angular distance
        factor += np.exp(-0.5 * (gap / width) ** 2) @ height
    return ellipse * factor


@lru_cache(maxsize=1)
def _angle_table() -> np.ndarray:
    """Angles (radians) at which each view tabulates its boundary radius."""
    table = np.linspace(-np.pi, np.pi, _ANGLE_TABLE, endpoint=False)
    table.flags.writeable = False
    return table


def _halo_width(patient: _Patient, scale: float) -> float:
    """Thickness (pixels) of the echogenic halo's decay outside the boundary."""
    return (1.0 + 5.0 * patient.features["halo"]) * scale


def _lesion_half_axes(rng: np.random.Generator, patient: _Patient, n: int) -> tuple[float, float]:
    """Half width and half height (pixels) of the lesion's base ellipse, with +-10 % scale."""
    f = patient.features
    long_axis = f["size_mm"] * n / FOV_MM * rng.uniform(0.9, 1.1)
    if f["aspect"] >= 1.0:
        return long_axis / f["aspect"] / 2, long_axis / 2
    return long_axis / 2, long_axis * f["aspect"] / 2


def _draw_view(rng: np.random.Generator, patient: _Patient, n: int) -> _View:
    """Draw one view: lesion scale, rotation, position inside the image, display gain."""
    half_w, half_h = _lesion_half_axes(rng, patient, n)
    angle = np.deg2rad(patient.features["orientation_deg"] + rng.uniform(-8.0, 8.0))
    table = _radius_profile(_angle_table(), patient, half_w, half_h)
    radius = float(table.max())
    # Keep lesion and most of its halo inside the image; shrink a spiky giant that won't fit.
    reach = radius + 2.5 * _halo_width(patient, n / REFERENCE_SIZE)
    shrink = min(1.0, (n / 2 - 2.0) / reach)
    reach *= shrink
    cy_lo, cy_hi = max(reach + 1.0, 0.3 * n), min(n - 1.0 - reach, 0.62 * n)
    cy = rng.uniform(cy_lo, cy_hi) if cy_hi > cy_lo else n / 2
    # Centre on a pixel, which then lies inside: even a tiny lesion has a non-empty mask.
    cx = float(np.rint(rng.uniform(reach + 1.0, n - 1.0 - reach)))
    cy = float(np.rint(cy))
    return _View(
        cx=cx,
        cy=cy,
        angle=angle,
        half_w=half_w * shrink,
        half_h=half_h * shrink,
        radius=radius * shrink,
        table=table * shrink,
        gain_db=rng.uniform(-3.0, 3.0),
        range_db=rng.uniform(42.0, 54.0),
    )


def _lesion_window(patient: _Patient, view: _View, n: int) -> tuple[slice, slice]:
    """Rows and columns around the lesion beyond which boundary and halo have no effect."""
    margin = view.radius + 5.0 * _halo_width(patient, n / REFERENCE_SIZE) + 1.0
    rows = slice(max(int(view.cy - margin), 0), min(int(view.cy + margin) + 2, n))
    cols = slice(max(int(view.cx - margin), 0), min(int(view.cx + margin) + 2, n))
    return rows, cols


def _boundary_distance(patient: _Patient, view: _View, window: tuple[slice, slice]) -> np.ndarray:
    """Signed radial distance (pixels) from the boundary over the window; < 0 inside."""
    yy, xx = np.ogrid[window[0], window[1]]
    dx, dy = xx - view.cx, yy - view.cy
    c, s = np.cos(view.angle), np.sin(view.angle)
    u, v = dx * c + dy * s, -dx * s + dy * c
    # The radius is tabulated per view: evaluating every spike at every pixel is too slow.
    radius = np.interp(np.arctan2(v, u), _angle_table(), view.table, period=2 * np.pi)
    return np.hypot(u, v) - radius


def _lesion_db(
    rng: np.random.Generator, patient: _Patient, tissue: np.ndarray, dist: np.ndarray, scale: float
) -> np.ndarray:
    """Put the hypoechoic lesion, its internal blotches and its echogenic halo into tissue."""
    f = patient.features
    inner = -22.0 - 10.0 * (1.0 - f["echogenicity"])
    blotches = ndimage.gaussian_filter(_white_noise(rng, dist.shape), 2.0 * scale, truncate=3.0)
    blotches /= blotches.std() + 1e-12
    inner = inner + 8.0 * f["heterogeneity"] * blotches
    # Irregular lesions also have less distinct margins.
    edge = (0.4 + 1.2 * f["irregularity"]) * scale
    inside = expit(-dist / edge)
    outside = np.clip(dist, 0.0, None)
    halo = 14.0 * f["halo"] * np.exp(-outside / _halo_width(patient, scale)) * (1.0 - inside)
    return inside * inner + (1.0 - inside) * tissue + halo


def _posterior_db(mask: np.ndarray, posterior: float, scale: float) -> np.ndarray:
    """Shadowing (< 0) or enhancement (> 0) in the columns below the lesion, fading with depth.

    Returns a dB offset for every pixel (0 away from the lesion's acoustic column).
    """
    n = mask.shape[0]
    offset = np.zeros((n, n))
    hit_rows, hit_cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    # Work on the strip below the lesion only; the soft edges reach a few sigma sideways.
    sigma = 1.5 * scale
    c0 = max(int(hit_cols[0] - 4 * sigma), 0)
    c1 = min(int(hit_cols[-1] + 4 * sigma) + 2, n)
    r0 = max(int(hit_rows[0]), 0)
    strip = mask[r0:, c0:c1]
    hit = strip.any(axis=0)
    columns = ndimage.gaussian_filter1d(hit.astype(float), sigma, mode="constant")
    rows = np.arange(r0, n)[:, None]
    # Lowest lesion pixel per column (the overall bottom where a column misses the lesion).
    bottom = np.where(hit, (rows * strip).max(axis=0), hit_rows[-1])
    below = rows - bottom[None, :]
    fade = expit(below / (1.5 * scale)) * np.exp(-np.clip(below, 0, None) / (0.6 * n))
    offset[r0:, c0:c1] = 12.0 * posterior * columns[None, :] * fade * ~strip
    return offset


def _speckle_db(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """Fully developed speckle in dB: 10 log10 of the unit-mean intensity of smoothed
    complex Gaussian noise, i.e. log-compressed Rayleigh amplitude with correlated grains."""
    # Grains are shorter axially (rows) than laterally (columns), as in real probes.
    sigma = (1.0 * scale, 1.6 * scale)
    re = ndimage.gaussian_filter(_white_noise(rng, (n, n)), sigma, mode="wrap", truncate=3.0)
    im = ndimage.gaussian_filter(_white_noise(rng, (n, n)), sigma, mode="wrap", truncate=3.0)
    intensity = re * re + im * im
    # Deep nulls are floored, as a scanner's grey map does, so they read as dark grains
    # rather than black pinholes.
    return 10.0 * np.log10(np.maximum(intensity / intensity.mean(), _SPECKLE_FLOOR))


def _display(echo_db: np.ndarray, view: _View) -> np.ndarray:
    """Map echo level (dB) to 8-bit grey over the view's gain and dynamic range, as scanners do."""
    top = 10.0 - view.gain_db  # dB shown as white
    grey = (echo_db - (top - view.range_db)) * (255.0 / view.range_db)
    return np.rint(np.clip(grey, 0.0, 255.0)).astype(np.uint8)


def _render_view(
    rng: np.random.Generator, patient: _Patient, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render one B-mode view of the patient's lesion; returns (pixels uint8, mask bool)."""
    scale = n / REFERENCE_SIZE
    view = _draw_view(rng, patient, n)
    tissue = _background_db(rng, n)
    window = _lesion_window(patient, view, n)
    dist = _boundary_distance(patient, view, window)
    mask = np.zeros((n, n), dtype=bool)
    mask[window] = dist < 0.0
    tissue[window] = _lesion_db(rng, patient, tissue[window], dist, scale)
    tissue += _posterior_db(mask, patient.features["posterior"], scale)
    # Depth attenuation left over after time-gain compensation.
    tissue -= rng.uniform(4.0, 12.0) / n * np.arange(n)[:, None]
    return _display(tissue + _speckle_db(rng, n, scale), view), mask


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1), exclusive upper ends, of the True pixels of mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# --------------------------------------------------------------------------- public API


@_one_blas_thread
def generate_phantoms(
    settings: PhantomSettings = PhantomSettings(), seed: int = 0
) -> list[Phantom]:
    """Generate a synthetic phantom set; deterministic in (settings, seed).

    Each patient gets its own child seed sequence, so patient k's lesion, labels and images
    depend only on (seed, k, settings), not on how many images earlier patients had.
    Returns one Phantom per image, patients in order, views in order within a patient.
    """
    calib = _calibration(float(settings.malignant_fraction), float(settings.difficulty))
    width = max(4, len(str(settings.patients - 1)))
    phantoms: list[Phantom] = []
    for k, seq in enumerate(np.random.SeedSequence(seed).spawn(settings.patients)):
        # A third child for the subtype: spawning it leaves the first two unchanged.
        latent_seq, view_seq, subtype_seq = seq.spawn(3)
        patient = _draw_patient(latent_seq, settings, calib)
        subtype, subtype_oracle = _draw_subtype(subtype_seq, patient, settings)
        view_rng = np.random.default_rng(view_seq)
        count = int(view_rng.integers(settings.images_min, settings.images_max + 1))
        patient_id = f"p{k:0{width}d}"
        for j, image_seq in enumerate(view_seq.spawn(count)):
            pixels, mask = _render_view(
                np.random.default_rng(image_seq), patient, settings.image_size
            )
            phantoms.append(
                Phantom(
                    image_id=f"{patient_id}_i{j}",
                    patient_id=patient_id,
                    pixels=pixels,
                    mask=mask,
                    box=_bounding_box(mask),
                    bm=patient.bm,
                    alnm_count=patient.alnm_count,
                    oracle=dict(patient.oracle),
                    features=dict(patient.features),
                    subtype=subtype,
                    subtype_oracle=dict(subtype_oracle),
                )
            )
    return phantoms


def _manifest_row(p: Phantom) -> list[str]:
    """One manifest line for phantom p, in MANIFEST_COLUMNS order."""
    count = "" if p.alnm_count is None else str(p.alnm_count)
    return [
        f"images/{p.image_id}.png",
        f"masks/{p.image_id}.png",
        p.patient_id,
        *(str(v) for v in p.box),
        p.bm,
        count,
        p.subtype or "",
        *(f"{p.oracle[task]:.6f}" for task in TASKS),
    ]


def _save_png(array: np.ndarray, path: Path) -> None:
    """Save a uint8 grayscale array as PNG; mode 'xb' so an existing file is never replaced."""
    with open(path, "xb") as handle:
        Image.fromarray(array).save(handle, format="PNG")


def write_phantom_set(phantoms: list[Phantom], out_dir: Path) -> Path:
    """Write images/, masks/ (0/255 PNGs) and manifest.csv into out_dir; return the manifest path.

    Refuses (FileExistsError) an out_dir that exists and is not empty. Everything is written
    into a staging folder beside out_dir that is renamed into place at the end, so an
    interrupted run leaves neither a half-filled out_dir nor a manifest listing missing files.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(
            f"refusing to write phantoms into {out_dir}: it exists and is not an empty "
            "directory; choose a new or empty output directory"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.{os.getpid()}.partial"
    staging.mkdir()  # fails if another writer owns it
    try:
        (staging / "images").mkdir()
        (staging / "masks").mkdir()
        for p in phantoms:
            _save_png(p.pixels, staging / "images" / f"{p.image_id}.png")
            _save_png(p.mask.astype(np.uint8) * 255, staging / "masks" / f"{p.image_id}.png")
        with (staging / "manifest.csv").open("x", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(MANIFEST_COLUMNS)
            writer.writerows(_manifest_row(p) for p in phantoms)
        if out_dir.exists():  # empty, checked above: fill it in place (it may be the cwd)
            for name in ("images", "masks", "manifest.csv"):  # the manifest last
                os.rename(staging / name, out_dir / name)
            staging.rmdir()
        else:
            os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir / "manifest.csv"


def _task_label(p: Phantom, task: str) -> int | None:
    """Drawn 0/1 label of phantom p for task, or None when the node count is unknown."""
    if task == "bm":
        return int(p.bm == "malignant")
    if p.alnm_count is None:
        return None
    threshold = 1 if task == "alnm" else int(task.removeprefix("alnm_ge"))
    return int(p.alnm_count >= threshold)


@_one_blas_thread
def oracle_aucs(phantoms: list[Phantom]) -> dict[str, float]:
    """AUC of the generator's oracle probability against the drawn label, per task.

    Counts every image with a known label (benign images are negatives for the ALNM tasks).
    Returns {task: AUC} for TASKS, NaN where a task has only one class.
    """
    result: dict[str, float] = {}
    for task in TASKS:
        pairs = [
            (label, p.oracle[task]) for p in phantoms if (label := _task_label(p, task)) is not None
        ]
        labels = np.array([label for label, _ in pairs], dtype=int)
        if len(np.unique(labels)) < 2:
            result[task] = float("nan")
            continue
        result[task] = float(roc_auc_score(labels, [score for _, score in pairs]))
    return result


@_one_blas_thread
def oracle_subtype_auc(phantoms: list[Phantom]) -> float:
    """Macro one-vs-rest AUC of the generator's subtype probabilities over the typed images:
    the best the subtype task can reach on this data; NaN unless every subtype occurs."""
    typed = [p for p in phantoms if p.subtype is not None]
    labels = np.array([SUBTYPES.index(p.subtype) for p in typed], dtype=int)
    if len(np.unique(labels)) < len(SUBTYPES):
        return float("nan")
    scores = np.array([[p.subtype_oracle[s] for s in SUBTYPES] for p in typed])
    return float(roc_auc_score(labels, scores, multi_class="ovr", average="macro"))
