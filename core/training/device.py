"""Which torch device a run trains on, from ``training.device``."""

from __future__ import annotations

import torch

from mtlkit.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """The device ``name`` stands for: ``auto`` picks CUDA, then MPS, then the CPU; a device
    this machine lacks is a usage error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"training.device is {name!r} but CUDA is not available here")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise UsageError(
            f"training.device is {name!r} but this machine has {torch.cuda.device_count()} "
            "CUDA device(s)"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("training.device is 'mps' but MPS is not available here")
    return torch.device(name)
