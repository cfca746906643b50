"""The complete state of a training run, saved every epoch so a killed run can continue.

One safetensors file holds every tensor (model, task weighting, constraints, optimizer
moments, the weight average, the best epoch's weights, random generator states); its JSON
metadata holds the rest (epoch, scheduler, optimizer hyper-parameters, python and numpy
generator states, history). No pickle is involved, and the file is written to a temporary
name and renamed, so a kill at any instant leaves either the previous state or the new one,
never a broken file.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from safetensors import SafetensorError
from safetensors.torch import load, save

from mtlkit.errors import UsageError
from mtlkit.files import atomic_write_bytes
from mtlkit.files_in import MAX_IMAGE_BYTES, InputFileError, read_bytes
from mtlkit.readback import parse_json, validated

FORMAT = "mtlkit-training-state/1"
WHAT = "mtlkit training state"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Best(_Strict):
    epoch: int | None
    score: float | None


class _Optimizer(_Strict):
    param_groups: list[dict[str, Any]]
    scalars: dict[str, dict[str, Any]]


class _Rng(_Strict):
    python: tuple[int, list[int], float | None]
    numpy: tuple[str, int, int, float]
    cuda: int


class StateMetadata(_Strict):
    """The schema of a training state's JSON metadata."""

    format: str
    epoch: int
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    history: list[dict[str, Any]]
    totals: dict[str, float]
    config_fingerprint: str
    best: _Best
    optimizer: _Optimizer
    rng: _Rng


@dataclass
class TrainingState:
    """Where a fit stands after ``epoch`` completed epochs."""

    epoch: int
    model: dict[str, torch.Tensor]
    weighting: dict[str, torch.Tensor]
    constraints: dict[str, torch.Tensor]  # their parameters and buffers; empty for most
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    average: dict[str, torch.Tensor]  # the weight average of training.ema; empty without
    loader_generator: torch.Tensor
    rng: dict[str, Any]
    best: dict[str, Any]  # epoch, score, and the model, weighting and constraints state dicts
    history: list[dict[str, Any]]
    totals: dict[str, float]  # training seconds and images so far
    config_fingerprint: str


def capture_rng() -> dict[str, Any]:
    """python, numpy and torch (CPU and CUDA) generator states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back generator states taken by :func:`capture_rng`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(
    path: Path, state: TrainingState, write: Callable[[Path, bytes], None] = atomic_write_bytes
) -> None:
    """Write ``state`` atomically (temporary file + rename). The file's content is taken
    at once; ``write`` (an atomic write, e.g. a
    :class:`~mtlkit.background_writer.BackgroundWriter`'s) puts it on disk."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {
        "format": FORMAT,
        "epoch": state.epoch,
        "scheduler": state.scheduler,
        "scaler": state.scaler,
        "history": state.history,
        "totals": state.totals,
        "config_fingerprint": state.config_fingerprint,
        "best": {"epoch": state.best["epoch"], "score": state.best["score"]},
    }
    _put(tensors, "model.", state.model)
    _put(tensors, "weighting.", state.weighting)
    _put(tensors, "constraints.", state.constraints)
    _put(tensors, "average.", state.average)
    _put(tensors, "best.model.", state.best["model"])
    _put(tensors, "best.weighting.", state.best["weighting"])
    _put(tensors, "best.constraints.", state.best["constraints"])
    tensors["rng.loader"] = state.loader_generator
    meta["optimizer"] = _flatten_optimizer(state.optimizer, tensors)
    meta["rng"] = _flatten_rng(state.rng, tensors)
    metadata = {"format": FORMAT, "state": json.dumps(meta)}
    write(path, save(tensors, metadata=metadata))


def load_state(path: Path) -> TrainingState:
    """Read a state written by :func:`save_state`, checked against :class:`StateMetadata`
    and for every tensor it needs; anything else is a UsageError naming the file."""
    try:
        raw = read_bytes(path, "training state", MAX_IMAGE_BYTES * 8)
        tensors = load(raw)
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except InputFileError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, SafetensorError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable training state ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise UsageError(f"{path} is not an {WHAT} (no '{FORMAT}' metadata)")
    if "state" not in metadata:
        raise UsageError(f"{path} is not a valid {WHAT}: its metadata has no state")
    meta = validated(
        parse_json(metadata["state"], path, f"valid {WHAT} (state metadata)"),
        StateMetadata,
        path,
        f"valid {WHAT}",
    ).model_dump()
    needed = ["rng.loader", "rng.torch", "rng.numpy"]
    needed += [f"rng.cuda.{i}" for i in range(meta["rng"]["cuda"])]
    missing = [name for name in needed if name not in tensors]
    if missing:
        raise UsageError(f"{path} is not a valid {WHAT}: tensor(s) {', '.join(missing)} missing")
    try:
        return _state(meta, tensors)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise UsageError(f"{path} is not a valid {WHAT}: {type(exc).__name__}: {exc}") from None


def _state(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> TrainingState:
    return TrainingState(
        epoch=meta["epoch"],
        model=_take(tensors, "model."),
        weighting=_take(tensors, "weighting."),
        constraints=_take(tensors, "constraints."),
        optimizer=_unflatten_optimizer(meta["optimizer"], tensors),
        scheduler=meta["scheduler"],
        scaler=meta["scaler"],
        average=_take(tensors, "average."),
        loader_generator=tensors["rng.loader"],
        rng=_unflatten_rng(meta["rng"], tensors),
        best={
            **meta["best"],
            "model": _take(tensors, "best.model."),
            "weighting": _take(tensors, "best.weighting."),
            "constraints": _take(tensors, "best.constraints."),
        },
        history=meta["history"],
        totals=meta["totals"],
        config_fingerprint=meta["config_fingerprint"],
    )


def _put(tensors: dict[str, torch.Tensor], prefix: str, state: dict[str, torch.Tensor]) -> None:
    for key, value in state.items():
        tensors[prefix + key] = value.detach().cpu().contiguous()


def _take(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _flatten_optimizer(state_dict: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict:
    """Tensors of the per-parameter state go to ``tensors``; the rest stays JSON."""
    scalars: dict[str, dict[str, Any]] = {}
    for param, values in state_dict["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{param}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param), {})[key] = value
    return {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, param, key = name.split(".", 2)
            state.setdefault(int(param), {})[key] = value
    for param, values in meta["scalars"].items():
        state.setdefault(int(param), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _flatten_rng(state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict:
    version, internal, gauss = state["python"]
    kind, keys, position, has_gauss, cached = state["numpy"]
    tensors["rng.torch"] = state["torch"]
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    for index, cuda in enumerate(state.get("cuda", [])):
        tensors[f"rng.cuda.{index}"] = cuda
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, int(position), int(has_gauss), float(cached)],
        "cuda": len(state.get("cuda", [])),
    }


def _unflatten_rng(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict:
    version, internal, gauss = meta["python"]
    kind, position, has_gauss, cached = meta["numpy"]
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    state = {
        "python": (version, tuple(internal), gauss),
        "numpy": (kind, keys, position, has_gauss, cached),
        "torch": tensors["rng.torch"],
    }
    if meta["cuda"]:
        state["cuda"] = [tensors[f"rng.cuda.{i}"] for i in range(meta["cuda"])]
    return state
