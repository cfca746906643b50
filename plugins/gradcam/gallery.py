"""The ``gradcam`` report: per task, heatmaps of a sample of test images (true and false
positives and negatives, with their probabilities) and the CAM response against the
distance to the lesion over the test split, in ``cam/`` of the run directory."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from rich.console import Console

from mtlkit import (
    MtlError,
    OptionsModel,
    RunResult,
    atomic_write_bytes,
    atomic_write_text,
    crop_and_resize,
    normalize_batch,
    positive_at,
    roi_box,
    shown,
    to_json,
)
from mtlkit.plugins.gradcam.cam import MethodName, TargetName, cam_targets, compute_cams
from mtlkit.plugins.gradcam.overlay import overlay_image, png_bytes
from mtlkit.plugins.gradcam.response import mask_profile, radial_profile

CAM_DIR = "cam"
GALLERY_FILE = "gallery.json"
RESPONSE_FILE = "response.json"
GROUPS = ("TP", "FP", "FN", "TN")


class GradCamOptions(OptionsModel):
    tasks: list[str] | None = Field(None, description="tasks to explain; default: all")
    split: str = Field("test", description="the split the gallery and the curve come from")
    per_group: int = Field(2, ge=0, le=50, description="images per TP/FP/FN/TN group and task")
    method: MethodName = Field("gradcam", description="CAM method of the grad-cam package")
    target_layer: str | None = Field(None, description="module name; default: the last stage")
    target: TargetName = Field("predicted", description="what each heatmap explains")
    curve_images: int = Field(200, ge=0, description="test images for the response curve")
    ring: float = Field(0.5, gt=0, description="peritumoral ring width, in lesion radii")


def safe_name(text: str, key: str | None = None) -> str:
    """A file-name stem for an image id: its safe characters and a short hash of ``key``
    (default ``text``; the id and its source where two inputs share an id), so that two
    images never share a file and no id can leave the folder. Any text encodes, undecodable
    file-name bytes included."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(text).stem)[:40].strip("_") or "image"
    digest = hashlib.sha256((key or text).encode("utf-8", "backslashreplace")).hexdigest()
    return f"{stem}-{digest[:8]}"


def pick_gallery(
    kind: str, labels: np.ndarray, probs: np.ndarray, threshold: float, per_group: int
) -> list[tuple[str, int]]:
    """``(group, row)`` pairs: per outcome group the ``per_group`` most confident images
    (for a multiclass task: correct and wrong predictions)."""
    known = np.flatnonzero(~np.isnan(labels))
    picked: list[tuple[str, int]] = []
    if kind == "binary":
        p = probs[known]
        y = labels[known].astype(int)
        predicted = positive_at(p, threshold).astype(int)
        groups = {
            "TP": (y == 1) & (predicted == 1),
            "FP": (y == 0) & (predicted == 1),
            "FN": (y == 1) & (predicted == 0),
            "TN": (y == 0) & (predicted == 0),
        }
        for group, where in groups.items():
            rows = known[where]
            confidence = probs[rows] if group in ("TP", "FP") else -probs[rows]
            picked += [(group, int(r)) for r in rows[np.argsort(-confidence, kind="stable")]][
                :per_group
            ]
        return picked
    p = probs[known]
    y = labels[known].astype(int)
    predicted = np.argmax(p, axis=1)
    for group, where in (("correct", predicted == y), ("wrong", predicted != y)):
        rows = known[where]
        confidence = probs[rows].max(axis=1)
        picked += [(group, int(r)) for r in rows[np.argsort(-confidence, kind="stable")]][
            :per_group
        ]
    return picked


def lesion_masks(engine: Any, indices: np.ndarray) -> np.ndarray | None:
    """The lesion masks cut like the RoIs (N, S, S), or None when the data has no masks."""
    data, config = engine.data, engine.config
    if data.masks is not None and bool(data.has_mask[indices].all()):  # segmentation runs
        return data.masks[indices, 0].numpy() > 0
    size, roi = config.data.image_size, config.data.roi
    masks = []
    for index in indices:
        sample = data.samples[int(index)]
        if sample.mask is None:
            return None
        image = sample.image()
        mask = sample.mask()
        box = (
            engine.whole_image_roi(image)[0] if roi.mode == "auto" else roi_box(sample, image, roi)
        )
        masks.append(crop_and_resize(mask.astype(np.uint8) * 255, box, size) > 127)
    return np.stack(masks) if masks else None


def first_checkpoint(result: RunResult) -> Path:
    """The best weights of the run's first fold and seed, the model the engine stands for."""
    engine = result.engine
    parts = []
    if engine.data.n_folds > 1:
        parts.append(f"fold_{engine.data.fold + 1}")
    if len(engine.config.seeds) > 1:
        parts.append(f"seed_{engine.seed}")
    return result.out_dir.joinpath(*parts, "checkpoints", "best.safetensors")


def gradcam_report(options: GradCamOptions):
    """Grad-CAM gallery and CAM-response curve of the run's first model on the test split."""

    def report(result: RunResult, console: Console) -> None:
        engine = result.engine
        if engine is None:  # regenerated from files: the gallery on disk stays as it is
            return
        checkpoint = first_checkpoint(result)
        if not checkpoint.is_file():
            console.print(f"[yellow]gradcam:[/] no {shown(checkpoint)}; no gallery")
            return
        engine.load_checkpoint(checkpoint)
        write_gallery(engine, result.out_dir / CAM_DIR, options, result.out_dir)

    return report


def write_gallery(engine: Any, folder: Path, options: GradCamOptions, root: Path) -> None:
    """Write the gallery PNGs and CAMs, gallery.json and response.json into ``folder``."""
    data, config = engine.data, engine.config
    indices = data.indices(options.split)
    threshold = config.evaluation.threshold
    heads = [h for h in engine.heads if options.tasks is None or h.name in options.tasks]
    unknown = set(options.tasks or ()) - {h.name for h in engine.heads}
    if unknown:
        raise MtlError(f"gradcam: unknown task(s) {', '.join(sorted(unknown))}")
    rois = data.cache[torch.from_numpy(indices)] if len(indices) else data.cache[:0]
    probabilities = engine.predict([r[0].numpy() for r in rois]) if len(rois) else {}
    curve_rows = np.arange(min(len(indices), options.curve_images))
    masks = lesion_masks(engine, indices[curve_rows]) if len(curve_rows) else None
    images = normalize_batch(rois)
    model = engine.model
    gallery: list[dict[str, Any]] = []
    response: dict[str, Any] = {
        "split": options.split,
        "method": options.method,
        "target": options.target,
        "tasks": {},
    }
    for column, head in enumerate(engine.heads):
        if head.name not in {h.name for h in heads} or not len(indices):
            continue
        labels = data.targets[torch.from_numpy(indices), column].numpy()
        probs = probabilities[head.name]
        picks = pick_gallery(head.kind, labels, probs, threshold, options.per_group)
        rows = sorted({r for _, r in picks} | set(curve_rows.tolist()))
        targets = cam_targets(head.kind, options.target, probs[rows], labels[rows], threshold)
        cams = compute_cams(
            model,
            head.name,
            images[rows],
            targets,
            method=options.method,
            layer=options.target_layer,
        )
        cam_of = dict(zip(rows, cams, strict=False))
        task_dir = folder / head.name
        for group, row in picks:
            sample = data.samples[int(indices[row])]
            stem = safe_name(sample.image_id)
            png, npy = task_dir / f"{stem}.png", task_dir / f"{stem}.npy"
            atomic_write_bytes(png, png_bytes(overlay_image(rois[row, 0].numpy(), cam_of[row])))
            atomic_write_bytes(npy, npy_bytes(cam_of[row]))
            label = labels[row]
            gallery.append(
                {
                    "task": head.name,
                    "group": group,
                    "image_id": sample.image_id,
                    "patient_id": sample.patient_id,
                    "label": head.classes[int(label)] if not np.isnan(label) else None,
                    "probability": probability_of(probs[row], head),
                    "png": png.relative_to(root).as_posix(),
                    "cam": npy.relative_to(root).as_posix(),
                }
            )
        curve = np.stack([cam_of[r] for r in curve_rows]) if len(curve_rows) else cams[:0]
        entry: dict[str, Any] = {"centre": radial_profile(curve)}
        if masks is not None:
            entry["lesion"] = mask_profile(curve, masks, ring=options.ring)
        response["tasks"][head.name] = entry
    atomic_write_text(folder / GALLERY_FILE, to_json({"threshold": threshold, "images": gallery}))
    atomic_write_text(folder / RESPONSE_FILE, to_json(response))


def probability_of(prob: Any, head: Any) -> dict[str, float] | float:
    """A binary head's positive probability, or a multiclass head's per class."""
    if head.kind == "binary":
        return round(float(prob), 4)
    return {c: round(float(p), 4) for c, p in zip(head.classes, prob, strict=False)}


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()
