"""``mtl explain``: Grad-CAM heatmaps of a trained model for image files, folders or a
manifest, per task; ``mtl explain --compare RUN_A RUN_B``: the same test images explained
by two runs' models, one row per model (Li et al. 2022, Figure 6)."""

from __future__ import annotations

import argparse
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtlkit import (
    IMAGE_SUFFIXES,
    CommandContext,
    UsageError,
    atomic_write_bytes,
    atomic_write_text,
    crop_and_resize,
    csv_cell,
    load_grayscale,
    normalize_batch,
    positive_at,
    roi_box,
    trained_engine,
)
from mtlkit.plugins.gradcam.cam import METHODS, cam_targets, compute_cams
from mtlkit.plugins.gradcam.gallery import npy_bytes, safe_name
from mtlkit.plugins.gradcam.overlay import overlay_image, png_bytes

INDEX_COLUMNS = ["image_id", "source", "task", "probability", "predicted", "heatmap", "cam"]


@dataclass
class Roi:
    """One image to explain: its id, where it came from, and its RoI at the model's size."""

    image_id: str
    source: str
    roi: np.ndarray
    label: dict[str, object]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="image files, folders of images, or a manifest .csv",
    )
    parser.add_argument("--checkpoint", help="weights saved by a run (.safetensors)")
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="RUN_DIR",
        help="run directories whose models explain the same test images, one row each",
    )
    parser.add_argument("--task", action="append", default=[], help="task to explain (repeatable)")
    parser.add_argument("--out", required=True, help="folder for the heatmaps and index.csv")
    parser.add_argument("--method", default="gradcam", choices=list(METHODS))
    parser.add_argument("--layer", help="target layer (module name); default: the last stage")
    parser.add_argument(
        "--target",
        default="predicted",
        choices=["predicted", "positive", "negative"],
        help="what each heatmap explains (binary heads: positive logit, its negative, or "
        "the predicted side)",
    )
    parser.add_argument("--images", type=int, default=6, help="with --compare: test images shown")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N, mps")


def collect_rois(paths: list[str], engine, ctx: CommandContext) -> list[Roi]:
    """The RoIs of every input: whole images for files and folders (with ``data.roi.mode:
    auto``, the RoI the localiser finds); for a manifest the RoI of training (box, mask,
    image or auto, from the checkpoint's config)."""
    size = engine.config.data.image_size
    rois: list[Roi] = []
    for text in paths:
        path = Path(text)
        if path.suffix.lower() == ".csv":
            entry, options = ctx.host.data_sources.resolve(
                {"type": "manifest", "path": str(path)}, str(path)
            )
            for sample in entry.obj(options).samples:
                image = sample.image()
                settings = engine.config.data.roi
                try:
                    box = (
                        engine.whole_image_roi(image)[0]
                        if settings.mode == "auto"
                        else roi_box(sample, image, settings)
                    )
                except Exception:  # no box or mask for this RoI mode: the whole image
                    box = (0, 0, image.shape[1], image.shape[0])
                roi = crop_and_resize(image, box, size)
                rois.append(Roi(sample.image_id, str(path), roi, dict(sample.labels)))
            continue
        files = (
            sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if path.is_dir()
            else [path]
        )
        if not path.exists():
            raise UsageError(f"{text}: no such file or folder")
        for file in files:
            image = load_grayscale(file)
            box, _ = engine.whole_image_roi(image)  # data.roi.mode auto: the lesion's box
            roi = crop_and_resize(image, box, size)
            rois.append(
                Roi(
                    file.name if not path.is_dir() else str(file.relative_to(path)),
                    str(file),
                    roi,
                    {},
                )
            )
    if not rois:
        raise UsageError("no images found in " + ", ".join(paths))
    return rois


def explain_rois(engine, rois: list[Roi], tasks: list[str], args, out: Path) -> list[list[str]]:
    """Heatmap PNGs and raw CAMs per image and task under ``out``; returns the index rows."""
    batch = torch.from_numpy(np.stack([r.roi for r in rois]))[:, None]
    probabilities = engine.predict([r.roi for r in rois])
    images = normalize_batch(batch)
    threshold = engine.config.evaluation.threshold
    rows = []
    for head in engine.heads:
        if head.name not in tasks:
            continue
        probs = probabilities[head.name]
        target = args.target if head.kind == "binary" else "predicted"
        cams = compute_cams(
            engine.model,
            head.name,
            images,
            cam_targets(head.kind, target, probs, None, threshold),
            method=args.method,
            layer=args.layer,
        )
        for roi, cam, prob in zip(rois, cams, probs, strict=False):
            # a/img.png and b/img.png share the id img.png: their sources tell them apart
            stem = safe_name(roi.image_id, f"{roi.source}\n{roi.image_id}")
            png = out / head.name / f"{stem}.png"
            npy = out / head.name / f"{stem}.npy"
            atomic_write_bytes(png, png_bytes(overlay_image(roi.roi, cam)))
            atomic_write_bytes(npy, npy_bytes(cam))
            if head.kind == "binary":
                prob_text = f"{float(prob):.4f}"
                decision = head.classes[int(positive_at(prob, threshold))]
            else:
                pairs = zip(head.classes, prob, strict=True)
                prob_text = " ".join(f"{c}={p:.4f}" for c, p in pairs)
                decision = head.classes[int(np.argmax(prob))]
            rows.append(
                [
                    roi.image_id,
                    roi.source,
                    head.name,
                    prob_text,
                    decision,
                    png.relative_to(out).as_posix(),
                    npy.relative_to(out).as_posix(),
                ]
            )
    return rows


def run_explain(args: argparse.Namespace, ctx: CommandContext) -> int:
    if args.compare:
        return run_compare(args, ctx)
    if not args.checkpoint or not args.paths:
        raise UsageError(
            "mtl explain needs --checkpoint CKPT and PATH..., or --compare RUN_A RUN_B"
        )
    out = Path(args.out)
    engine = trained_engine(Path(args.checkpoint), device=args.device, host=ctx.host)
    tasks = check_tasks(args.task, engine)
    rois = collect_rois(args.paths, engine, ctx)
    rows = explain_rois(engine, rois, tasks, args, out)
    write_index(out, rows)
    ctx.console.print(f"{len(rows)} heatmaps of {len(rois)} images written to {out}")
    return 0


def write_index(out: Path, rows: list[list[str]]) -> None:
    """``index.csv`` under ``out``: one row per heatmap (:func:`explain_rois`'s rows)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    writer.writerows([[csv_cell(cell) for cell in row] for row in rows])
    atomic_write_text(out / "index.csv", buffer.getvalue())


def check_tasks(requested: list[str], engine) -> list[str]:
    names = [h.name for h in engine.heads]
    unknown = [t for t in requested if t not in names]
    if unknown:
        raise UsageError(f"unknown task(s) {', '.join(unknown)}; the model's: {', '.join(names)}")
    return requested or names


def run_compare(args: argparse.Namespace, ctx: CommandContext) -> int:
    """One figure per task: the same test images (columns), one row per run's model."""
    from mtlkit.plugins.gradcam.compare import compare_runs

    written = compare_runs(
        [Path(p) for p in args.compare], Path(args.out), args, ctx.host, tasks=args.task
    )
    for path in written:
        ctx.console.print(f"written: {path}")
    return 0
