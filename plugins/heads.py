"""Task heads: generic binary and multiclass heads, and the paper's named tasks as presets.

The targets come from label columns, so BM (``bm == malignant``), ALNM (``alnm_count >= 1``)
and nodal burden (``alnm_count >= k``) are configurations of one binary head, not code. Each
head trains with its kind's default loss (``bce``, ``cross_entropy``) unless the config gives
``heads[i].loss``, a key the core handles for every head. The multiclass head is
:class:`mtlkit.MulticlassHead`, in the public API so that other plugins' tasks are presets
of it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from mtlkit import (
    MulticlassHead,
    OptionsModel,
    TaskHead,
    as_count,
    as_number,
    canonical,
    hookimpl,
)
from mtlkit.plugins.segmentation import SegmentationHead


class BinaryOptions(OptionsModel):
    name: str = Field(description="task name, unique in the run")
    label: str = Field(description="data column the target is derived from")
    positive: list[Any] | None = Field(None, description="values meaning positive")
    negative: list[Any] | None = Field(None, description="values meaning negative")
    threshold: float | None = Field(None, description="numeric column: positive when >= this")
    count: bool = Field(
        False, description="the column holds a count: only non-negative integers are valid"
    )
    negative_if: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="column -> values that make the target 0 whatever the label column says "
        "(e.g. bm: [benign] for nodal tasks: benign tumours have no nodal metastasis)",
    )
    dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout on the features before the head's linear layer"
    )

    @model_validator(mode="after")
    def _one_rule(self) -> BinaryOptions:
        if self.threshold is not None and (self.positive or self.negative):
            raise ValueError("give either threshold or positive/negative values, not both")
        if self.threshold is None and bool(self.positive) != bool(self.negative):
            raise ValueError("positive and negative values must be given together")
        return self


class BinaryHead(TaskHead):
    """One sigmoid output; the target is 1, 0 or unknown (NaN) per the options."""

    kind = "binary"
    Options = BinaryOptions

    def __init__(self, options: BinaryOptions):
        super().__init__(options.name, dropout=options.dropout)
        self.options = options
        self._positive = {canonical(v) for v in options.positive or ()}
        self._negative = {canonical(v) for v in options.negative or ()}
        self._negative_if = {
            column: {canonical(v) for v in values} for column, values in options.negative_if.items()
        }

    @property
    def label_columns(self) -> tuple[str, ...]:
        return (self.options.label, *self._negative_if)

    def target(self, labels: Mapping[str, Any]) -> float:
        own = self._own_target(labels)
        for column, values in self._negative_if.items():
            if canonical(labels.get(column)) in values:
                if own == 1.0:  # e.g. a benign tumour with metastatic nodes: a data error
                    raise ValueError(
                        f"{column}={labels.get(column)!r} means negative, but "
                        f"{self.options.label}={labels.get(self.options.label)!r} is positive"
                    )
                return 0.0
        return own

    def implies(self, other: TaskHead) -> bool:
        """From the options alone: a count at or above a higher threshold of the same column
        (ALNM >= 3 implies ALNM >= 2), a subset of the same column's positive values, or
        this task being negative wherever ``other``'s column says negative (ALNM is
        negative for benign tumours, so it implies BM). ``other``'s own ``negative_if``
        rules must hold for this task too."""
        if not isinstance(other, BinaryHead) or not self._covers_negative_if(other):
            return False
        mine, theirs = self.options, other.options
        if mine.label == theirs.label:
            if mine.threshold is not None and theirs.threshold is not None:
                return mine.threshold >= theirs.threshold
            return bool(self._positive) and self._positive <= other._positive
        # Every value of other's column that is not positive for it (other refuses values
        # outside its positive and negative sets) makes this task negative.
        negative_for_me = self._negative_if.get(theirs.label, set())
        return bool(other._positive) and other._negative <= negative_for_me

    def _covers_negative_if(self, other: BinaryHead) -> bool:
        return all(
            values <= self._negative_if.get(column, set())
            for column, values in other._negative_if.items()
        )

    def _own_target(self, labels: Mapping[str, Any]) -> float:
        """The target the label column alone gives (NaN = unknown)."""
        raw = labels.get(self.options.label)
        value = canonical(raw)
        if value is None:
            return float("nan")
        if self.options.threshold is not None or self.options.count:
            number = as_number(raw)
            if number is None:
                raise ValueError(f"{self.options.label}={raw!r} is not a number")
            if self.options.count and as_count(raw) is None:  # 1e1, -1, 2.5
                raise ValueError(
                    f"{self.options.label}={raw!r} is not a count (a non-negative integer)"
                )
            if self.options.threshold is not None:
                return float(number >= self.options.threshold)
        if self._positive:
            if value in self._positive:
                return 1.0
            if value in self._negative:
                return 0.0
            allowed = sorted(self._positive | self._negative)
            raise ValueError(
                f"{self.options.label}={raw!r} is neither positive nor negative "
                f"(allowed: {', '.join(allowed)})"
            )
        if value in ("0", "1"):
            return float(value)
        if value in ("true", "false", "yes", "no"):
            return float(value in ("true", "yes"))
        raise ValueError(f"{self.options.label}={raw!r} is not 0/1; set positive/negative values")


class BMOptions(BinaryOptions):
    name: str = "bm"
    label: str = "bm"
    positive: list[Any] | None = Field(default_factory=lambda: ["malignant", 1])
    negative: list[Any] | None = Field(default_factory=lambda: ["benign", 0])


class BMHead(BinaryHead):
    """Benign (0) vs malignant (1) tumour."""

    Options = BMOptions


class ALNMOptions(BinaryOptions):
    name: str = "alnm"
    label: str = "alnm_count"
    threshold: float | None = 1
    count: bool = True
    negative_if: dict[str, list[Any]] = Field(default_factory=lambda: {"bm": ["benign", 0]})


class ALNMHead(BinaryHead):
    """Axillary lymph-node metastasis: at least one metastatic node."""

    Options = ALNMOptions


class BurdenOptions(ALNMOptions):
    name: str = Field("", description="task name, unique in the run; empty: alnm_ge{min_nodes}")
    min_nodes: int = Field(2, ge=1, le=50, description="positive when alnm_count >= min_nodes")
    threshold: float | None = None

    @model_validator(mode="after")
    def _derive(self) -> BurdenOptions:
        if self.threshold is not None and self.threshold != self.min_nodes:
            raise ValueError("set min_nodes, not threshold, for alnm_burden")
        self.threshold = float(self.min_nodes)
        self.name = self.name or f"alnm_ge{self.min_nodes}"
        return self


class BurdenHead(BinaryHead):
    """Nodal burden: at least ``min_nodes`` metastatic nodes (2, 3, 4 in the paper)."""

    Options = BurdenOptions


@hookimpl
def mtl_register_heads(registry):
    registry.register("binary", BinaryHead)
    registry.register("multiclass", MulticlassHead)
    registry.register("bm", BMHead)
    registry.register("alnm", ALNMHead)
    registry.register("alnm_burden", BurdenHead)
    registry.register("segmentation", SegmentationHead)
