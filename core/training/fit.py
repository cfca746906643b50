"""The parts of one fit: the objects it trains and steps, built fresh for it, one training
epoch over them, and the record of the epochs done."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from mtlkit.components.interfaces import TaskWeighting
from mtlkit.components.resolve import Components
from mtlkit.config.schema import TrainingConfig
from mtlkit.errors import TrainingError, UsageError
from mtlkit.progress import Progress
from mtlkit.results import EpochLog, FitResult
from mtlkit.training import distributed
from mtlkit.training.averaging import WeightAverage
from mtlkit.training.losses import Objective
from mtlkit.training.model import MultiTaskModel
from mtlkit.training.selection import BestEpoch


@dataclass
class FitObjects:
    """Everything one fit trains or steps, and the generator that orders its batches."""

    model: MultiTaskModel
    weighting: TaskWeighting
    constraints: nn.ModuleList
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    average: WeightAverage | None  # training.ema; None without
    generator: torch.Generator
    autocast: torch.dtype | None  # training.amp's dtype; None: full precision
    channels_last: bool = False  # training.channels_last: batches go in that layout
    # Under torchrun the DDP wrapper of ``model`` that training steps call; None without.
    wrapped: nn.Module | None = None

    @property
    def evaluated(self) -> nn.Module:
        """The model that is validated, selected and saved: with ``training.ema`` the weight
        average, not the weights the optimizer steps."""
        return self.average.model if self.average is not None else self.model

    def selected(self) -> dict[str, nn.Module]:
        """What a best epoch keeps the weights of: the evaluated model, the task weighting
        and the constraints."""
        return {
            "model": self.evaluated,
            "weighting": self.weighting,
            "constraints": self.constraints,
        }


def build_fit_objects(
    model: MultiTaskModel,
    components: Components,
    cfg: TrainingConfig,
    seed: int,
    device: torch.device,
) -> FitObjects:
    """Fresh objects for one fit around a freshly built ``model`` (already on ``device``).

    The creation order is part of reproducibility: a weighting or constraint that draws
    random numbers draws them after the model's initialisation, as it always has.
    """
    autocast = autocast_dtype(cfg.amp, device)
    if cfg.channels_last:  # before the weight average copies it
        model = model.to(memory_format=torch.channels_last)
    # Fresh weighting and constraints per fit: learned state must not carry over.
    weighting = components.build_weighting().to(device)
    constraints = nn.ModuleList(components.build_constraints()).to(device)
    params = [*model.parameters(), *weighting.parameters(), *constraints.parameters()]
    average = WeightAverage(model, cfg.ema) if cfg.ema else None
    optimizer = components.build_optimizer(params)
    # Only float16 needs a scaler: its gradients underflow, bfloat16's range is float32's.
    scaled = autocast == torch.float16
    return FitObjects(
        model=model,
        weighting=weighting,
        constraints=constraints,
        optimizer=optimizer,
        scheduler=components.build_scheduler(optimizer, cfg.epochs),
        scaler=torch.amp.GradScaler(device.type, enabled=scaled),
        average=average,
        generator=torch.Generator().manual_seed(seed),
        autocast=autocast,
        channels_last=cfg.channels_last,
    )


def autocast_dtype(
    amp: bool | str, device: torch.device, bf16_supported: bool | None = None
) -> torch.dtype | None:
    """The dtype ``training.amp`` trains under on ``device``, None for full precision.

    ``true`` keeps its first meaning, mixed precision on CUDA only: bf16 where the GPU has
    it (``bf16_supported``, asked of CUDA when None), else fp16. fp16 needs CUDA.
    """
    if amp is False:
        return None
    if amp is True:
        if device.type != "cuda":
            return None
        if bf16_supported is None:
            bf16_supported = torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16_supported else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise UsageError(
            f"training.amp is fp16, which needs a CUDA device (its gradient scaler), but the "
            f"run trains on {device.type}; use bf16 there, or false"
        )
    return torch.bfloat16 if amp == "bf16" else torch.float16


@dataclass
class EpochTraining:
    """What one training epoch measured: mean losses per step, time and images, and the
    task weights of the epoch (:meth:`TaskWeighting.task_weights`)."""

    loss: float
    task_losses: dict[str, float]
    constraint_loss: float
    seconds: float
    images: int
    task_weights: dict[str, float] = field(default_factory=dict)

    def over_ranks(self) -> EpochTraining:
        """The epoch's mean losses over all ranks and its images summed (itself in one
        process), as history.json records them under torchrun."""
        if not distributed.active():
            return self
        tasks = list(self.task_losses)
        means = [self.loss, *self.task_losses.values(), self.constraint_loss]
        (loss, *parts, constraint), (images,) = distributed.over_ranks(means, [self.images])
        return dataclasses.replace(
            self,
            loss=loss,
            task_losses=dict(zip(tasks, parts, strict=True)),
            constraint_loss=constraint,
            images=images,
        )

    def log(self, epoch: int, lr: float, val_score: float, val_metrics: dict) -> EpochLog:
        """The epoch's log, with its learning rate and validation results."""
        return EpochLog(
            epoch=epoch,
            lr=lr,
            train_loss=self.loss,
            task_losses=self.task_losses,
            constraint_loss=self.constraint_loss,
            val_score=val_score,
            val_metrics=val_metrics,
            seconds=self.seconds,
            train_images_per_second=self.images / self.seconds if self.seconds else math.nan,
            task_weights=self.task_weights,
        )


def train_epoch(
    objects: FitObjects,
    objective: Objective,
    loader: DataLoader,
    targets: torch.Tensor,
    epoch: int,
    progress: Progress,
    mask_known: torch.Tensor | None = None,
) -> EpochTraining:
    """Train on every batch of ``loader`` once; ``targets`` (on the training device) holds
    one row per sample index the loader yields, ``mask_known`` (segmentation runs, whose
    loader yields ``(images, masks, index)``) 1 or NaN per sample index. Returns the
    epoch's mean losses.

    The task weighting's :meth:`~TaskWeighting.end_epoch` is called at the end, after its
    weights of this epoch are recorded."""
    objects.model.train()
    objects.weighting.train()
    started = time.perf_counter()
    # Loss parts are summed on the device: one host sync per step (the total), not one per
    # task.
    tasks = objective.task_names
    part_sums = torch.zeros(len(tasks) + 1, device=targets.device)
    loss_sum = 0.0
    steps = seen = 0
    batches = progress.task(f"epoch {epoch}", total=len(loader))
    layout = torch.channels_last if objects.channels_last else torch.preserve_format
    for step, batch in enumerate(loader, start=1):
        images = batch[0].to(targets.device, non_blocking=True, memory_format=layout)
        index = batch[-1].to(targets.device, non_blocking=True)
        batch_targets = targets[index]
        if len(batch) == 3:  # segmentation runs: the batch's masks
            masks = batch[1].to(targets.device, non_blocking=True)
            dense = (masks, mask_known[index])
            value, parts = train_step(objects, objective, images, batch_targets, epoch, step, dense)
        else:
            value, parts = train_step(objects, objective, images, batch_targets, epoch, step)
        loss_sum += value
        part_sums += parts
        steps += 1
        seen += images.shape[0]
        progress.advance(batches, description=f"epoch {epoch} loss {value:.4f}")
    progress.remove(batches)
    weights = _task_weights(objects.weighting)
    end_epoch = getattr(objects.weighting, "end_epoch", None)
    if callable(end_epoch):  # a weighting written before the hook may use the name itself
        end_epoch()
    seconds = time.perf_counter() - started
    means = (part_sums / max(steps, 1)).tolist()
    return EpochTraining(
        loss=loss_sum / max(steps, 1),
        task_losses={name: means[i] for i, name in enumerate(tasks)},
        constraint_loss=means[-1],
        seconds=seconds,
        images=seen,
        task_weights=weights,
    )


def train_step(
    objects: FitObjects,
    objective: Objective,
    images: torch.Tensor,
    targets: torch.Tensor,
    epoch: int,
    step: int,
    dense: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[float, torch.Tensor]:
    """One optimizer step on a batch (and the weight-average update); returns the total loss
    and the detached loss parts (one per task, then the constraints). ``dense``: the
    batch's masks and which images have one, for segmentation tasks.

    A non-finite loss raises :class:`TrainingError` before the step would corrupt the weights.
    """
    model = objects.wrapped if objects.wrapped is not None else objects.model
    with torch.autocast(
        images.device.type, dtype=objects.autocast, enabled=objects.autocast is not None
    ):
        outputs = model(images)
        losses, constraint_loss, loss = objective(outputs, targets, *(dense or ()))
    value = loss.item()
    if not math.isfinite(value):
        raise TrainingError(non_finite_message(epoch, step, losses, constraint_loss))
    objects.optimizer.zero_grad(set_to_none=True)
    objects.scaler.scale(loss).backward()
    objects.scaler.step(objects.optimizer)
    objects.scaler.update()
    if objects.average is not None:
        objects.average.update()
    return value, torch.stack([*losses.values(), constraint_loss]).detach().float()


def non_finite_message(
    epoch: int, step: int, losses: dict[str, torch.Tensor], constraint_loss: torch.Tensor
) -> str:
    """Where the loss became non-finite: the epoch, the step and the parts to blame."""
    bad = [name for name, v in losses.items() if not math.isfinite(float(v.detach()))]
    if not math.isfinite(float(constraint_loss.detach())):
        bad.append("constraints")
    where = ", ".join(bad) or "the task weighting"
    return (
        f"the training loss became non-finite at epoch {epoch}, step {step} (in: {where}); "
        "try a lower learning rate. The last good checkpoint is kept."
    )


@dataclass
class FitRecord:
    """What a fit has measured so far: one log per epoch, the best epoch, and the training
    time and images over every epoch (resumed ones included)."""

    best: BestEpoch
    history: list[EpochLog] = field(default_factory=list)
    seconds: float = 0.0
    images: int = 0

    def add(self, log: EpochLog, images: int) -> None:
        """Record one finished epoch that trained on ``images`` images."""
        self.history.append(log)
        self.seconds += log.seconds
        self.images += images

    def result(self, resumed_from: int) -> FitResult:
        """The fit's result; its best score is in the selection metric's own direction."""
        return FitResult(
            best_epoch=self.best.epoch,
            best_score=self.best.signed(self.best.score),
            history=self.history,
            train_seconds=self.seconds,
            train_images_per_second=self.images / self.seconds if self.seconds else math.nan,
            resumed_from=resumed_from,
        )


def _task_weights(weighting: Any) -> dict[str, float]:
    """The weighting's current task weights for history.json; none when it does not report
    them (a weighting written before :meth:`TaskWeighting.task_weights` existed may hold
    an attribute of that name)."""
    report = getattr(weighting, "task_weights", None)
    weights = report() if callable(report) else None
    if not isinstance(weights, dict):
        return {}
    return {str(name): float(w) for name, w in weights.items()}
