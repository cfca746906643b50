"""The inference paths of ``evaluation.inference`` and the copy of the model each one runs.

Every path but ``eager`` runs a frozen copy of the model, never the live one: the per-epoch
validation goes through here while the model trains, and converting that model to
channels_last or folding its BatchNorm would change its training. The copy is made again
when the weights change (a training step, a loaded checkpoint), which is seen from the
parameters' and buffers' identities and in-place version counters.

"Exact enough" means every probability within :data:`TOLERANCE` of eager fp32 (the AUC
then moves by far less than 0.002); ``bf16`` is not, and is only used when asked for.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, get_args

import torch
from torch import nn

from mtlkit.components.interfaces import Constraint, DenseHead, TaskHead
from mtlkit.config.schema import InferencePath
from mtlkit.errors import ConfigError
from mtlkit.inference.folding import FoldingError, fold_batch_norms, frozen_copy
from mtlkit.inference.onnx_graph import INSTALL_HINT, missing_onnx_modules
from mtlkit.inference.onnx_model import OnnxForward
from mtlkit.inference.outputs import Forward, predicted_outputs

PATHS: tuple[str, ...] = get_args(InferencePath)
"""The values of ``evaluation.inference``."""

EXACT_PATHS = ("eager", "channels_last", "folded", "compile", "onnx")
"""The paths whose probabilities stay within :data:`TOLERANCE` of eager fp32."""

TOLERANCE = 1e-4
"""The largest absolute difference from eager fp32 probabilities an exact path may have."""

BF16_TOLERANCE = 0.05
"""What ``bf16`` autocast is held to (its mantissa has 8 bits): not exact enough for
``auto``."""

ONNX_AFTER_IMAGES = 1024
"""``auto`` builds the ONNX Runtime session (an export of several seconds) once this many
images have been scored with the same weights: below that ``folded`` finishes first. The
break-even measured by benchmarks/inference.py (``onnx_break_even_images``) was 260-340
images for resnet18 at 128 px and 1,100-5,800 for resnet10t at 64 px on 2 busy cores, so
a run's own evaluation mostly stays on ``folded`` and bulk prediction moves to ONNX."""

FOLDED_PER_EPOCH = ("compile", "onnx")
"""Paths a fit's per-epoch validation replaces by ``folded``: the weights change every
epoch, and a new compiled copy or export for each (seconds to a minute) costs more than it
saves; a new folded copy costs about 0.1 s and still beat eager by 1.15-1.43x
(``per_epoch_validation`` in benchmarks/inference.py), so ``auto`` validates with it."""


def onnx_problem() -> str | None:
    """Why the ``onnx`` path cannot run here (its packages are missing), or None."""
    missing = missing_onnx_modules()
    if missing:
        return (
            f"inference 'onnx' needs {', '.join(missing)}, which cannot be imported here; "
            f"install it: {INSTALL_HINT}"
        )
    return None


def check_inference(name: str, device: torch.device, where: str = "evaluation.inference") -> None:
    """A ConfigError at ``where`` when path ``name`` cannot run on ``device`` here."""
    if name != "onnx":
        return
    problem = onnx_problem()
    if problem is None and device.type != "cpu":
        problem = (
            f"inference 'onnx' runs on ONNX Runtime's CPU provider, but the model is on "
            f"{device}; use folded (or auto) there, or --device cpu"
        )
    if problem:
        raise ConfigError([(where, problem)])


@dataclass
class Prepared:
    """A path ready to run: its name (after ``auto`` and any fallback), the forward pass
    and how its input is laid out and computed."""

    name: str
    forward: Forward
    channels_last: bool = False
    autocast: torch.dtype | None = None

    def outputs(
        self,
        images: torch.Tensor,
        heads: Sequence[TaskHead],
        dense_heads: Sequence[DenseHead],
        adjusting: Sequence[Constraint],
        mirror: bool,
    ):
        """:func:`predicted_outputs` of this path for normalised ``images``."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        grad = torch.no_grad() if self.name == "eager" else torch.inference_mode()
        with grad, _autocast(images.device, self.autocast):
            return predicted_outputs(self.forward, heads, dense_heads, adjusting, images, mirror)


class CompiledForward:
    """``torch.compile`` of a frozen (folded) copy; a compilation that fails (no C compiler, an
    operator inductor cannot lower) warns once and runs the folded copy instead."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.compiled: Any = torch.compile(model)

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.compiled is not None:
            try:
                return self.compiled(images)
            except Exception as exc:  # inductor raises many kinds; any means "not here"
                warnings.warn(
                    f"inference 'compile': torch.compile failed ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:300] if str(exc) else ''}); running the "
                    "folded model without compiling",
                    stacklevel=2,
                )
                self.compiled = None
        return self.model(images)


class InferencePaths:
    """The engine's inference: which path runs a call and the prepared copy it runs,
    kept while the weights stay the same."""

    def __init__(self, configured: str, device: torch.device):
        if configured not in PATHS:
            raise ConfigError(
                [("evaluation.inference", f"unknown path {configured!r}; choices: {PATHS}")]
            )
        self.configured = configured
        self.device = device
        self._key: tuple | None = None
        self._prepared: dict[str, Prepared] = {}
        self._scored = 0  # images scored with the current weights, for auto's choice
        self._validating = False
        self._onnx_problem: str | None = None  # "" once the onnx extra was found importable

    @contextlib.contextmanager
    def validating(self) -> Iterator[None]:
        """Within: the per-epoch validation of a fit (see :data:`FOLDED_PER_EPOCH`)."""
        previous, self._validating = self._validating, True
        try:
            yield
        finally:
            self._validating = previous

    def choose(self, model: nn.Module, images: int) -> str:
        """The path that scores ``images`` images (mirror views included) with ``model``'s
        current weights, after ``auto`` and the per-epoch exception."""
        self._follow(model)
        name = self._auto(images) if self.configured == "auto" else self.configured
        return "folded" if self._validating and name in FOLDED_PER_EPOCH else name

    def prepared(self, name: str, model: nn.Module, example: torch.Tensor) -> Prepared:
        """Path ``name`` ready for ``model``'s current weights; ``example`` (normalised
        images of the first batch) traces the folding and the ONNX export."""
        if name == "eager":  # the live model itself, in whatever mode it was left
            model.eval()
            return Prepared("eager", model)
        self._follow(model)
        if name not in self._prepared:
            self._prepared[name] = self._prepare(name, model, example)
        return self._prepared[name]

    def scored(self, images: int) -> None:
        """Count ``images`` scored with the current weights."""
        self._scored += images

    def _follow(self, model: nn.Module) -> None:
        key = _weights_key(model)
        if key != self._key:
            self._key, self._prepared, self._scored = key, {}, 0

    def _auto(self, images: int) -> str:
        if self.device.type != "cpu":
            return "folded"
        if "onnx" not in self._prepared and self._scored + images < ONNX_AFTER_IMAGES:
            return "folded"  # decided before importing the extra: most calls stop here
        if self._onnx_problem is None:
            self._onnx_problem = onnx_problem() or ""
        return "folded" if self._onnx_problem else "onnx"

    def _prepare(self, name: str, model: nn.Module, example: torch.Tensor) -> Prepared:
        if name == "channels_last":
            return Prepared(name, frozen_copy(model, channels_last=True), channels_last=True)
        if name == "onnx":
            check_inference(name, self.device)
            forward = OnnxForward(frozen_copy(model), example, torch.get_num_threads())
            return Prepared(name, forward)
        base = self._folded(model, example)  # channels_last alone where folding is refused
        if name == "folded":
            return base
        if name == "compile":
            return Prepared(name, CompiledForward(base.forward), channels_last=True)
        if name == "bf16":
            return Prepared(name, base.forward, channels_last=True, autocast=torch.bfloat16)
        raise AssertionError(name)  # PATHS and this method disagree

    def _folded(self, model: nn.Module, example: torch.Tensor) -> Prepared:
        """The folded channels_last copy; ``channels_last`` alone, with a warning, when
        folding would change what the model computes."""
        copy = frozen_copy(model, channels_last=True)
        example = example[:2].contiguous(memory_format=torch.channels_last)  # 3 passes: keep small
        try:
            fold_batch_norms(copy, example)
        except FoldingError as exc:
            warnings.warn(f"inference: {exc}; running without folding", stacklevel=3)
            return Prepared("channels_last", frozen_copy(model, True), channels_last=True)
        return Prepared("folded", copy, channels_last=True)


def _weights_key(model: nn.Module) -> tuple:
    """What changes when the weights do: the model, each tensor and its in-place version."""
    tensors = chain(model.parameters(), model.buffers())
    return (id(model), tuple((id(t), t._version) for t in tensors))


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
