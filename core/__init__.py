"""mtlkit: plugin-based multi-task deep learning for breast ultrasound."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mtlkit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from .config import RunConfig, load_config  # noqa: E402
from .engine import Engine  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError,
    DataError,
    MtlError,
    OutputError,
    PluginError,
    TrainingError,
    UsageError,
)
from .pluginhost import hookimpl  # noqa: E402
from .runner import run  # noqa: E402

__all__ = [
    "ConfigError",
    "DataError",
    "Engine",
    "MtlError",
    "PluginError",
    "RunConfig",
    "OutputError",
    "TrainingError",
    "UsageError",
    "hookimpl",
    "load_config",
    "run",
    "__version__",
]
