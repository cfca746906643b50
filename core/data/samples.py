"""Samples as every data source produces them: one image, its ids, its labels, its RoI."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ImageLoader = Callable[[], np.ndarray]


@dataclass(frozen=True)
class Sample:
    """One image of one patient.

    ``labels`` maps column names to raw values (None or NaN = unknown); heads turn them
    into targets. ``image`` returns a 2-D uint8 grayscale array; ``mask`` returns a 2-D
    boolean array or is None. ``box`` is ``(x0, y0, x1, y1)`` in pixels, end exclusive.
    ``files`` are the files the sample is read from (image, mask, annotation), when there
    are any: they fingerprint the data and key the on-disk RoI cache. ``origin`` says where
    the sample was listed (``"manifest.csv row 12"``), for messages.
    """

    image_id: str
    patient_id: str
    labels: dict[str, Any]
    image: ImageLoader
    mask: ImageLoader | None = None
    box: tuple[int, int, int, int] | None = None
    files: tuple[Path, ...] = ()
    origin: str = ""

    def where(self) -> str:
        """The sample as messages name it: its image id, and its origin when known."""
        return f"image {self.image_id}" + (f" ({self.origin})" if self.origin else "")


@dataclass
class SampleSet:
    """What a data source returns: the samples and a short description of where they came from."""

    samples: list[Sample]
    description: str = ""
    columns: Sequence[str] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.samples)
