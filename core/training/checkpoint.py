"""Model weights on disk: safetensors plus the run's config as JSON metadata, never pickle."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from mtlkit.errors import UsageError
from mtlkit.files import atomic_write_bytes
from mtlkit.files_in import MAX_IMAGE_BYTES, InputFileError, check_regular
from mtlkit.readback import parse_json, validated

FORMAT = "mtlkit-weights/1"
WHAT = "mtlkit weights file"
CHECKPOINT_NAMES = ("best.safetensors", "last.safetensors")
"""A run directory's checkpoints, in the order :func:`checkpoint_of` prefers them."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class TrainedConfig(_Open):
    """What evaluation needs of the recorded config before validating it as a RunConfig."""

    training: dict[str, Any]
    heads: list[Any]


class RecordedPlugin(_Open):
    kind: str
    name: str
    plugin: str | None = None
    distribution: str | None = None
    version: str | None = None


class WeightsMetadata(BaseModel):
    """The schema of a weights file's metadata (each field JSON text in the file)."""

    config: TrainedConfig
    info: dict[str, Any]
    plugins: list[RecordedPlugin]


def save_weights(
    model: Any,
    path: Path,
    config: Any,
    info: dict[str, Any],
    plugins: list[dict] = (),
    write: Callable[[Path, bytes], None] = atomic_write_bytes,
) -> None:
    """Write the model's state dict atomically, with the config, ``info`` and the plugins
    whose components the model uses (see :mod:`mtlkit.components.usage`) as metadata.
    The file's content is taken at once; ``write`` (an atomic write, e.g. a
    :class:`~mtlkit.background_writer.BackgroundWriter`'s) puts it on disk."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "config": config.model_dump_json(),
        "info": json.dumps(info),
        "plugins": json.dumps(list(plugins)),
    }
    write(path, save(state, metadata=metadata))


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a weights file: ``{"config": dict, "info": dict, "plugins": list}``,
    checked against :class:`WeightsMetadata`; anything else is a UsageError naming the file."""
    from safetensors import safe_open

    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable {WHAT}: {exc}") from None
    if meta.get("format") != FORMAT:
        raise UsageError(f"{path} is not an {WHAT} (no '{FORMAT}' metadata)")
    if "config" not in meta:
        raise UsageError(f"{path} is not a valid {WHAT}: its metadata has no config")
    raw = {
        key: parse_json(meta.get(key, default), path, f"valid {WHAT} ({key} metadata)")
        for key, default in (("config", "{}"), ("info", "{}"), ("plugins", "[]"))
    }
    checked = validated(raw, WeightsMetadata, path, f"valid {WHAT}")
    return {
        "config": checked.config.model_dump(),
        "info": checked.info,
        "plugins": [p.model_dump() for p in checked.plugins],
    }


def _check_file(path: Path) -> None:
    try:
        check_regular(path, "weights file", MAX_IMAGE_BYTES * 8)
    except FileNotFoundError:
        raise UsageError(f"weights file not found: {path}") from None
    except InputFileError as exc:
        raise UsageError(str(exc)) from None


def load_weights(model: Any, path: Path) -> None:
    """Load weights into ``model``; a mismatch names the missing, extra or reshaped tensors."""
    _check_file(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable safetensors file: {exc}") from None
    mismatch = state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise UsageError(f"{path} does not fit this model ({mismatch})")
    model.load_state_dict(state)


def state_dict_mismatch(own: dict[str, Any], saved: dict[str, Any]) -> str | None:
    """Why ``saved`` cannot be loaded into a model whose state dict is ``own``, or None.

    Names the missing, unexpected and reshaped tensors (a few of each).
    """
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    reshaped = [
        f"{k} {tuple(saved[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(own.keys() & saved.keys())
        if own[k].shape != saved[k].shape
    ]
    parts = [
        f"{title}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}"
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape", reshaped))
        if items
    ]
    return "; ".join(parts) or None


def checkpoint_of(where: str | Path, option: str = "--checkpoint") -> Path:
    """The checkpoint ``where`` names: a weights file, or a run directory (its first
    fold's and seed's best checkpoint, else its last, at any depth: ``seed_0/``,
    ``fold_1/seed_0/``). ``option`` names the setting in the error when there is none."""
    path = Path(where).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in CHECKPOINT_NAMES:
            found = sorted(path.rglob(f"checkpoints/{name}"), key=_natural)
            if found:
                return min(found, key=lambda p: len(p.parts))
        raise UsageError(f"{option}: {where} holds no checkpoints/best.safetensors")
    raise UsageError(f"{option}: {where} does not exist")


def _natural(path: Path) -> list:
    """Sort key: ``seed_2`` before ``seed_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]
