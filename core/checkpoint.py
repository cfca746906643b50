"""Model weights on disk: safetensors plus the run's config as JSON metadata, never pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .errors import UsageError
from .outputs import atomic_write_bytes

FORMAT = "mtlkit-weights/1"


def save_weights(model: Any, path: Path, config: Any, info: dict[str, Any]) -> None:
    """Write the model's state dict atomically, with the config and ``info`` as metadata."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "config": config.model_dump_json(),
        "info": json.dumps(info),
    }
    atomic_write_bytes(path, save(state, metadata=metadata))


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a weights file: ``{"config": dict, "info": dict}``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise UsageError(f"{path} is not a readable mtlkit weights file: {exc}") from None
    if meta.get("format") != FORMAT:
        raise UsageError(f"{path} is not an mtlkit weights file (no '{FORMAT}' metadata)")
    return {"config": json.loads(meta["config"]), "info": json.loads(meta.get("info", "{}"))}


def load_weights(model: Any, path: Path) -> None:
    """Load weights into ``model``; a mismatch names the missing, extra or reshaped tensors."""
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise UsageError(f"{path} is not a readable safetensors file: {exc}") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    reshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own.keys() & state.keys()
        if own[k].shape != state[k].shape
    ]
    if missing or extra or reshaped:
        parts = []
        for title, items in (("missing", missing), ("unexpected", extra), ("shape", reshaped)):
            if items:
                parts.append(
                    f"{title}: {', '.join(items[:8])}" + (" ..." if len(items) > 8 else "")
                )
        raise UsageError(f"{path} does not fit this model ({'; '.join(parts)})")
    model.load_state_dict(state)
