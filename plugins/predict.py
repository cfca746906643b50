"""``mtl predict``: a trained model's predictions for new images, as a CSV file or a table,
with optional Grad-CAM overlays.

The prediction itself is the public API's (:func:`mtlkit.predict_files`); this command is a
plugin rather than part of the core so that ``--explain`` can reuse the ``gradcam``
plugin's code of ``mtl explain`` (the core never imports plugins).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from mtlkit import (
    INFERENCE_PATHS,
    Command,
    CommandContext,
    DataError,
    Progress,
    UsageError,
    atomic_write_text,
    check_output_file,
    checkpoint_of,
    hookimpl,
    load_predictor,
    predict_files,
    prediction_columns,
    records_csv,
    shown,
)

MAX_TABLE_ROWS = 200  # beyond this, a terminal table helps nobody: use --out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="image files (PNG, JPEG, TIFF, BMP, DICOM), folders (searched recursively) or "
        "manifest .csv files",
    )
    parser.add_argument(
        "--checkpoint", required=True, help="weights saved by a run (.safetensors) or its run dir"
    )
    parser.add_argument("--out", help="write the predictions to this CSV file (atomically)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    parser.add_argument(
        "--explain", metavar="DIR", help="also write Grad-CAM overlays per image and task here"
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    parser.add_argument(
        "--inference",
        choices=INFERENCE_PATHS,
        help="how the model is run (default: the run's evaluation.inference): "
        + ", ".join(INFERENCE_PATHS),
    )
    parser.add_argument(
        "--batch-size", type=int, help="images read and predicted at a time (default: the run's)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first image that cannot be predicted"
    )
    parser.add_argument(
        "--adapt-bn",
        action="store_true",
        help="recompute the model's batch-norm statistics on these images first (another "
        "site's scanner; at least 16 images; each prediction then depends on the set)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


class GradCamStep:
    """``--explain``: Grad-CAM overlays of every predicted batch, with ``mtl explain``'s
    code and defaults (method gradcam, the predicted side, the last stage)."""

    def __init__(self, engine, out: Path):
        try:
            from mtlkit.plugins.gradcam.explain import Roi, explain_rois, write_index
        except ImportError as exc:  # the grad-cam package is an ordinary dependency
            raise UsageError(f"--explain needs the gradcam plugin's packages: {exc}") from None
        self.engine, self.out = engine, out
        self._roi, self._explain, self._write_index = Roi, explain_rois, write_index
        self.settings = argparse.Namespace(method="gradcam", target="predicted", layer=None)
        self.rows: list[list[str]] = []

    def __call__(self, batch) -> None:
        rois = [self._roi(p.record["image_id"], p.record["source"], p.roi, {}) for p in batch]
        tasks = [head.name for head in self.engine.heads]
        self.rows += self._explain(self.engine, rois, tasks, self.settings, self.out)

    def finish(self) -> None:
        self._write_index(self.out, self.rows)


def run_predict(args: argparse.Namespace, ctx: CommandContext) -> int:
    out = Path(args.out) if args.out else None
    if out is not None:
        check_output_file(out, overwrite=args.force)
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    show = not args.quiet and ctx.err.is_terminal
    with Progress(enabled=show, console=ctx.err) as progress:
        weights = checkpoint_of(args.checkpoint)
        if weights != Path(args.checkpoint).expanduser():  # a run directory: say which one
            ctx.err.print(f"using checkpoint {shown(weights)}")
        engine = load_predictor(
            weights, device=args.device, progress=progress, inference=args.inference
        )
        explainer = GradCamStep(engine, Path(args.explain)) if args.explain else None
        records = predict_files(
            engine,
            args.paths,
            batch_size=args.batch_size,
            strict=args.strict,
            progress=progress,
            on_batch=explainer,
            adapt_bn=args.adapt_bn,
        )
    failed = [r for r in records if r["error"]]
    for record in failed:
        ctx.err.print(f"[yellow]skipped:[/] {shown(record['source'])}: {shown(record['error'])}")
    if len(failed) == len(records):
        raise DataError(f"none of the {len(records)} image(s) could be predicted; nothing written")
    columns = prediction_columns(engine)
    if out is not None:
        atomic_write_text(out, records_csv(records, columns))
    else:
        ctx.console.print(_table(records, engine))
    threshold = engine.config.evaluation.threshold
    done = len(records) - len(failed)
    where = f" -> {shown(out)}" if out is not None else ""
    adapted = ", batch-norm statistics of these images" if args.adapt_bn else ""
    ctx.console.print(
        f"{done} image(s) predicted, {len(failed)} skipped (decisions at the run's threshold "
        f"{threshold}{adapted}){where}"
    )
    if explainer is not None:
        explainer.finish()
        ctx.console.print(f"{len(explainer.rows)} heatmaps written to {shown(args.explain)}")
    return 0


def _table(records: list[dict[str, Any]], engine) -> Table:
    """The predictions as a terminal table: the image, its RoI and each task's result."""
    shown_records = records[:MAX_TABLE_ROWS]
    title = "predictions" + (
        f" (the first {MAX_TABLE_ROWS} of {len(records)}; --out writes them all)"
        if len(records) > MAX_TABLE_ROWS
        else ""
    )
    table = Table(title=title)
    table.add_column("image")
    table.add_column("RoI")
    for head in engine.heads:
        table.add_column(head.name, justify="right")
    for head in engine.dense_heads:
        table.add_column(f"{head.name} area", justify="right")
    table.add_column("note")
    for record in shown_records:
        if record["error"]:
            cells = [""] * (len(engine.heads) + len(engine.dense_heads))
            table.add_row(shown(record["image_id"]), "-", *cells, shown(record["error"], 200))
            continue
        box = ",".join(str(record[k]) for k in ("x0", "y0", "x1", "y1"))
        cells = [_task_cell(record, head) for head in engine.heads]
        cells += [f"{record[f'{head.name}_area']:.3f}" for head in engine.dense_heads]
        note = shown(record["warning"], 200) if record["warning"] else ""
        table.add_row(shown(record["image_id"]), f"{record['roi_source']} {box}", *cells, note)
    return table


def _task_cell(record: dict[str, Any], head) -> str:
    """``0.873 -> 1`` for a binary task, ``her2 (0.61)`` for a multiclass one."""
    decision = record[f"{head.name}_pred"]
    if head.kind == "binary":
        return f"{record[f'{head.name}_prob']:.3f} -> {decision}"
    return f"{shown(decision, 200)} ({record[f'{head.name}_prob_{decision}']:.2f})"


@hookimpl
def mtl_register_commands(registry):
    registry.register(
        "predict",
        Command(
            "a trained model's predictions for new images (files, folders, manifests, "
            "DICOM): a CSV or a table, optionally with Grad-CAM overlays",
            add_arguments,
            run_predict,
        ),
    )
