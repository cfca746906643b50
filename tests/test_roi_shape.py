"""``data.roi.shape``: a square crop keeps the lesion's shape (taller than wide stays taller
than wide), where the paper's stretched box makes every lesion fill the square input."""

from __future__ import annotations

import numpy as np
import pytest

from mtlkit import RoiConfig, Sample, crop_and_resize, roi_box
from mtlkit.data.roi import square_box


def _extent(mask: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


@pytest.mark.parametrize(
    ("box", "margin", "expected"),
    [
        ((100, 80, 140, 100), 0.0, (100, 70, 140, 110)),  # wide: grows in height
        ((100, 80, 120, 160), 0.5, (30, 40, 190, 200)),  # tall: 0.5 x the long side
    ],
)
def test_the_square_is_centred_on_the_box_and_uses_its_longer_side(box, margin, expected):
    assert square_box(box, 300, 200, margin) == expected


def test_a_square_sticking_out_is_moved_inside_the_image_not_cut():
    x0, y0, x1, y1 = square_box((0, 170, 40, 200), 300, 200, 0.5)
    assert (x1 - x0, y1 - y0) == (80, 80)
    assert (x0, y1) == (0, 200)  # moved right and up, still containing the box
    assert x0 <= 0 and x1 >= 40 and y0 <= 170


def test_a_square_larger_than_the_image_is_cut_to_it():
    assert square_box((10, 10, 290, 60), 300, 200, 0.2) == (0, 0, 300, 200)


def test_a_taller_than_wide_lesion_stays_taller_than_wide_only_in_a_square_crop():
    image = np.zeros((200, 300), dtype=np.uint8)
    yy, xx = np.mgrid[:200, :300]
    image[((xx - 150) / 15) ** 2 + ((yy - 100) / 40) ** 2 <= 1] = 255  # 31 x 81 px
    sample = Sample("tall", "p", {}, lambda: image, box=(135, 60, 166, 141))
    crops = {}
    for shape in ("stretch", "square"):
        box = roi_box(sample, image, RoiConfig(mode="box", margin=0.2, shape=shape))
        crops[shape] = crop_and_resize(image, box, 64) > 127
    width, height = _extent(crops["square"])
    assert height / width == pytest.approx(81 / 31, rel=0.1)
    width, height = _extent(crops["stretch"])
    assert height / width == pytest.approx(1.0, abs=0.1)


def test_the_default_stretches_as_the_paper_does():
    assert RoiConfig().shape == "stretch"
    image = np.zeros((200, 300), dtype=np.uint8)
    sample = Sample("s", "p", {}, lambda: image, box=(100, 80, 140, 100))
    assert roi_box(sample, image, RoiConfig(mode="box", margin=0.5)) == (80, 70, 160, 110)


def test_the_shape_keys_the_radiomics_cache():
    from mtlkit.plugins.radiomics.extraction import ExtractionSettings
    from mtlkit.plugins.radiomics.options import RadiomicsOptions

    options = RadiomicsOptions()
    stretch = ExtractionSettings.from_options(options, RoiConfig(mode="box"))
    square = ExtractionSettings.from_options(options, RoiConfig(mode="box", shape="square"))
    assert "roi_shape" not in stretch.fingerprint()  # earlier radiomics caches stay valid
    assert stretch.fingerprint() != square.fingerprint()
