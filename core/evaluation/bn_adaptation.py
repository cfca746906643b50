"""Test-time batch-norm statistics (AdaBN, Li et al. 2016): another site's scanner shifts
the features' means and variances that batch norm was fitted to; recomputing them on that
site's own images (no labels) adapts the trained model to it. The weights stay as trained.

The price: an image's prediction then depends on the set it was scored with, so a set
needs enough images (``MIN_IMAGES``) for its statistics to mean anything.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from mtlkit.data.transforms import normalize_batch
from mtlkit.errors import UsageError

MIN_IMAGES = 16
"""Fewer images than this give batch-norm statistics too noisy to replace the trained ones."""

BATCH = 64
"""Images per forward pass while adapting. In training mode batch norm normalises each batch
by its own statistics, so the result depends on how the images are batched: a fixed size,
whatever the caller's batches, makes it depend on the images alone (and their order)."""


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapted_to(
    model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device
) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose batch-norm running statistics are those of
    the images in ``batches`` (uint8 tensors N x 1 x S x S, any batch sizes: they are run
    :data:`BATCH` at a time), every image weighted alike; ``model`` is unchanged. A model
    without batch norm comes back as an unchanged copy."""
    adapted = copy.deepcopy(model).eval()
    norms = batch_norms(adapted)
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.train()  # only the norms: dropout and the rest stay in eval mode
    seen = 0
    for batch in rebatched(batches, BATCH):
        # momentum n/(seen+n): the running value becomes the mean over every image so far,
        # so a short last batch counts for its images, not as much as a full one
        for norm in norms:
            norm.momentum = len(batch) / (seen + len(batch))
        adapted(normalize_batch(batch).to(device))
        seen += len(batch)
    if seen < MIN_IMAGES:
        raise UsageError(
            f"adapting batch-norm statistics needs at least {MIN_IMAGES} images, got {seen}; "
            "score so few without adapt_bn"
        )
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
        norm.eval()
    return adapted


def rebatched(batches: Iterable[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """The images of ``batches`` again, ``size`` at a time (the last batch may be short)."""
    pending: list[torch.Tensor] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += len(batch)
        while held >= size:
            joined = torch.cat(pending)
            yield joined[:size]
            pending, held = [joined[size:]], held - size
    if held:
        yield torch.cat(pending)


def in_batches(rois: torch.Tensor, size: int = 64) -> Iterable[torch.Tensor]:
    """``rois`` a batch at a time, for :func:`adapted_to`."""
    return (rois[start : start + size] for start in range(0, len(rois), size))
