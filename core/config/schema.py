"""The run configuration's schema: one pydantic model per section, unknown keys refused.

Components (backbone, heads, constraints, weighting, data source, reports, loggers) are
mappings with a ``type`` key (``name`` for ``training.optimizer`` and
``training.scheduler``); their other keys are validated by the registered component's own
options model when the engine resolves them (see :mod:`mtlkit.components.resolve`).
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mtlkit.data.duplicates import DuplicateSettings
from mtlkit.files import output_name_problem

Component = dict[str, Any]

COMPONENT_MARK = "x-mtlkit-component"
"""The JSON-schema keyword that marks a component slot (its registry kind and key)."""


@dataclass(frozen=True)
class ComponentSlot:
    """Marks a config value as a plugin component: a mapping whose ``key`` (``type``, or
    ``name`` for the optimizer and scheduler) names a registered component of registry
    ``kind``, its other keys being that component's options. ``default`` is the component a
    mapping without ``key`` means; ``core_keys`` is a model of the keys the core, not the
    component, handles (a head's ``loss``, a data source's ``columns``).

    The config reference, ``mtl config schema`` and ``mtl config show`` find the slots by
    this mark, so a new component key only needs it."""

    kind: str
    key: str = "type"
    default: str | None = None
    core_keys: type[BaseModel] | None = None

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler(core_schema)
        schema[COMPONENT_MARK] = {"kind": self.kind, "key": self.key}
        return schema


MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit


def _output_name(value: str) -> str:
    problem = output_name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


OutputName = Annotated[str, AfterValidator(_output_name)]
"""The type of every option that names a file written into the run directory: a plain
relative name inside it (no ``..``, no absolute path, not a file mtlkit writes itself),
checked when the config is validated (``mtl validate`` too)."""


class OptionsModel(BaseModel):
    """Base of every options model: unknown keys are errors, not silently ignored, and a
    YAML boolean is never taken for a number (``epochs: true`` is not 1)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # no inf/NaN numbers

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            if _number_not_bool(cls.model_fields[info.field_name].annotation):
                raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
        return value


def _number_not_bool(annotation: Any) -> bool:
    """Whether a field of this type takes numbers but no booleans (``int``, ``float | None``)."""
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _number_not_bool(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        if bool in members or Any in members:
            return False
        return any(_number_not_bool(m) for m in members)
    return False


def component_spec(value: Any) -> Any:
    # "bm" is shorthand for {type: bm}.
    return {"type": value} if isinstance(value, str) else value


def component(kind: str, core_keys: type[BaseModel] | None = None) -> Any:
    """The type of a ``type``-selected component slot of registry ``kind``; a bare name
    is shorthand for ``{type: name}``."""
    return Annotated[
        Component,
        BeforeValidator(component_spec, json_schema_input_type=str | Component),
        ComponentSlot(kind, core_keys=core_keys),
    ]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


TaskNames = Annotated[
    list[str], BeforeValidator(_one_or_many, json_schema_input_type=str | list[str])
]
"""A list of task names; one name alone is shorthand for a list of it."""


class SplitConfig(OptionsModel):
    """Patient-level, label-stratified split."""

    test_fraction: float = Field(0.3, gt=0, lt=1, description="share of patients for test")
    val_fraction: float = Field(
        0.15, ge=0, lt=1, description="share of all patients for validation (best epoch)"
    )
    stratify: TaskNames = Field(
        default_factory=lambda: ["bm"], description="task names whose labels stratify the split"
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="split seed; fixed across repeated runs by default"
    )
    file: str | None = Field(
        None, description="reuse this splits.json of an earlier run instead of drawing a split"
    )
    folds: int | None = Field(
        None,
        ge=2,
        le=20,
        description="k-fold cross-validation: each fold of patients is the test set once "
        "(test_fraction is then 1/folds); null: one train/val/test split",
    )

    @model_validator(mode="after")
    def _room_for_training(self) -> SplitConfig:
        if self.folds is not None and "test_fraction" in self.model_fields_set:
            raise ValueError("with folds the test share is 1/folds; drop test_fraction")
        if self.test_share + self.val_fraction >= 1:
            raise ValueError(
                "the test share (test_fraction or 1/folds) + val_fraction must leave patients "
                "for training (< 1)"
            )
        return self

    @property
    def test_share(self) -> float:
        return 1 / self.folds if self.folds else self.test_fraction


class RoiConfig(OptionsModel):
    """Region of interest cut from each image before resizing."""

    mode: Literal["box", "mask", "image", "auto"] = Field(
        "box",
        description="box or mask: around the annotation; image: the whole image; auto: "
        "around the lesion a trained localiser (roi.localizer) finds",
    )
    margin: float = Field(0.2, ge=0, le=3, description="context added on each side, x box size")
    shape: Literal["stretch", "square"] = Field(
        "stretch",
        description="stretch: the box plus margin is resized to the square input as it is "
        "(the paper); square: it is first grown to a square around its centre (its longer "
        "side), so the lesion keeps its shape, e.g. taller than wide",
    )
    localizer: str | None = Field(
        None,
        description="mode auto: a localisation model, its checkpoint (.safetensors) or the "
        "run directory that trained it (a segmentation head on whole images)",
    )
    train_mode: Literal["box", "mask", "image"] | None = Field(
        None,
        description="mode auto: the RoIs the training split uses instead (e.g. mask: train "
        "on ground-truth RoIs, validate and test on the localiser's); null: the localiser's",
    )
    refine: bool = Field(
        False,
        description="mode auto: the localiser looks twice, the second time at a square "
        "window twice the first box's size, at its full input size (small lesions get more "
        "pixels)",
    )
    blend: float = Field(
        0.0,
        ge=0,
        le=1,
        description="mode auto: the weight of the localiser's own probability (of the whole "
        "image) in each task it shares with the classifier, against the classifier's on the "
        "crop: 0 the crop alone, 0.5 their mean",
    )

    @model_validator(mode="after")
    def _localizer_with_auto(self) -> RoiConfig:
        if self.mode == "auto" and not self.localizer:
            raise ValueError("mode auto needs localizer: a trained localisation checkpoint")
        if self.mode != "auto" and (self.localizer or self.train_mode or self.refine or self.blend):
            raise ValueError("localizer, train_mode, refine and blend are for mode auto only")
        return self

    def for_training(self) -> RoiConfig:
        """The RoI settings of the training split's crops."""
        if self.mode == "auto" and self.train_mode is not None:
            return self.model_copy(
                update={
                    "mode": self.train_mode,
                    "localizer": None,
                    "train_mode": None,
                    "refine": False,
                    "blend": 0.0,
                }
            )
        return self


class DuplicatesConfig(OptionsModel):
    """Near-duplicate images (the same lesion or frame twice) found by perceptual hashing;
    the defaults were chosen on BUSI (see docs/results.md)."""

    detect: bool = Field(True, description="group near-duplicates so they share one split")
    method: str = Field("dhash", description="imagehash function(s): phash, dhash, ... or a+b")
    hash_size: int = Field(16, ge=2, le=64, description="hash side: hash_size^2 bits per part")
    max_distance: int = Field(
        60, ge=0, description="largest Hamming distance that counts as a near-duplicate"
    )

    @model_validator(mode="after")
    def _valid_settings(self) -> DuplicatesConfig:
        self.settings()  # raises ValueError naming the field
        return self

    def settings(self):
        """The :class:`mtlkit.data.duplicates.DuplicateSettings` these options describe."""

        return DuplicateSettings(self.method, self.hash_size, self.max_distance)


class SourceCoreKeys(OptionsModel):
    """Keys every data source takes, handled by the core (:mod:`mtlkit.data.columns`)."""

    columns: dict[str, str] = Field(
        default_factory=dict,
        description="head-side column name -> the file's column it is read from, e.g. {bm: label}",
    )


class HeadCoreKeys(OptionsModel):
    """Keys every head takes, handled by the core (:func:`mtlkit.components.resolve.split_loss`)."""

    loss: component("task_loss") | None = Field(
        None,
        description="the task loss: a registered loss name or {type: NAME, options...}; "
        "null: the head's default (bce for binary, cross_entropy for multiclass heads)",
    )


class DataConfig(OptionsModel):
    """The training data: where it comes from, how it is split and cut to the RoI."""

    source: component("data_source", SourceCoreKeys) = Field(
        description="type picks a registered data source (synthetic, manifest, busi, ...); "
        "the other keys are its options"
    )
    split: SplitConfig = Field(
        default_factory=SplitConfig, description="how patients are split into train/val/test"
    )
    roi: RoiConfig = Field(
        default_factory=RoiConfig, description="the region of interest cut from each image"
    )
    image_size: int = Field(256, ge=16, le=2048, description="square input side in pixels")
    duplicates: DuplicatesConfig = Field(
        default_factory=DuplicatesConfig,
        description="near-duplicate detection; a group of near-duplicates stays in one split",
    )
    exclude: list[str] = Field(
        default_factory=list, description="image ids to leave out (each must exist)"
    )
    cache_dir: str | None = Field(
        None,
        description="folder for decoded RoIs, keyed by file content and preprocessing "
        "settings, reused by later runs; null: keep them in memory only",
    )
    cache_mode: Literal["memory", "disk"] = Field(
        "memory",
        description="where a run keeps the RoIs it trains and evaluates on: memory (one "
        "uint8 array, image_size^2 bytes per image), or disk (a memory-mapped scratch file in "
        "cache_dir/rois/, removed when the run ends: for more images than fit in memory; "
        "needs cache_dir)",
    )

    @field_validator("cache_dir")
    @classmethod
    def _a_usable_path(cls, value: str | None) -> str | None:
        if value is not None and ("\x00" in value or not value.strip()):
            raise ValueError("not a usable folder name")
        return value

    @model_validator(mode="after")
    def _disk_needs_a_folder(self) -> DataConfig:
        if self.cache_mode == "disk" and self.cache_dir is None:
            raise ValueError("cache_mode: disk needs data.cache_dir, the folder of the RoI file")
        return self


class ExternalSetConfig(OptionsModel):
    """An extra test set, e.g. another hospital's images, evaluated after training."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$", description="name in the results")
    source: component("data_source", SourceCoreKeys) = Field(
        description="type picks a registered data source; the other keys are its options"
    )
    roi: RoiConfig | None = Field(
        None, description="the RoI settings of this set; null: the training data's roi"
    )
    adapt_bn: bool | None = Field(
        None,
        description="recompute the model's batch-norm statistics on this set's images "
        "before scoring it (test-time adaptation to another site's scanner; no labels "
        "used, but each image's prediction then depends on the set; 16 images at least); "
        "null: the run's evaluation.adapt_bn",
    )

    @field_validator("name")
    @classmethod
    def _not_a_split(cls, value: str) -> str:
        if value in ("train", "val", "test"):
            raise ValueError("train, val and test name the splits of the training data")
        return value


class UltrasoundStep(OptionsModel):
    """One photometric ultrasound augmentation: how often and how strongly."""

    p: float = Field(0.0, ge=0, le=1, description="probability per training image; 0: off")
    strength: float = Field(
        0.5,
        gt=0,
        le=1,
        description="the largest change, as a share of the transform's full range "
        "(mtlkit.data.ultrasound_augment)",
    )


def _step_spec(value: Any) -> Any:
    # "speckle: 0.3" is shorthand for {p: 0.3} at the default strength
    if isinstance(value, bool):
        raise ValueError(f"expected a probability or {{p, strength}}, got {str(value).lower()}")
    return {"p": value} if isinstance(value, (int, float)) else value


_STEP = "probability, or {p, strength}: "

Step = Annotated[
    UltrasoundStep, BeforeValidator(_step_spec, json_schema_input_type=float | UltrasoundStep)
]
"""An ultrasound augmentation step; a number alone is its probability ``p``."""


class UltrasoundAugmentConfig(OptionsModel):
    """Photometric augmentations that mimic other scanners, probes and settings (training
    only; they change grey levels, never geometry). All off by default."""

    shadow: Step = Field(
        default_factory=UltrasoundStep,
        description=_STEP + "an acoustic shadow, a darkened vertical band below a random depth",
    )
    depth_attenuation: Step = Field(
        default_factory=UltrasoundStep,
        description=_STEP + "brightness falling exponentially with depth (rows)",
    )
    tgc: Step = Field(
        default_factory=UltrasoundStep,
        description=_STEP + "another time-gain compensation, a smooth gain profile over depth",
    )
    haze: Step = Field(
        default_factory=UltrasoundStep,
        description=_STEP + "near-field haze, a speckled veil fading with depth",
    )
    speckle: Step = Field(
        default_factory=UltrasoundStep,
        description=_STEP + "multiplicative Rayleigh speckle noise",
    )
    blur: Step = Field(
        default_factory=UltrasoundStep,
        description=_STEP + "resolution loss: down-sampling and back, axially and laterally",
    )
    gain: Step = Field(
        default_factory=UltrasoundStep,
        description=_STEP + "another overall gain and grey map (brightness and gamma)",
    )


class AugmentationConfig(OptionsModel):
    """Strong augmentation as in the paper: random crop and scale, flips, colour distortion;
    optionally TrivialAugment's photometric operations and ultrasound-specific ones."""

    enabled: bool = Field(
        True, description="false: no augmentation at all (every key below is then ignored)"
    )
    scale: tuple[float, float] = Field(
        (0.6, 1.0),
        description="random resized crop: [low, high] share of the RoI's area kept",
    )
    ratio: tuple[float, float] = Field(
        (0.75, 1.3333), description="random resized crop: [low, high] aspect ratio of the crop"
    )
    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.0, ge=0, le=1, description="probability of a vertical flip")
    brightness: float = Field(
        0.25, ge=0, le=1, description="colour jitter: brightness factor drawn in [1-b, 1+b]"
    )
    contrast: float = Field(
        0.25, ge=0, le=1, description="colour jitter: contrast factor drawn in [1-c, 1+c]"
    )
    trivial: bool = Field(
        False,
        description="TrivialAugment Wide restricted to its photometric operations "
        "(brightness, contrast, sharpness, posterize, solarize, autocontrast, equalize)",
    )
    ultrasound: UltrasoundAugmentConfig = Field(
        default_factory=UltrasoundAugmentConfig,
        description="ultrasound-specific photometric augmentations (all off by default)",
    )

    @field_validator("scale", "ratio")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("needs 0 < low <= high")
        return value


DEFAULT_OPTIMIZER = "adam"
DEFAULT_SCHEDULER = "step"


def named_spec(value: Any, default: str) -> Any:
    # The optimizer and scheduler are picked by `name`: "adam" is shorthand for {name: adam},
    # and a mapping without a name keeps the default one ({lr: 0.01} tunes adam).
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict) and "name" not in value:
        return {"name": default, **value}
    return value


def named_component(kind: str, default: str) -> Any:
    """The type of a ``name``-selected component slot (the optimizer, the scheduler)."""
    return Annotated[
        Component,
        BeforeValidator(
            partial(named_spec, default=default), json_schema_input_type=str | Component
        ),
        ComponentSlot(kind, key="name", default=default),
    ]


class DistributedConfig(OptionsModel):
    """Training under torchrun (``mtl run CONFIG --nproc N``, or torchrun itself): one process
    per rank, PyTorch DistributedDataParallel, gloo on the CPU and NCCL on CUDA.
    ``training.batch_size`` is per rank: a step trains on batch_size x ranks images."""

    timeout: int = Field(
        1800,
        ge=10,
        description="seconds a rank waits for the others at a collective (a gradient "
        "exchange, a gather of evaluation outputs) before it fails; a rank that died or "
        "hangs stops the job with an error instead of a hang",
    )
    sync_batchnorm: bool = Field(
        False,
        description="synchronise batch-norm statistics over the ranks at every step "
        "(SyncBatchNorm, CUDA only); off: each rank normalises by its own batch and rank "
        "0's running statistics are kept, as plain DDP does",
    )


class TrainingConfig(OptionsModel):
    """How each model trains: epochs, batches, optimizer, schedule, augmentation, device."""

    epochs: int = Field(200, ge=1, description="training epochs per model (fold and seed)")
    batch_size: int = Field(
        32,
        ge=2,
        description="images per step (per process under torchrun: a step then trains on "
        "batch_size x processes); at least 2, as batch normalisation needs",
    )
    optimizer: named_component("optimizer", DEFAULT_OPTIMIZER) = Field(
        default_factory=lambda: {"name": DEFAULT_OPTIMIZER},
        description="name picks a registered optimizer (adam, adamw, sgd, ...); the other "
        "keys are its options (lr, weight_decay, ...)",
    )
    scheduler: named_component("scheduler", DEFAULT_SCHEDULER) = Field(
        default_factory=lambda: {"name": DEFAULT_SCHEDULER},
        description="name picks a registered learning-rate scheduler (step, cosine, none, "
        "...), stepped once per epoch; the other keys are its options",
    )
    augmentation: AugmentationConfig = Field(
        default_factory=AugmentationConfig, description="training-time augmentation"
    )
    num_workers: int = Field(0, ge=0, description="data loader worker processes")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: torch's")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    amp: bool | Literal["bf16", "fp16"] = Field(
        False,
        description="mixed precision (autocast) in training: bf16, or fp16 with a gradient "
        "scaler (CUDA only); true: on CUDA bf16 where the GPU supports it, else fp16, and "
        "off on other devices; false: full precision",
    )
    channels_last: bool = Field(
        False,
        description="train with the model and its batches in channels-last memory layout "
        "(faster convolutions on GPUs with tensor cores; the weights differ from the "
        "default layout's in the last bits)",
    )
    deterministic: bool = Field(
        False,
        description="deterministic algorithms only (torch.use_deterministic_algorithms, a "
        "warning where an operation has none) and cuDNN's autotuner off; false: on CUDA "
        "cuDNN picks the fastest convolution algorithms (cudnn.benchmark), which may differ "
        "from run to run. CPU runs are reproducible either way",
    )
    ema: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="decay of an exponential moving average of the weights, updated every step; "
        "the average is what is validated, selected and saved (e.g. 0.99); 0: off",
    )
    state_every: int = Field(
        1,
        ge=0,
        description="save the complete training state every N epochs, so that a killed run "
        "can resume (mtl resume); 0: never",
    )
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig,
        description="training under torchrun (mtl run --nproc N); ignored in one process",
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        problem = device_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def device_problem(value: Any) -> str | None:
    """Why ``value`` is not a device setting (auto, cpu, cuda, cuda:N, mps), or None."""
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]{1,3})?", value):
        return f"expected auto, cpu, cuda, cuda:N or mps, got {value!r}"[:200]
    return None


def inference_problem(value: Any) -> str | None:
    """Why ``value`` is not an ``evaluation.inference`` path, or None (None is no value)."""
    choices = get_args(InferencePath)
    if value is not None and value not in choices:
        return f"expected one of {', '.join(choices)}, got {value!r}"[:200]
    return None


class StatisticsConfig(OptionsModel):
    """The uncertainty and calibration of each binary task on every evaluated set, in
    metrics.json beside the metrics (multiclass tasks get none of it)."""

    level: float = Field(
        0.95, gt=0, lt=1, description="confidence level of auc_ci_delong and auc_ci_bootstrap"
    )
    bootstrap_resamples: int = Field(
        2000,
        ge=0,
        le=100_000,
        description="resamples of the stratified percentile bootstrap of the AUC "
        "(auc_ci_bootstrap): positives and negatives (or patients with and without a "
        "positive image) are resampled separately, as R's pROC does; 0: off",
    )
    bootstrap_unit: Literal["patient", "image"] = Field(
        "patient",
        description="what the bootstrap resamples: patient (a cluster bootstrap of whole "
        "patients, each with the patients it shares near-duplicate images with, since "
        "images of one patient are not independent) or image",
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="seed of the bootstrap: the same seed, the same interval"
    )
    calibration_bins: int = Field(
        10,
        ge=1,
        le=100,
        description="equal-width bins of [0, 1] for the ECE and the reliability diagram: "
        "bin k holds k/bins <= p < (k+1)/bins, the top bin also p = 1",
    )
    youden: bool = Field(
        False,
        description="also score every set but train at each task's Youden threshold (the "
        "cut-off with the highest SE + SP - 1 on the validation split, applied unchanged to "
        "test and the external sets), in sets.<set>.at_youden",
    )


InferencePath = Literal["auto", "eager", "channels_last", "folded", "compile", "bf16", "onnx"]


class EvaluationConfig(OptionsModel):
    """How the trained models are scored: metrics, epoch selection, extra test sets."""

    threshold: float = Field(0.5, gt=0, lt=1, description="probability cut-off for ACC/SE/SP/...")
    metrics: list[str] = Field(
        default_factory=lambda: ["acc", "se", "sp", "precision", "f1", "auc"],
        description="registered metric names scored per task on every evaluated set",
    )
    select: str = Field(
        "mean.auc", description="validation score for the best epoch: TASK.METRIC or mean.METRIC"
    )
    reference_columns: dict[str, str] = Field(
        default_factory=dict,
        description="task -> data column with a reference probability (e.g. an oracle or a "
        "radiologist's score); its AUC is reported beside the model's",
    )
    adapt_bn: bool = Field(
        False,
        description="score each external set (evaluation.external, mtl evaluate) with the "
        "model's batch-norm statistics recomputed on that set's own images, unless the set "
        "says otherwise (its adapt_bn); a set of fewer than 16 images is scored as trained",
    )
    tta: Literal["none", "hflip"] = Field(
        "none",
        description="test-time augmentation: hflip averages each image's probabilities with "
        "its mirror image's (reported validation and test metrics, external sets, evaluate, "
        "predict; the per-epoch validation that picks the best epoch does without)",
    )
    inference: InferencePath = Field(
        "auto",
        description="how evaluation and prediction run the model: eager (PyTorch as trained, "
        "fp32), channels_last, folded (a frozen copy with BatchNorm folded into the "
        "convolutions, channels_last), compile (torch.compile of the folded copy; falls back "
        "to folded with a warning), onnx (ONNX Runtime, CPU, needs mtlkit[onnx]), bf16 (the "
        "folded copy under bf16 autocast: not exact, opt-in); auto: onnx on a CPU with the "
        "onnx extra once 1024 images are scored with the same weights, else folded. A fit's "
        "per-epoch validation runs folded under auto, compile and onnx. All but bf16 stay "
        "within 1e-4 of eager's probabilities (docs/performance.md)",
    )
    external: list[ExternalSetConfig] = Field(
        default_factory=list, description="extra test sets evaluated with the trained model"
    )
    consistency: list[tuple[str, str]] | None = Field(
        None,
        description="(parent, child) task pairs whose predictions are checked for "
        "consistency (a child above its parent), e.g. [[bm, alnm], [alnm, alnm_ge2]]; "
        "null: the constraints' pairs and the heads' own hierarchy; []: none",
    )
    consistency_margin: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="a child's probability counts as above its parent's when it exceeds it "
        "by more than this (the same for every variant of an ablation)",
    )
    statistics: StatisticsConfig = Field(
        default_factory=StatisticsConfig,
        description="AUC confidence intervals (DeLong, bootstrap), calibration (Brier, ECE, "
        "reliability bins) and the optional Youden threshold, per binary task and set",
    )
    ensemble: bool = Field(
        False,
        description="with several seeds: also score, per fold and evaluated set, the ensemble "
        "of the seeds' models (each image's probabilities averaged), beside their mean +- SD",
    )

    @field_validator("external")
    @classmethod
    def _distinct_names(cls, value: list[ExternalSetConfig]) -> list[ExternalSetConfig]:
        names = [s.name for s in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"external set names repeat: {', '.join(repeated)}")
        return value

    @field_validator("select")
    @classmethod
    def _task_dot_metric(cls, value: str) -> str:
        if value.count(".") != 1 or not all(value.split(".")):
            raise ValueError("expected TASK.METRIC or mean.METRIC, e.g. mean.auc or bm.auc")
        return value


VARIANT_NAME = r"^[A-Za-z][A-Za-z0-9_\-]*$"


class AblationVariant(OptionsModel):
    """One variant of an ablation: the run's config with some tasks and overrides."""

    name: str = Field(pattern=VARIANT_NAME, description="names its folder and its table row")
    tasks: list[str] | None = Field(
        None,
        min_length=1,
        description="keep only these heads (by task name), e.g. [bm] for Single-BM; the "
        "stratification, reference columns, consistency pairs and selection that name a "
        "dropped task follow; null: every head",
    )
    set: list[str] = Field(
        default_factory=list,
        description="KEY.PATH=VALUE overrides as for mtl run --set, e.g. ['constraints=[]']",
    )


class AblationConfig(OptionsModel):
    """The grid of ``mtl ablate``: every variant trains on the same split and seeds."""

    variants: list[AblationVariant] = Field(
        default_factory=list,
        description="the variants; empty: the paper's four, single_bm, single_alnm, "
        "multitask (no constraint) and full",
    )
    reference: str | None = Field(
        None,
        description="the variant every other is tested against; default: full, or the last variant",
    )

    @model_validator(mode="after")
    def _names(self) -> AblationConfig:
        names = [v.name for v in self.variants]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"variant names repeat: {', '.join(repeated)}")
        if self.reference is not None and self.variants and self.reference not in names:
            raise ValueError(f"reference {self.reference!r} is not a variant: {', '.join(names)}")
        return self


class RunConfig(OptionsModel):
    """Everything one ``mtl run`` needs."""

    name: str = Field("run", description="the run's name, in its results and output_dir")
    seed: int | list[int] = Field(0, description="one seed, or a list for repeated runs")
    output_dir: str = Field(
        "runs/{name}/{timestamp}",
        description="run directory when --out is not given; {name} and {timestamp} expand",
    )
    data: DataConfig = Field(description="the training data, its split and preprocessing")
    backbone: component("backbone") = Field(
        default_factory=lambda: {"type": "resnet50"},
        description="type picks a registered backbone (timm, resnet50); the other keys are "
        "its options",
    )
    heads: list[component("head", HeadCoreKeys)] = Field(
        min_length=1,
        description="one task head per task; type picks a registered head (bm, alnm, binary, ...)",
    )
    constraints: list[component("constraint")] = Field(
        default_factory=list,
        description="constraint losses over the tasks' outputs, e.g. hierarchical_hinge",
    )
    weighting: component("weighting") = Field(
        default_factory=lambda: {"type": "equal"},
        description="how the task losses combine into one (equal, uncertainty, dwa)",
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="how each model trains"
    )
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig, description="how the trained models are scored"
    )
    reports: list[component("report")] = Field(
        default_factory=lambda: [
            {"type": "summary"},
            {"type": "gradcam"},
            {"type": "html"},
            {"type": "model_card"},
        ],
        description="reports written after the run, in this order (summary, markdown, "
        "gradcam, html, plots, model_card)",
    )
    baselines: list[component("baseline")] = Field(
        default_factory=list,
        description="models trained and evaluated beside the CNN on the same splits, e.g. "
        "[radiomics]; each entry's other keys are that baseline's options",
    )
    ablation: AblationConfig = Field(
        default_factory=AblationConfig, description="the variants mtl ablate trains"
    )
    loggers: list[component("logger")] = Field(
        default_factory=list,
        description="experiment trackers the run is mirrored into, e.g. [tensorboard, mlflow] "
        "or [{type: mlflow, tracking_uri: ...}]; each entry's other keys are its options",
    )

    @field_validator("output_dir")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        try:
            value.format(name="x", timestamp="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"only {{name}} and {{timestamp}} may appear in braces ({type(exc).__name__}: "
                f"{exc})"
            ) from None
        return value

    @field_validator("seed")
    @classmethod
    def _seeds(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("a list of seeds must be non-empty and without repeats")
        if any(not 0 <= s <= MAX_SEED for s in (value if isinstance(value, list) else [value])):
            raise ValueError(f"seeds must lie in [0, {MAX_SEED}]")
        return value

    @property
    def seeds(self) -> list[int]:
        return self.seed if isinstance(self.seed, list) else [self.seed]
