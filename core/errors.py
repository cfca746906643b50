"""The exceptions mtlkit raises on purpose.

Everything derives from :class:`MtlError`. The CLI turns a :class:`UsageError` (a problem
with what the user gave: config, data, plugin set-up) into a short message and exit code 2,
and any other :class:`MtlError` into a short message and exit code 1.
"""

from __future__ import annotations

MAX_LISTED = 50
"""Problems listed in one error message; a count says how many more there were."""


def list_problems(title: str, problems: list[str]) -> str:
    """An error message: ``title`` and one indented line per problem (at most MAX_LISTED)."""
    lines = [title, *(f"  {p}" for p in problems[:MAX_LISTED])]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more")
    return "\n".join(lines)


class MtlError(Exception):
    """Base class of every error mtlkit raises on purpose."""

    exit_code = 1


class UsageError(MtlError):
    """Something the user supplied is wrong; fixing the input fixes the run."""

    exit_code = 2


class ConfigError(UsageError):
    """A run configuration is invalid. ``problems`` holds one ``(yaml_path, message)`` each."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"invalid configuration{where}:"]
        lines += [f"  {path or '<root>'}: {message}" for path, message in problems[:MAX_LISTED]]
        if len(problems) > MAX_LISTED:
            lines.append(f"  ... and {len(problems) - MAX_LISTED} more")
        super().__init__("\n".join(lines))


class DataError(UsageError):
    """Input data is missing, unreadable or contradictory."""


class BadRowsError(DataError):
    """A table some of whose rows are bad. ``problems`` holds ``(row number, message)``
    each and ``good`` what the good rows gave (a data source's SampleSet), for a caller
    that reports bad rows one by one (``mtl predict``) instead of refusing the file."""

    def __init__(self, title: str, problems: list[tuple[int, str]], good=None):
        self.problems, self.good = problems, good
        super().__init__(list_problems(title, [f"row {n}: {m}" for n, m in problems]))


class PluginError(UsageError):
    """A plugin could not be loaded, or registered something that clashes."""


class RegistryError(UsageError):
    """A component name is unknown or registered twice."""


class OutputError(UsageError):
    """An output cannot be written (full disk, no permission); nothing half-written is left."""


class TrainingError(MtlError):
    """Training failed at run time (for example a non-finite loss)."""
