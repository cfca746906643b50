"""mtlkit: plugin-based multi-task deep learning for breast ultrasound.

This module is the public API, the one place users and plugin authors import from:

- running: :class:`Engine`, :func:`run`, :func:`load_config`, :class:`RunConfig` and the
  result types; predictions for new image files (:func:`predict_files`); the inference
  paths of ``evaluation.inference`` (:data:`INFERENCE_PATHS`);
- writing plugins: :data:`hookimpl`, :class:`OptionsModel`, the component bases
  (:class:`TaskHead` and the ready-made :class:`MulticlassHead` that a multiclass task is
  a preset of, :class:`Constraint`, :class:`TaskWeighting`, :class:`Baseline` with
  :class:`BaselineContext` and :class:`BaselineOutput`, :class:`ExperimentLogger` with
  :class:`LoggedRun` and :class:`LoggedFit`), :func:`split_metric_name` (the
  per-class entries of metrics.json), :func:`masked_mean` (a loss over
  the labelled samples, for a constraint's task losses), :class:`Sample` and
  :class:`SampleSet`, :class:`Command` (with :func:`add_config_arguments`), the label,
  file-reading and RoI helpers (:func:`roi_box`, :func:`crop_and_resize`), progress bars
  (:class:`Progress`), safe output writing, safe terminal and CSV text (:func:`shown`,
  :func:`csv_cell`) and output file names (:data:`OutputName`); :mod:`mtlkit.testing`
  checks a plugin against these contracts;
- the statistics of diagnostic accuracy that reports and comparisons need: the AUC
  (:func:`binary_auc`) with its DeLong interval (:func:`delong_ci`), the stratified
  (cluster) bootstrap (:func:`bootstrap_ci`), paired comparisons of two models
  (:func:`paired_delong`, :func:`paired_bootstrap`, :func:`paired_t_test` over repeated
  runs) and :func:`calibration`; the binary decision at a threshold (:func:`positive_at`);
- the errors, all under :class:`MtlError`.

Everything else (``mtlkit.data.scan``, ``mtlkit.training.fit``, ...) is internal and may change.
"""

from __future__ import annotations

# ruff: noqa: E402 - Ctrl-C is made quiet before the (slow) imports below, restored after
from mtlkit._startup import quiet_interrupts_while_importing

_restore_interrupts = quiet_interrupts_while_importing()
from mtlkit.cli.base import Command, CommandContext, add_config_arguments
from mtlkit.components.host import hookimpl
from mtlkit.components.interfaces import (
    DEFAULT_LOSSES,
    HEAD_KINDS,
    IMAGE_KINDS,
    Baseline,
    BaselineContext,
    BaselineOutput,
    Constraint,
    DenseHead,
    ExperimentLogger,
    LoggedFit,
    LoggedRun,
    MetricFn,
    TaskHead,
    TaskLossFn,
    TaskWeighting,
)
from mtlkit.components.multiclass_head import MulticlassHead, MulticlassOptions
from mtlkit.config.loading import load_config
from mtlkit.config.problems import validation_problems
from mtlkit.config.schema import OptionsModel, OutputName, RoiConfig, RunConfig
from mtlkit.data.labels import MISSING, as_count, as_number, canonical
from mtlkit.data.reading import (
    IMAGE_SUFFIXES,
    Box,
    is_dicom,
    load_grayscale,
    load_mask,
    parse_box,
    read_csv_rows,
    read_dicom,
    require_columns,
    resolve_data_file,
)
from mtlkit.data.roi import crop_and_resize, roi_box
from mtlkit.data.samples import Sample, SampleSet
from mtlkit.data.transforms import normalize_batch
from mtlkit.engine import Engine
from mtlkit.errors import (
    BadRowsError,
    ConfigError,
    DataError,
    MtlError,
    OutputError,
    PluginError,
    RegistryError,
    TrainingError,
    UsageError,
    list_problems,
)
from mtlkit.evaluation.auc import binary_auc, delong_ci, paired_delong
from mtlkit.evaluation.bootstrap import bootstrap_ci, paired_bootstrap
from mtlkit.evaluation.calibration import calibration
from mtlkit.evaluation.comparison import finite, p_value_text
from mtlkit.evaluation.external import trained_engine
from mtlkit.evaluation.metrics import split_metric_name
from mtlkit.evaluation.statistics import paired_t_test
from mtlkit.evaluation.thresholds import positive_at
from mtlkit.files import atomic_write_bytes, atomic_write_text, check_output_file, to_json
from mtlkit.inference.paths import PATHS as INFERENCE_PATHS
from mtlkit.progress import Progress
from mtlkit.results import EpochLog, EvalResult, FitResult, Predictions, RoiOutputs, RunResult
from mtlkit.runs.prediction import (
    PredictedRoi,
    load_predictor,
    predict_files,
    prediction_columns,
    records_csv,
    records_frame,
)
from mtlkit.runs.runner import run
from mtlkit.text import csv_cell, shown
from mtlkit.training.checkpoint import checkpoint_of, state_dict_mismatch
from mtlkit.training.losses import masked_mean
from mtlkit.version import __version__

__all__ = [
    "DEFAULT_LOSSES",
    "HEAD_KINDS",
    "IMAGE_SUFFIXES",
    "MISSING",
    "Baseline",
    "BaselineContext",
    "BaselineOutput",
    "BadRowsError",
    "Box",
    "Command",
    "CommandContext",
    "ConfigError",
    "Constraint",
    "DataError",
    "Engine",
    "INFERENCE_PATHS",
    "EpochLog",
    "ExperimentLogger",
    "LoggedFit",
    "LoggedRun",
    "EvalResult",
    "FitResult",
    "MetricFn",
    "MulticlassHead",
    "MulticlassOptions",
    "MtlError",
    "OptionsModel",
    "OutputName",
    "OutputError",
    "PluginError",
    "PredictedRoi",
    "Predictions",
    "Progress",
    "RegistryError",
    "RoiConfig",
    "RoiOutputs",
    "RunConfig",
    "RunResult",
    "Sample",
    "SampleSet",
    "TaskHead",
    "DenseHead",
    "IMAGE_KINDS",
    "TaskLossFn",
    "TaskWeighting",
    "TrainingError",
    "UsageError",
    "__version__",
    "add_config_arguments",
    "as_count",
    "as_number",
    "atomic_write_bytes",
    "atomic_write_text",
    "binary_auc",
    "finite",
    "p_value_text",
    "bootstrap_ci",
    "calibration",
    "canonical",
    "check_output_file",
    "checkpoint_of",
    "crop_and_resize",
    "csv_cell",
    "delong_ci",
    "hookimpl",
    "is_dicom",
    "list_problems",
    "load_config",
    "load_grayscale",
    "load_mask",
    "load_predictor",
    "masked_mean",
    "normalize_batch",
    "paired_bootstrap",
    "paired_delong",
    "paired_t_test",
    "parse_box",
    "positive_at",
    "predict_files",
    "prediction_columns",
    "read_csv_rows",
    "read_dicom",
    "records_csv",
    "records_frame",
    "require_columns",
    "resolve_data_file",
    "roi_box",
    "run",
    "shown",
    "split_metric_name",
    "state_dict_mismatch",
    "to_json",
    "trained_engine",
    "validation_problems",
]

_restore_interrupts()
