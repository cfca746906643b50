"""Heatmaps of the same test images from several runs' models, one row per model (Li et
al. 2022, Figure 6: the single-task model beside the multi-task one)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlkit import UsageError, atomic_write_text, normalize_batch, trained_engine
from mtlkit.plugins.gradcam.cam import cam_targets, compute_cams
from mtlkit.plugins.gradcam.overlay import overlay_image
from mtlkit.plugins.plots import new_figure, save, short
from mtlkit.plugins.run_files import first_run_dir, read_run


def run_checkpoint(run_dir: Path) -> Path:
    """The best weights of a run's first fold and seed."""
    path = first_run_dir(run_dir) / "checkpoints" / "best.safetensors"
    if not path.is_file():
        raise UsageError(f"{run_dir} has no checkpoints/best.safetensors: not a finished run")
    return path


def common_test_images(runs: list[Path], count: int) -> list[str]:
    """Test images every run was scored on, the first ``count`` in the first run's order."""
    sets = []
    for run_dir in runs:
        rows = read_run(run_dir).predictions
        sets.append([r["image_id"] for r in rows if r.get("split") == "test"])
    shared = set(sets[0]).intersection(*sets[1:])
    chosen = list(dict.fromkeys(i for i in sets[0] if i in shared))[:count]
    if not chosen:
        raise UsageError("the runs share no test image: compare runs made on the same data")
    return chosen


def compare_runs(
    runs: list[Path], out: Path, args: Any, host: Any, tasks: list[str] = ()
) -> list[Path]:
    """One figure per task shared by the runs (images in columns, models in rows), written
    to ``out`` as PNG and SVG with an index CSV; returns the figure paths."""
    if len(runs) < 2:
        raise UsageError("--compare needs at least two run directories")
    image_ids = common_test_images(runs, args.images)
    models = []
    for run_dir in runs:
        engine = trained_engine(run_checkpoint(run_dir), device=args.device, host=host)
        where = {s.image_id: i for i, s in enumerate(engine.data.samples)}
        missing = [i for i in image_ids if i not in where]
        if missing:
            raise UsageError(f"{run_dir}: its data has no image {missing[0]!r}")
        rows = torch.tensor([where[i] for i in image_ids])
        models.append((read_run(run_dir).label, engine, engine.data.cache[rows]))
    shared = [h.name for h in models[0][1].heads]
    for _, engine, _ in models[1:]:
        shared = [t for t in shared if t in {h.name for h in engine.heads}]
    chosen = [t for t in shared if not tasks or t in tasks]
    if not chosen:
        raise UsageError("the runs share none of the requested tasks")
    written, index = [], []
    for task in chosen:
        figure, axes = new_figure(
            len(models) * len(image_ids), width=1.9, height=2.1, cols=len(image_ids)
        )
        for row, (label, engine, rois) in enumerate(models):
            head = next(h for h in engine.heads if h.name == task)
            probs = engine.predict([r[0].numpy() for r in rois])[task]
            threshold = engine.config.evaluation.threshold
            cams = compute_cams(
                engine.model,
                task,
                normalize_batch(rois),
                cam_targets(head.kind, args.target, probs, None, threshold),
                method=args.method,
                layer=args.layer,
            )
            for col, (image_id, roi, cam, prob) in enumerate(
                zip(image_ids, rois, cams, probs, strict=True)
            ):
                ax = axes[row * len(image_ids) + col]
                ax.imshow(overlay_image(roi[0].numpy(), cam))
                ax.set_xticks([])
                ax.set_yticks([])
                value = f"p={float(prob):.2f}" if head.kind == "binary" else f"p={np.max(prob):.2f}"
                ax.set_title(f"{short(image_id, 18)}  {value}", fontsize=7)
                if col == 0:
                    ax.set_ylabel(short(label, 22), fontsize=8)
                index.append([task, label, image_id, value[2:]])
        png, _ = save(figure, out, f"compare_{task}")
        written.append(png)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["task", "model", "image_id", "probability"])
    writer.writerows(index)
    atomic_write_text(out / "compare.csv", buffer.getvalue())
    return written
