"""The radiomics baseline's config keys (``baselines: [{type: radiomics, ...}]``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mtlkit import OptionsModel

FeatureClass = Literal["firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm", "shape2D"]
DEFAULT_CLASSES: tuple[str, ...] = ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
"""Intensity and texture: 93 features in 2D (18 + 24 + 16 + 16 + 14 + 5)."""


class BorutaOptions(OptionsModel):
    """Boruta feature selection (``boruta.BorutaPy``) per task, on the training split only."""

    enabled: bool = Field(True, description="false: the forest uses every feature")
    max_iter: int = Field(100, ge=1, le=10_000, description="Boruta iterations at most")
    perc: int = Field(100, ge=1, le=100, description="percentile of the shadow importances to beat")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of the tests")
    two_step: bool = Field(True, description="FDR then Bonferroni correction (BorutaPy's)")
    n_estimators: int | Literal["auto"] = Field(
        "auto", description="trees of Boruta's own forest per iteration; auto: BorutaPy's rule"
    )
    max_depth: int = Field(5, ge=1, description="depth of Boruta's trees (BorutaPy: 3-7)")
    include_tentative: bool = Field(
        False, description="also use the features Boruta leaves tentative"
    )

    @field_validator("n_estimators")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1, or auto")
        return value


class ForestOptions(OptionsModel):
    """The per-task random forest (scikit-learn); the paper: maximum depth 300."""

    n_estimators: int = Field(100, ge=1, description="trees")
    max_depth: int | None = Field(300, ge=1, description="maximum depth; null: unlimited")
    min_samples_leaf: int = Field(1, ge=1, description="fewest images in a leaf")
    max_features: Literal["sqrt", "log2"] | float | None = Field(
        "sqrt", description="features per split: sqrt, log2, a share (0, 1], or null (all)"
    )
    class_weight: Literal["balanced", "balanced_subsample"] | None = Field(
        None, description="null: every image weighs the same"
    )

    @field_validator("max_features")
    @classmethod
    def _share(cls, value):
        if isinstance(value, float) and not 0 < value <= 1:
            raise ValueError("a share must lie in (0, 1]")
        return value


class RadiomicsOptions(OptionsModel):
    """PyRadiomics features of each RoI, Boruta selection and a random forest per task."""

    name: str = Field("radiomics", description="folder in the run directory, name in reports")
    features: list[FeatureClass] = Field(
        default_factory=lambda: list(DEFAULT_CLASSES),
        description="PyRadiomics feature classes; shape2D needs region: mask",
    )
    region: Literal["box", "mask"] = Field(
        "box",
        description="box: every pixel of the RoI crop (the paper: boxes only); mask: the "
        "lesion mask inside the crop",
    )
    bin_width: float | None = Field(
        25, gt=0, description="grey-level bin width (PyRadiomics' default); or set bin_count"
    )
    bin_count: int | None = Field(
        None, ge=2, le=1024, description="a fixed number of grey-level bins instead of a width"
    )
    normalize: bool = Field(
        False, description="z-score each RoI's intensities before binning (PyRadiomics)"
    )
    normalize_scale: float = Field(
        100, gt=0, description="with normalize: z-scores times this (bin_width applies after)"
    )
    image_size: int | None = Field(
        None,
        ge=8,
        le=4096,
        description="resize each crop to this square side first; null: native pixels",
    )
    min_pixels: int = Field(
        16, ge=2, description="a region with fewer pixels is reported and not extracted"
    )
    workers: int | None = Field(
        None, ge=1, le=256, description="extraction processes; null: one per CPU core"
    )
    cache: bool = Field(True, description="keep features on disk per image and setting")
    cache_dir: str | None = Field(
        None,
        description="feature cache folder; null: <data.cache_dir>/radiomics when data.cache_dir "
        "is set, else ~/.cache/mtlkit/radiomics ($XDG_CACHE_HOME)",
    )
    n_jobs: int = Field(
        -1,
        description="threads for Boruta's and the forest's trees (-1: all cores); results "
        "do not depend on it",
    )
    boruta: BorutaOptions = Field(default_factory=BorutaOptions)
    forest: ForestOptions = Field(default_factory=ForestOptions)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_\-]*", value):
            raise ValueError("must start with a letter and hold only letters, digits, _ and -")
        return value

    @field_validator("features")
    @classmethod
    def _classes(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one feature class")
        if len(set(value)) != len(value):
            raise ValueError("a feature class is listed twice")
        return value

    @field_validator("n_jobs")
    @classmethod
    def _jobs(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("a positive number of threads, or -1 for all cores")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RadiomicsOptions:
        if self.bin_count is not None and "bin_width" in self.model_fields_set:
            raise ValueError("give bin_width or bin_count, not both")
        if "shape2D" in self.features and self.region != "mask":
            raise ValueError(
                "shape2D describes the region's outline; with region: box that is only the "
                "RoI box itself. Use region: mask (needs lesion masks) or drop shape2D"
            )
        return self
