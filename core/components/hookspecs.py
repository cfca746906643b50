"""Every hook mtlkit calls, grouped by when it runs.

A plugin is any module or object with functions named like these hooks and decorated with
``mtlkit.hookimpl``. An implementation may accept a subset of a hook's arguments, so hooks
can gain arguments later without breaking plugins.

Registration hooks run once per plugin manager, when an engine or the CLI starts. Each
receives a typed registry and returns nothing; the core calls every plugin separately so
each registered name remembers which plugin owns it, and checks what it registers against
its kind's contract (:mod:`mtlkit.components.contracts`). Training events run during
``Engine.fit``; their return values are ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from mtlkit.components.registry import Registry
    from mtlkit.engine import Engine, FitResult

hookspec = pluggy.HookspecMarker("mtlkit")

# --- registration: once per plugin manager, every implementation is called -------------


@hookspec
def mtl_register_backbones(registry: Registry) -> None:
    """Register feature extractors: ``registry.register(name, factory, options=Model)``.

    A backbone factory returns an ``nn.Module`` mapping images to pooled features, with the
    feature width in ``module.num_features`` (the timm ``num_classes=0`` contract).
    Segmentation heads also need its feature maps: timm's ``forward_intermediates`` and
    ``forward_head`` with ``feature_info`` (every timm model has them), or its own
    ``forward_dense(images) -> (pooled, maps)`` with ``feature_info``; see
    :mod:`mtlkit.training.feature_maps`.
    """


@hookspec
def mtl_register_heads(registry: Registry) -> None:
    """Register task heads: classes following ``mtlkit.components.interfaces.TaskHead``.

    A head turns backbone features into one task's output and a data row into that task's
    target (NaN when unknown). Named heads such as ``bm`` are presets of generic ones. A
    ``mtlkit.DenseHead`` (kind ``segmentation``) instead decodes the backbone's feature maps
    into a mask per image, trained on the image's own mask.
    """


@hookspec
def mtl_register_task_losses(registry: Registry) -> None:
    """Register per-task losses: factories returning ``fn(logits, targets) -> per-sample loss``.

    The core masks samples without a label and averages over the labelled ones. A factory
    may set ``head_kinds = ("binary",)`` (or ``"multiclass"``, ``"segmentation"``) so that
    configuring it on another kind of head is a config error. A segmentation loss gets
    logits and masks of shape (N, 1, H, W).
    """


@hookspec
def mtl_register_constraints(registry: Registry) -> None:
    """Register constraint losses: classes following ``mtlkit.components.interfaces.Constraint``.

    A constraint sees every task's probabilities for a batch (labelled or not) and returns
    one weighted scalar loss.
    """


@hookspec
def mtl_register_task_weightings(registry: Registry) -> None:
    """Register task weightings: ``nn.Module`` classes combining per-task losses into one."""


@hookspec
def mtl_register_optimizers(registry: Registry) -> None:
    """Register optimizers: factories ``factory(options, params) -> torch.optim.Optimizer``.

    ``training.optimizer.name`` picks one and the other keys of ``training.optimizer`` are
    its options. The factory is called once per fit, with ``params`` the list of every
    trainable parameter (model, task weighting, constraints), and once over a stand-in
    parameter when the config is validated (a ``ValueError`` it raises is a config error).
    What it returns must be a ``torch.optim.Optimizer``; its ``state_dict`` goes into the
    saved training state. Registered without options, it is called as ``factory(params)``.
    """


@hookspec
def mtl_register_schedulers(registry: Registry) -> None:
    """Register learning-rate schedules: ``factory(options, optimizer, epochs) -> scheduler``.

    ``training.scheduler.name`` picks one and its other keys are the options. The factory is
    called once per fit with that fit's optimizer and ``training.epochs`` (and once when the
    config is validated); the scheduler is stepped once after every epoch
    (``scheduler.step()``, no arguments), and its ``state_dict()`` (JSON-serialisable) and
    ``load_state_dict()`` save and restore it for ``mtl resume``. torch's epoch-wise
    ``torch.optim.lr_scheduler`` classes fit.
    """


@hookspec
def mtl_register_metrics(registry: Registry) -> None:
    """Register metrics: ``fn(y_true, y_prob, threshold) -> float`` over a whole split.

    A metric may instead return one value per class of the task (``MetricFn`` in
    :mod:`mtlkit.components.interfaces`): each is recorded as ``metric[class]`` in
    metrics.json, their mean as ``metric``, and the summary report shows them per class.

    Set ``fn.higher_is_better = False`` on a metric where lower is better, so that selecting
    the best epoch on it picks the lowest value.
    """


@hookspec
def mtl_register_data_sources(registry: Registry) -> None:
    """Register data sources: factories returning ``mtlkit.data.samples.SampleSet``."""


@hookspec
def mtl_register_reports(registry: Registry) -> None:
    """Register reports: factories returning ``fn(run: RunResult, console) -> None``.

    Reports read one finished run result; they never train. They run in the order of the
    config's ``reports``; ``run.engine`` (the first fold and seed's engine) is there for a
    report that needs the images or the model (the Grad-CAM gallery), and is None when a
    report is made again from the files (``mtl report``) or after ``mtl evaluate``.
    """


@hookspec
def mtl_register_baselines(registry: Registry) -> None:
    """Register baseline models: classes following ``mtlkit.Baseline``, built as
    ``Baseline(options)`` from a ``baselines: [{type: NAME, ...}]`` config entry.

    A baseline is trained and evaluated beside the CNN, by ``mtl run``, on exactly the
    CNN's splits, for every fold and seed. What it gets: a :class:`mtlkit.BaselineContext`
    with the prepared data (every image, its targets and the current fold's splits), the
    heads (tasks), the config's RoI settings and cache folder, and a progress display.
    What it returns (:class:`mtlkit.BaselineOutput`): per split and task the probabilities
    of each image of that split, from which the core computes the same metrics as the CNN's
    (``task_metrics``) and writes ``metrics.json`` and ``predictions.csv`` under the
    baseline's name; plus extra files and warnings. ``prepare`` runs once per run, before
    any training and before the run directory is written; ``fit`` once per fold and seed,
    and must learn from the ``train`` split only. A baseline listing ``requires`` (modules
    of an optional extra) that do not import is a config error with its ``install`` hint.
    """


@hookspec
def mtl_register_loggers(registry: Registry) -> None:
    """Register experiment loggers: classes following ``mtlkit.ExperimentLogger``, built as
    ``Logger(options)`` from a ``loggers: [NAME or {type: NAME, ...}]`` config entry.

    A logger mirrors a run into an experiment tracker (TensorBoard, MLflow); the run
    directory stays the record. It is built once per ``mtl run`` (and ``mtl resume``) and
    told, in this order: ``start_run`` (the config and its flattened parameters), for
    every fold and seed ``start_fit``, ``log_epoch`` after each epoch (through the
    training events ``mtl_fit_start`` and ``mtl_epoch_end``) and ``end_fit`` once that
    run's metrics.json is written, then ``end_run`` with the run's final metrics. A resumed
    fit replays the epochs it restored, so a logger must log each epoch once. A logger
    listing ``requires`` (modules of an optional extra) that do not import is a config
    error with its ``install`` hint.
    """


@hookspec
def mtl_register_commands(registry: Registry) -> None:
    """Register CLI commands, as ``mtlkit.cli.Command`` objects; a space in the name nests
    the command under a group (``"data synth"``)."""


# --- training events: during Engine.fit -------------------------------------------------


@hookspec
def mtl_fit_start(engine: Engine) -> None:
    """Called once when ``Engine.fit`` starts, after the model and data are built.

    During the fit ``engine.model`` is the model that is validated and saved: with
    ``training.ema`` that is the weight average, not the weights the optimiser steps.
    ``engine.weighting`` and ``engine.constraints`` are the instances this fit trains.
    ``engine.restored_epochs`` holds the logs (:class:`mtlkit.results.EpochLog`) of the
    epochs a resumed fit restored from its saved state, which ``mtl_epoch_end`` is not
    called for again; it is empty for a fit from the start."""


@hookspec
def mtl_epoch_end(engine: Engine, epoch: int, logs: dict[str, Any]) -> None:
    """Called after every epoch's validation with that epoch's losses and metrics."""


@hookspec
def mtl_fit_end(engine: Engine, result: FitResult) -> None:
    """Called once when ``Engine.fit`` has finished and the best weights are restored."""


REGISTRATION_HOOKS: dict[str, str] = {
    "mtl_register_backbones": "backbone",
    "mtl_register_heads": "head",
    "mtl_register_task_losses": "task_loss",
    "mtl_register_constraints": "constraint",
    "mtl_register_task_weightings": "weighting",
    "mtl_register_optimizers": "optimizer",
    "mtl_register_schedulers": "scheduler",
    "mtl_register_metrics": "metric",
    "mtl_register_data_sources": "data_source",
    "mtl_register_reports": "report",
    "mtl_register_baselines": "baseline",
    "mtl_register_loggers": "logger",
    "mtl_register_commands": "command",
}
"""Registration hook name -> the kind of component its registry holds."""
