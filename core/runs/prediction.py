"""Predictions of a trained model for new images: ``mtl predict`` and :func:`predict_files`.

Each image is cut to its RoI the way the run's evaluation cut its val and test images
(with ``data.roi.mode: auto`` the lesion the localiser finds; with ``box`` or ``mask`` a
manifest's box or mask; else the whole image, which ``warning`` then notes), resized to
the model's input and scored in batches by ``Engine.predict_rois``, the same computation
evaluation uses (test-time augmentation and the constraints that adjust outputs
included). The result is one record per image: every task's probability and its decision
at the run's threshold (``evaluation.threshold``, the one its metrics use), the raw
probabilities where a constraint adjusts them, each segmentation task's lesion area, and
which RoI was used. An image that cannot be read or cut is a record with an ``error``.
With ``adapt_bn`` the images are read twice: once for the batch-norm statistics of the
whole set (``mtlkit.evaluation.bn_adaptation``), once to predict them.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlkit.components.contracts import image_problem
from mtlkit.data.roi import Box, crop_and_resize, roi_box
from mtlkit.data.samples import Sample
from mtlkit.engine import Engine
from mtlkit.errors import DataError, UsageError
from mtlkit.evaluation.external import check_options, trained_engine
from mtlkit.evaluation.thresholds import positive_at
from mtlkit.progress import Progress
from mtlkit.results import RoiOutputs
from mtlkit.runs.prediction_inputs import PredictionInput, collect_inputs
from mtlkit.text import csv_cell
from mtlkit.training.checkpoint import checkpoint_of

ROI_COLUMNS = ("image_id", "source", "roi_source", "x0", "y0", "x1", "y1", "width", "height")
NOTE_COLUMNS = ("warning", "error")
ROI_SOURCES = ("box", "mask", "localizer", "whole_image")
"""Where a record's RoI came from: a drawn box, a mask's extent, the localiser's lesion
(``data.roi.mode: auto``), or the whole image."""


@dataclass
class PredictedRoi:
    """One predicted image as ``on_batch`` sees it: its record and the RoI the model saw
    (a uint8 square at the model's input size)."""

    record: dict[str, Any]
    roi: np.ndarray


BatchCallback = Callable[[list[PredictedRoi]], None]


def load_predictor(
    checkpoint: str | Path,
    *,
    device: str = "auto",
    progress: Progress | None = None,
    inference: str | None = None,
) -> Engine:
    """The engine of a trained model for prediction: ``checkpoint`` is a weights file or a
    run directory (its first fold's and seed's best checkpoint); ``inference`` replaces
    the run's ``evaluation.inference`` (``mtl predict --inference``)."""
    check_options(device, inference)
    return trained_engine(
        checkpoint_of(checkpoint), device=device, progress=progress, inference=inference
    )


def prediction_columns(engine: Engine) -> list[str]:
    """The columns of every record, in order: the image and its RoI; per binary task
        ``<task>_prob`` and ``<task>_pred`` (0/1), per multiclass task ``<task>_prob_<class>``
        and ``<task>_pred`` (the class); ``<task>_raw_prob...`` before the adjustment when a
        constraint adjusts outputs; ``<task>_area`` per segmentation task (the lesion's share,
    0 to 1, of the resized RoI square the model saw, not an area in image pixels);
    ``warning``, ``error``."""
    adjusting = any(c.adjusts_outputs for c in engine.constraints)
    columns = list(ROI_COLUMNS)
    for head in engine.heads:
        names = _probability_names(head)
        columns += [f"{head.name}_{n}" for n in names] + [f"{head.name}_pred"]
        if adjusting:
            columns += [f"{head.name}_raw_{n}" for n in names]
    columns += [f"{head.name}_area" for head in engine.dense_heads]
    return columns + list(NOTE_COLUMNS)


def _probability_names(head) -> list[str]:
    return ["prob"] if head.kind == "binary" else [f"prob_{c}" for c in head.classes]


def predict_files(
    model: Engine | str | Path,
    paths: str | Path | Sequence[str | Path],
    *,
    device: str = "auto",
    batch_size: int | None = None,
    strict: bool = False,
    progress: Progress | None = None,
    on_batch: BatchCallback | None = None,
    as_frame: bool = False,
    inference: str | None = None,
    adapt_bn: bool = False,
) -> Any:
    """Predict every image that ``paths`` name (files, folders, manifest ``.csv`` files; a
    single path is one path) with ``model``, an engine holding a trained model or a
    checkpoint (file or run directory).

    Images are read and predicted ``batch_size`` at a time (default: the run's
    ``training.batch_size``), so memory does not grow with their number. Returns one record
    (dict with every :func:`prediction_columns` key, None where it does not apply) per
    image, in the order given, or with ``as_frame`` a pandas DataFrame of them. A file that
    cannot be read or cut is a record whose ``error`` says why; with ``strict`` it raises
    DataError instead. ``on_batch`` receives each batch's predicted images and RoIs.
    ``inference`` replaces the checkpoint's ``evaluation.inference`` (with a checkpoint;
    an engine keeps its own). ``adapt_bn``: predict with the model's batch-norm statistics
    recomputed on all these images first (another site's images; at least 16 that can be
    cut); the engine's own model is unchanged."""
    if isinstance(paths, str | Path):  # a str is a Sequence too: of its characters
        paths = [paths]
    engine = (
        model
        if isinstance(model, Engine)
        else load_predictor(model, device=device, inference=inference)
    )
    if engine.model is None:
        raise UsageError("the engine has no model yet: call fit() or load_checkpoint() first")
    inputs = collect_inputs(paths, engine.host)
    if not inputs:
        raise UsageError("no images found in " + ", ".join(str(p) for p in paths))
    columns = prediction_columns(engine)
    size = engine.config.training.batch_size if batch_size is None else batch_size
    if size < 1:
        raise UsageError(f"batch size must be at least 1, got {size}")
    progress = progress or Progress(enabled=False)
    task = progress.task("predicting images", total=len(inputs))
    records: list[dict[str, Any]] = []
    adapting = (
        engine.batch_norm_adapted(_rois_in_batches(engine, inputs, size, progress))
        if adapt_bn
        else contextlib.nullcontext()
    )
    with adapting:
        for start in range(0, len(inputs), size):
            with torch.inference_mode():
                batch = _predict_batch(engine, inputs[start : start + size], columns, strict)
            for _ in batch:
                progress.advance(task)
            records += [item.record for item in batch]
            predicted = [item for item in batch if item.roi is not None]
            if on_batch is not None and predicted:  # outside inference mode: Grad-CAM needs it
                on_batch(predicted)
    progress.remove(task)
    return records_frame(records, columns) if as_frame else records


def _rois_in_batches(
    engine: Engine, inputs: list[PredictionInput], size: int, progress: Progress
) -> Iterator[torch.Tensor]:
    """The RoIs of every input that can be cut, ``size`` images at a time, for the
    batch-norm statistics; the others are skipped here and reported by the prediction."""
    task = progress.task("reading images for batch-norm statistics", total=len(inputs))
    for start in range(0, len(inputs), size):
        rois = []
        for item in inputs[start : start + size]:
            progress.advance(task)
            if item.sample is None:
                continue
            with contextlib.suppress(DataError):
                rois.append(_cut(engine, item.sample, {})[0])
        if rois:
            yield torch.from_numpy(np.stack(rois))[:, None]
    progress.remove(task)


def _predict_batch(
    engine: Engine, inputs: list[PredictionInput], columns: list[str], strict: bool
) -> list[PredictedRoi]:
    """Each input's record, predicted together; those that failed keep ``roi`` None."""
    results = []
    blends = engine.config.data.roi.mode == "auto" and engine.config.data.roi.blend > 0
    whole_images = []  # of the predicted inputs, kept for roi.blend only
    for item in inputs:
        record: dict[str, Any] = dict.fromkeys(columns)
        record.update(image_id=item.image_id, source=item.source)
        roi = None
        try:
            if item.sample is None:
                raise DataError(item.error or "nothing to read")
            roi, image = _cut(engine, item.sample, record)
            if blends:
                whole_images.append(image)
        except DataError as exc:
            if strict:
                raise DataError(f"{item.source}: {exc}") from None
            record["error"] = str(exc)
        results.append(PredictedRoi(record, roi))
    predicted = [r for r in results if r.roi is not None]
    if predicted:
        rois = torch.from_numpy(np.stack([r.roi for r in predicted]))[:, None]
        outputs = engine.blended_outputs(engine.predict_rois(rois), whole_images)
        for index, item in enumerate(predicted):
            _fill(engine, item.record, outputs, index)
    return results


def _cut(engine: Engine, sample: Sample, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The sample's RoI at the model's input size, and its whole image; records the box,
    its source, the image's size and what the user should know about the cut. Raises
    DataError naming what is wrong with the image or its RoI."""
    image = sample.image()
    problem = image_problem(image)
    if problem:
        raise DataError(problem)
    height, width = image.shape
    box, source = choose_roi(engine, sample, image)
    size = engine.config.data.image_size
    record.update(zip(("x0", "y0", "x1", "y1"), box, strict=True))
    record.update(roi_source=source, width=width, height=height)
    warnings = [roi_warning(engine.config.data.roi.mode, source)]
    if width < size or height < size:
        # Resized as training resizes every RoI, but a user should know the model saw
        # an upscaled image rather than the detail it was trained on.
        warnings.append(
            f"the image ({width}x{height}) is smaller than the model's {size}x{size} input; "
            "it was upscaled"
        )
    record["warning"] = "; ".join(w for w in warnings if w) or None
    return crop_and_resize(image, box, size), image


def roi_warning(mode: str, source: str) -> str | None:
    """Why a record's RoI is not the kind the model was trained on, or None: the whole
    image given to a model trained on box, mask or localiser crops."""
    if source != "whole_image" or mode == "image":
        return None
    if mode == "auto":
        return "the localiser found no lesion; the whole image was used"
    return f"the model was trained on {mode} RoIs and the image has none; the whole image was used"


def choose_roi(engine: Engine, sample: Sample, image: np.ndarray) -> tuple[Box, str]:
    """The RoI of one image as the run's evaluation cuts its val and test images, and its
    source (one of :data:`ROI_SOURCES`): with ``data.roi.mode: auto`` the lesion the
    localiser finds, even where the sample has a drawn box or mask (``roi.train_mode`` is
    the training split's alone); with ``box`` or ``mask`` the drawn RoI of that kind, else
    of the other, plus the trained margin; else, and with ``roi.mode: image``, the whole
    image."""
    settings = engine.config.data.roi
    if settings.mode == "auto":
        box, found = engine.whole_image_roi(image)
        return box, "localizer" if found else "whole_image"
    if settings.mode != "image":
        drawn = {"box": sample.box is not None, "mask": sample.mask is not None}
        order = ("mask", "box") if settings.mode == "mask" else ("box", "mask")
        for kind in order:
            if drawn[kind]:
                return roi_box(sample, image, settings.model_copy(update={"mode": kind})), kind
    height, width = image.shape
    return (0, 0, width, height), "whole_image"


def _fill(engine: Engine, record: dict[str, Any], outputs: RoiOutputs, index: int) -> None:
    """One image's probabilities, decisions and lesion areas (the lesion's share of the
    resized RoI square) into its record."""
    threshold = engine.config.evaluation.threshold
    for head in engine.heads:
        prob = outputs.probabilities[head.name][index]
        parts = [("", prob)] + ([("raw_", outputs.raw[head.name][index])] if outputs.raw else [])
        for prefix, values in parts:
            names = _probability_names(head)
            for name, value in zip(names, np.atleast_1d(values), strict=True):
                record[f"{head.name}_{prefix}{name}"] = float(value)
        if head.kind == "binary":
            record[f"{head.name}_pred"] = int(positive_at(prob, threshold))
        else:
            record[f"{head.name}_pred"] = head.classes[int(np.argmax(prob))]
    for head in engine.dense_heads:
        lesion = outputs.masks[head.name][index] > head.threshold
        record[f"{head.name}_area"] = float(lesion.mean())


def records_csv(records: list[dict[str, Any]], columns: list[str]) -> str:
    """The records as CSV text: probabilities and areas with six decimals, text cells that
    a spreadsheet would run as formulas made harmless (:func:`~mtlkit.csv_cell`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([csv_cell(c) for c in columns])
    for record in records:
        writer.writerow([_cell(record.get(c)) for c in columns])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, int):
        return str(value)
    return csv_cell(value)


def records_frame(records: list[dict[str, Any]], columns: list[str]) -> Any:
    """The records as a pandas DataFrame with ``columns`` (pandas is optional)."""
    try:
        import pandas
    except ImportError:
        raise UsageError("a DataFrame needs pandas: pip install pandas") from None
    return pandas.DataFrame.from_records(records, columns=columns)
