"""The ready-made softmax head over named classes, public so that a plugin adds a
multiclass task (molecular subtype, BI-RADS category) as a preset of it: options with
other defaults, no code of its own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from mtlkit.components.interfaces import TaskHead
from mtlkit.config.schema import OptionsModel
from mtlkit.data.labels import canonical


class MulticlassOptions(OptionsModel):
    name: str = Field(description="task name, unique in the run")
    label: str = Field(description="data column holding the class")
    classes: list[str] = Field(min_length=2, description="class values, in output order")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout on the features before the head's linear layer"
    )


class MulticlassHead(TaskHead):
    """Softmax over named classes; the target is the index of the label column's value in
    ``classes`` (compared as :func:`~mtlkit.canonical` text), unknown (NaN) when the cell is
    empty."""

    kind = "multiclass"
    Options = MulticlassOptions

    def __init__(self, options: MulticlassOptions):
        keys = [canonical(c) for c in options.classes]
        if len(set(keys)) != len(keys):
            raise ValueError("classes must be distinct")
        super().__init__(options.name, dropout=options.dropout, classes=list(options.classes))
        self.options = options
        self._index = {key: i for i, key in enumerate(keys)}

    @property
    def label_columns(self) -> tuple[str, ...]:
        return (self.options.label,)

    def target(self, labels: Mapping[str, Any]) -> float:
        raw = labels.get(self.options.label)
        value = canonical(raw)
        if value is None:
            return float("nan")
        if value not in self._index:
            raise ValueError(
                f"{self.options.label}={raw!r} is not one of the classes "
                f"{', '.join(self.options.classes)}"
            )
        return float(self._index[value])
