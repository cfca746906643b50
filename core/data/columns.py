"""The ``columns`` option every data source takes: which file column each name the heads
read comes from (``columns: {bm: label}``: the heads' ``bm`` is the file's ``label``).

The core takes the option out of a data source's settings before the source's own options
model sees them, and renames the columns of whatever samples the source returns, so that
no data source implements it and every one has it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mtlkit.data.samples import SampleSet
from mtlkit.errors import ConfigError, DataError

OPTION = "columns"
"""The key, in every data source's settings, of the column mapping."""

ColumnMap = dict[str, str]


def split_columns(spec: Any, path: str) -> tuple[Any, ColumnMap]:
    """A data source's settings without ``columns``, and the mapping it held (validated:
    text names to text names, no file column used twice)."""
    if not isinstance(spec, Mapping) or OPTION not in spec:
        return spec, {}
    mapping = spec[OPTION]
    where = f"{path}.{OPTION}"
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(
            [(where, "expected a mapping of head-side column names to the file's columns")]
        )
    problems = [
        (f"{where}.{key}", "both names must be non-empty text")
        for key, value in mapping.items()
        if not (isinstance(key, str) and isinstance(value, str) and key.strip() and value.strip())
    ]
    if problems:
        raise ConfigError(problems)
    rest = {k: v for k, v in spec.items() if k != OPTION}
    return rest, {str(k): str(v) for k, v in mapping.items()}


def rename_columns(sample_set: SampleSet, mapping: Mapping[str, str], path: str) -> SampleSet:
    """``sample_set`` with each mapped file column also known by its head-side name (the
    head-side name wins over a file column of the same name); a mapped column the data lacks
    is a :class:`DataError` naming the columns it has."""
    if not mapping:
        return sample_set
    columns = list(sample_set.columns) or sorted(
        {key for sample in sample_set.samples for key in sample.labels}
    )
    absent = [f"{head!r} <- {file!r}" for head, file in mapping.items() if file not in columns]
    if absent:
        raise DataError(
            f"{path}.{OPTION} maps {', '.join(absent)}, but the data has no such column "
            f"(columns: {', '.join(columns) or 'none'})"
        )
    samples = [
        dataclasses.replace(
            sample,
            labels={**sample.labels, **{h: sample.labels.get(f) for h, f in mapping.items()}},
        )
        for sample in sample_set.samples
    ]
    renamed = [*columns, *(h for h in mapping if h not in columns)]
    return dataclasses.replace(sample_set, samples=samples, columns=tuple(renamed))
