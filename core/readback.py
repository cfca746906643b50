"""Files mtlkit wrote and reads back (checkpoint and training-state metadata, splits.json,
a run's metrics.json and environment.json), checked against a schema before use: a damaged
or foreign file is a usage error naming the file and what is wrong, never a crash.

Each reader declares its schema as a pydantic model next to it and calls :func:`read_json`
or :func:`parse_json` + :func:`validated`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from mtlkit.config.problems import validation_problems
from mtlkit.errors import UsageError, list_problems
from mtlkit.files_in import MAX_TABLE_BYTES, InputFileError, read_bytes
from mtlkit.text import MAX_VALUE, clip

T = TypeVar("T")


def parse_json(text: str | bytes, path: Path | str, what: str, error=UsageError) -> Any:
    """JSON text of ``path`` (or of one of its fields), else ``error`` naming the file."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise error(f"{path} is not a {what}: not JSON ({clip(str(exc), MAX_VALUE)})") from None


def validated(
    value: Any, schema: type[T] | Any, path: Path | str, what: str, error=UsageError
) -> T:
    """``value`` validated by ``schema`` (a pydantic model or type), else ``error`` listing
    each problem with its place in the document."""
    try:
        return TypeAdapter(schema).validate_python(value)
    except ValidationError as exc:
        problems = [f"{place or '<top>'}: {message}" for place, message in validation_problems(exc)]
        raise error(list_problems(f"{path} is not a {what}:", problems)) from None
    except RecursionError:
        raise error(f"{path} is not a {what}: nested too deeply") from None


def read_json(
    path: Path, what: str, schema: Any = Any, *, error=UsageError, limit: int = MAX_TABLE_BYTES
) -> Any:
    """A JSON file mtlkit wrote, read with a size bound and validated by ``schema``.
    FileNotFoundError passes through, for callers with their own message."""
    try:
        data = read_bytes(path, what, limit)
    except InputFileError as exc:
        raise error(str(exc)) from None
    return validated(parse_json(data, path, what, error), schema, path, what, error)


class FinishedRun(BaseModel):
    """What resuming reads of a finished run's metrics.json (the rest is kept as written)."""

    model_config = ConfigDict(extra="allow")
    sets: dict[str, dict[str, Any]]


def finished_run(run_dir: Path) -> tuple[dict[str, Any], str] | None:
    """The metrics document and predictions of a run that finished before an interruption
    (its metrics.json is written last), or None."""
    if not (run_dir / "metrics.json").is_file():
        return None
    path, what = run_dir / "metrics.json", "valid metrics.json of a finished run"
    document = read_json(path, what)
    validated(document, FinishedRun, path, what)  # checked; kept as written (key order)
    try:
        predictions = read_bytes(
            run_dir / "predictions.csv", "predictions.csv of a finished run", MAX_TABLE_BYTES
        ).decode("utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        raise UsageError(
            f"{run_dir / 'predictions.csv'} is missing or damaged although metrics.json says "
            "the run finished; move that folder away to train it again"
        ) from None
    return document, predictions
