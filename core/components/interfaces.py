"""The component contracts: what a task head, a task loss, a constraint, a task weighting,
a metric, a CLI command and a baseline are, as the core sees them. Each is written once,
here; the core checks it (:mod:`mtlkit.components.contracts`) and :mod:`mtlkit.testing`
lets a plugin author check it in their own tests.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from mtlkit.config.schema import RoiConfig
    from mtlkit.data.prepared import PreparedData
    from mtlkit.progress import Progress

HEAD_KINDS = ("binary", "multiclass", "segmentation")
"""``binary``: one sigmoid output, targets 0/1. ``multiclass``: one softmax output per class,
targets are class indices 0 .. len(classes) - 1. ``segmentation``: a :class:`DenseHead`, one
sigmoid output per pixel, the target is the image's lesion mask."""

IMAGE_KINDS = ("binary", "multiclass")
"""The kinds that predict one value per image (probabilities, ROC curves, predictions.csv)."""

DEFAULT_LOSSES = {"binary": "bce", "multiclass": "cross_entropy", "segmentation": "dice_bce"}
"""The task loss of a head that sets no ``default_loss``, by kind (all are built in)."""

TaskLossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``fn(logits, targets) -> per-sample loss``; targets hold no NaN when it is called
(unknown ones are masked out by the core). Binary heads pass logits (N, 1) and float
targets (N,); multiclass heads pass logits (N, classes) and class indices as floats (N,);
segmentation heads pass logits (N, 1, H, W) and float masks (N, 1, H, W) of 0/1 (all 0 for
an image without a mask, which the core then masks out)."""

MetricFn = Callable[[np.ndarray, np.ndarray, float], "float | Sequence[float]"]
"""``fn(y_true, y_prob, threshold) -> float`` over a whole split: ``y_true`` integer labels
(N,) (0/1, or class indices), ``y_prob`` probabilities (N,) for binary tasks and (N, classes)
for multiclass ones; only samples with a known label are passed. NaN where undefined.

A per-class metric returns one value per class instead (a sequence as long as the task's
classes, e.g. each class's one-vs-rest AUC): metrics.json then holds each under
``metric[class]`` and their mean (undefined classes left out) under ``metric``."""


class TaskHead:
    """One prediction task: its output layer, its target and its probabilities.

    A subclass sets the class attributes and implements :meth:`target`; ``Options`` (an
    :class:`~mtlkit.OptionsModel`) validates its config keys, and it is built as
    ``Head(options)``, calling ``super().__init__(name, dropout=..., classes=...)``.

    Members the core uses:

    - ``kind``: ``"binary"`` or ``"multiclass"`` (:data:`HEAD_KINDS`);
    - ``classes``: class names, in output order; exactly two for a binary head;
    - ``default_loss``: the task loss used when the config gives none; None picks
      :data:`DEFAULT_LOSSES` of the kind;
    - ``name``: the task name, unique in a run (results and ``select: TASK.METRIC`` use it);
    - ``label_columns``: the data columns :meth:`target` reads, so a misspelt column is an
      error rather than a task without labels;
    - :meth:`target`, :meth:`build_module` and :meth:`probabilities`.

    ``Options`` needs no ``loss`` field: the core takes ``heads[i].loss`` out of every head's
    config. The core checks the class at registration and the built head (classes against
    kind, output shape) before training, and every target while preparing data.
    """

    kind: ClassVar[str] = "binary"
    default_loss: ClassVar[str | None] = None

    def __init__(self, name: str, *, dropout: float = 0.0, classes: list[str] | None = None):
        self.name = name
        self.dropout = dropout
        self.classes = list(classes) if classes is not None else ["negative", "positive"]

    @property
    def num_outputs(self) -> int:
        """Logits per sample: 1 for a binary head, one per class for a multiclass one."""
        return 1 if self.kind == "binary" else len(self.classes)

    @property
    def loss_name(self) -> str:
        """The task loss used when the config names none."""
        return self.default_loss or DEFAULT_LOSSES.get(self.kind, "")

    @property
    def label_columns(self) -> tuple[str, ...]:
        """Data columns this head reads; used to check that a data source provides them."""
        return ()

    def build_module(self, in_features: int) -> nn.Module:
        """The layer mapping pooled features (N, in_features) to logits (N, num_outputs)."""
        linear = nn.Linear(in_features, self.num_outputs)
        return nn.Sequential(nn.Dropout(self.dropout), linear) if self.dropout else linear

    def target(self, labels: Mapping[str, Any]) -> float:
        """This task's target for one sample's labels: 0.0/1.0 (binary) or a class index
        (multiclass) as a float; NaN if unknown.

        Raises ``ValueError`` with a short reason for a value it cannot interpret; the core
        lists it with the image it came from.
        """
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities from logits: shape (N,) for binary, (N, classes) for multiclass."""
        if self.kind == "binary":
            return torch.sigmoid(logits.reshape(-1))
        return torch.softmax(logits, dim=-1)

    def implies(self, other: TaskHead) -> bool:
        """Whether every positive of this binary task is, by the labels' definitions, a
        positive of ``other`` (ALNM implies malignancy). The evaluation checks the
        predictions against this hierarchy (``evaluation.consistency``); False when
        unknown."""
        return False


class DenseHead(TaskHead):
    """A task predicted per pixel: the lesion mask, at the model's input resolution.

    Its target is the image's mask (``Sample.mask``), cropped, resized and augmented
    exactly as the image is; an image without a mask contributes nothing to its loss and
    metrics. Instead of :meth:`build_module` over pooled features it builds a decoder over
    the backbone's feature maps (:meth:`build_decoder`); the backbone then has to provide
    them (timm's ``forward_intermediates``, see :mod:`mtlkit.training.feature_maps`).

    Members the core uses besides those of :class:`TaskHead`: :meth:`build_decoder`,
    ``min_reduction`` (the finest feature map it reads, as the factor by which the map is
    smaller than the input) and ``threshold`` (the probability above which a pixel counts
    as lesion, for Dice, IoU and the automatic RoI).
    """

    kind: ClassVar[str] = "segmentation"
    min_reduction: int = 4
    threshold: float = 0.5

    def __init__(self, name: str):
        super().__init__(name, classes=["background", "lesion"])

    def build_decoder(self, channels: Sequence[int], reductions: Sequence[int]) -> nn.Module:
        """A module mapping the feature maps ``[(N, channels[i], H / reductions[i], W /
        reductions[i]), ...]`` (finest first; only those at or above ``min_reduction``) to
        logits (N, 1, h, w); the core resizes them to the input's (H, W)."""
        raise NotImplementedError

    def build_module(self, in_features: int) -> nn.Module:
        raise TypeError(f"{type(self).__name__} reads feature maps: it builds a decoder")

    def target(self, labels: Mapping[str, Any]) -> float:
        """Unused: a dense head's target is the image's mask."""
        return float("nan")

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-pixel lesion probabilities (N, H, W) from logits (N, 1, H, W)."""
        return torch.sigmoid(logits[:, 0])


class Constraint(nn.Module):
    """How several tasks relate, as a loss, as task losses of their own, or as a rule that
    makes the predictions obey the relation by construction.

    Built as ``Constraint(options, heads)`` with ``heads`` the run's heads by task name;
    raises ``ValueError`` naming the problem when the options refer to tasks that do not
    exist or do not fit. A constraint implements at least one of:

    - :meth:`forward`: an extra loss added to the weighted task losses (a hinge);
    - :meth:`task_losses`: the task losses of the tasks it governs, which replace the
      configured task loss of those tasks (the weighting still combines every task's loss);
    - :meth:`adjust` with ``adjusts_outputs = True``: the probabilities the model predicts,
      made from its raw outputs (e.g. a parent's probability raised to its children's).

    All three receive a batch of every task, labelled or not; :meth:`forward` and
    :meth:`adjust` every binary task's probabilities (N,) and multiclass task's
    (N, classes), the raw ones (no constraint's :meth:`adjust` applied).
    """

    adjusts_outputs: ClassVar[bool] = False
    """True when :meth:`adjust` changes probabilities. The core adjusts the model's outputs,
    and reports the raw outputs' AUC beside the adjusted ones', only when a constraint of the
    run sets it."""

    def forward(self, probabilities: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One weighted, finite scalar loss (0-dim tensor) with a gradient path; the default
        (for a constraint that works through :meth:`task_losses` or :meth:`adjust` only) is
        0 without one."""
        first = next(iter(probabilities.values()), None)
        return first.new_zeros(()) if first is not None else torch.zeros(())

    def task_losses(
        self, logits: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``{task: loss}`` for the tasks this constraint governs (default: none).

        ``logits`` are every task's raw outputs, as a task loss gets them ((N, 1) for a
        binary head, (N, classes) for a multiclass one, float32); ``targets`` every task's
        targets (N,), NaN where unknown. Each loss is a finite scalar (0-dim) with a gradient
        path, the mean over the samples whose target of that task is known and exactly 0
        when there is none (:func:`mtlkit.masked_mean`). It replaces the task's configured
        loss; two constraints of a run may not govern the same task.
        """
        return {}

    def adjust(self, probabilities: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        """The probabilities the model predicts, from the raw (or an earlier constraint's
        adjusted) ``probabilities``: the same shapes, values in [0, 1], the input left
        unchanged. Tasks it leaves out keep their probabilities. The core calls it, in
        config order, wherever outputs become predictions (evaluation, metrics,
        ``predictions.csv``, ``Engine.predict``), without gradients; default: unchanged."""
        return probabilities

    def violations(
        self, probabilities: Mapping[str, torch.Tensor], threshold: float
    ) -> dict[str, float]:
        """Share of samples whose predictions at ``threshold`` break the constraint, per
        relation (``{"alnm_without_bm": 0.04}``), each in [0, 1]; reported beside the
        metrics. The core measures the consistency of every relation in :attr:`relations`
        itself; this is for what only the constraint knows."""
        return {}

    relations: tuple[tuple[str, str], ...] = ()
    """The ``(parent, child)`` task pairs this constraint ties (a child's probability should
    not exceed its parent's); their consistency is measured in every evaluation. Set it
    (an attribute, e.g. in ``__init__``) to the pairs the options name."""


class TaskWeighting(nn.Module):
    """Combines per-task losses into one; may own learnable parameters and buffers (both are
    optimised or saved with the model, and restored when a fit resumes).

    Built as ``Weighting(options, task_names)`` (or ``Weighting(task_names)`` without
    options); :meth:`forward` receives ``{task: scalar loss}`` for every task, once per
    training step; :meth:`end_epoch` is called after each training epoch.
    """

    def __init__(self, task_names: list[str]):
        super().__init__()
        self.task_names = task_names

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One scalar loss (0-dim tensor)."""
        raise NotImplementedError

    def end_epoch(self) -> None:
        """Called once after every training epoch, before the training state is saved, for
        a weighting that adapts per epoch (keep what it needs in registered buffers, so
        that a resumed fit continues exactly); default: nothing."""

    def task_weights(self) -> dict[str, float]:
        """The weight each task's loss has now (recorded per epoch in ``history.json``);
        default: none recorded."""
        return {}


@dataclass(frozen=True)
class Command:
    """A CLI command; plugins register these through ``mtl_register_commands``.

    ``add_arguments(parser)`` declares its arguments; ``run(args, ctx)`` runs it with a
    :class:`mtlkit.CommandContext` and returns the exit code (None = 0).
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    # Any, not CommandContext: the context holds the plugin host, which imports this module.
    run: Callable[[argparse.Namespace, Any], int | None]


@dataclass(frozen=True)
class BaselineContext:
    """What a baseline sees.

    ``data`` holds every image of the run: ``samples`` (each can be read again with
    ``sample.image()`` and ``sample.mask()``), ``targets`` (images x tasks, in the order of
    ``heads``, NaN = unknown) and the current fold's split of every image (``splits``,
    ``indices(split)``), the very split the CNN trains and is evaluated on. ``roi`` is the
    config's ``data.roi`` (the CNN's RoI mode and margin), ``cache_dir`` its
    ``data.cache_dir`` (None when unset), ``evaluate`` the splits :meth:`Baseline.fit`
    returns probabilities for.
    """

    data: PreparedData
    heads: Sequence[TaskHead]
    roi: RoiConfig
    cache_dir: Path | None
    progress: Progress
    evaluate: tuple[str, ...] = ("val", "test")


@dataclass
class BaselineOutput:
    """What a baseline returns.

    ``probabilities[split][task]``: one value per image of ``data.indices(split)``, in that
    order, shape (n,) for a binary task and (n, classes) for a multiclass one; every split
    of ``context.evaluate`` that has images and every task. ``files``: extra files (name ->
    text or bytes) the core writes into the baseline's folder for this run. ``warnings``:
    printed after the step, e.g. the images a baseline could not use and why.
    """

    probabilities: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    files: dict[str, str | bytes] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class Baseline:
    """A model trained and evaluated beside the CNN on exactly the CNN's splits (e.g. the
    paper's radiomics model), turned on by ``baselines: [{type: NAME, ...}]``.

    Built as ``Baseline(options)``, calling ``super().__init__(name)``; ``name`` (unique
    in a run) names its folder in the run directory. The core computes its metrics from
    the probabilities it returns, with the CNN's metrics, threshold and constraints, and
    writes them in the CNN's layout and schema. A baseline never writes into the run
    directory itself: it returns its files, so a refused run still writes nothing and
    every file is written atomically.

    - ``requires``: modules it imports lazily (an optional extra); when one does not
      import, the config is refused before any training, with ``install`` as the fix;
    - :meth:`prepare`: once per run, after the data is checked, before any training;
      work that depends neither on the split nor on the seed (feature extraction);
    - :meth:`fit`: once per fold and seed; learns from the ``train`` split only and
      returns probabilities for ``context.evaluate``.
    """

    requires: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""

    def __init__(self, name: str):
        self.name = name

    def prepare(self, context: BaselineContext) -> BaselineOutput:
        """Per-run work before training; raises ``DataError`` for data it cannot use.
        Its ``files`` go to the baseline's top folder."""
        return BaselineOutput()

    def fit(self, context: BaselineContext, seed: int) -> BaselineOutput:
        """Train on ``context.data``'s train split with ``seed``; probabilities for
        ``context.evaluate``. Its ``files`` go to this fold's and seed's folder."""
        raise NotImplementedError


@dataclass(frozen=True)
class LoggedRun:
    """What an experiment logger is told when a run starts (or resumes).

    ``out_dir``: the run directory; ``config``: the run's config as JSON values;
    ``params``: the same flattened to ``{"training.epochs": "3", "heads[0].type": "bm"}``;
    ``fits``: the label of every fold and seed's sub-folder, in training order (``[""]``
    for a single fit, else ``seed_1``, ``fold_2/seed_1``, ...); ``resume``: whether this
    continues an interrupted run whose earlier logs a logger should extend, not repeat.
    """

    name: str
    out_dir: Path
    config: dict[str, Any]
    params: dict[str, str]
    fits: list[str]
    resume: bool = False


@dataclass(frozen=True)
class LoggedFit:
    """One fold and seed as a logger sees it: its label (``""`` for a run's only fit),
    its folder in the run directory, its fold (1-based, None without folds) and seed."""

    label: str
    run_dir: Path
    fold: int | None
    seed: int


class ExperimentLogger:
    """Mirrors a run into an experiment tracker, turned on by ``loggers: [NAME]`` or
    ``loggers: [{type: NAME, ...}]``; built as ``Logger(options)`` once per run.

    The core calls, in this order: :meth:`start_run`; for every fold and seed
    :meth:`start_fit`, :meth:`log_epoch` per epoch and :meth:`end_fit`; then :meth:`end_run`.
    A fit finished before a resume is not logged again; the fit a resume continues gets
    ``log_epoch`` again for the epochs it restored (one that was logged before the
    interruption, and one that may not have been): log each epoch once.

    - ``requires``: modules it imports lazily (an optional extra); when one does not
      import, the config is refused before any training, with ``install`` as the fix.
    """

    requires: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""

    def start_run(self, run: LoggedRun) -> None:
        """The run starts: record its config and parameters."""

    def start_fit(self, fit: LoggedFit) -> None:
        """One fold and seed starts training (or continues, on resume)."""

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        """The numbers of one epoch of the current fit, flattened as history.csv's columns
        (``train_loss``, ``val_metrics.bm.auc``, ...); NaN where a metric is undefined."""

    def end_fit(self, final: dict[str, float], files: list[Path]) -> None:
        """The current fit is evaluated: ``final`` holds the numbers of its metrics.json
        (``best_epoch``, ``test.tasks.bm.auc``, ...), ``files`` its main files (metrics,
        predictions, history)."""

    def end_run(self, final: dict[str, float], files: list[Path]) -> None:
        """The run is finished and its reports written: ``final`` holds the numbers of the
        run's metrics.json (over folds and seeds when there are several:
        ``test.tasks.bm.auc.mean``), ``files`` the run directory's main files (the model
        card and the report among them)."""

    def fail_run(self, error: str, interrupted: bool) -> None:
        """The run stopped before its end: an error (``error`` says which) or, with
        ``interrupted``, Ctrl-C or a signal. Close what is open and mark the tracker's
        runs as failed or killed; ``mtl resume`` may continue them later."""
