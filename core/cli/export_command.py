"""``mtl export``: a trained model as a file other runtimes load (ONNX)."""

from __future__ import annotations

import argparse

from mtlkit.cli.base import Command, CommandContext
from mtlkit.export.onnx_file import export_onnx
from mtlkit.progress import Progress
from mtlkit.text import shown


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="weights saved by a run (.safetensors), or a run directory (its first fold's "
        "and seed's best checkpoint)",
    )
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="onnx (default)")
    parser.add_argument(
        "--out", metavar="FILE", help="the file to write (default: beside the checkpoint, .onnx)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    parser.add_argument(
        "--tta",
        choices=["hflip", "none"],
        help="mirror-image test-time augmentation inside the graph (default: the "
        "checkpoint's evaluation.tta)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress messages")


def _export(args: argparse.Namespace, ctx: CommandContext) -> int:
    show = not args.quiet and ctx.err.is_terminal
    with Progress(enabled=show, console=ctx.err) as progress:
        outcome = export_onnx(
            args.checkpoint,
            args.out,
            force=args.force,
            tta=args.tta,
            host=ctx.host,
            progress=progress,
        )
    document = outcome.metadata
    outputs = [t["output"] for t in document["tasks"]]
    outputs += [t["raw_output"] for t in document["tasks"] if t["raw_output"]]
    ctx.console.print(
        f"outputs: {shown(', '.join(outputs))}; input {document['preprocessing']['input']} "
        f"uint8 (batch, 1, {document['preprocessing']['image_size']}, "
        f"{document['preprocessing']['image_size']}); tta in the graph: "
        f"{document['tta']['method']}"
    )
    ctx.console.print(
        f"checked in ONNX Runtime: max |ONNX - PyTorch| = {outcome.max_difference:.2g}"
    )
    ctx.console.print(f"written: {shown(outcome.path)}")
    return 0


def export_commands() -> dict[str, Command]:
    return {
        "export": Command(
            "export a trained checkpoint to ONNX (normalisation, constraints' output "
            "adjustment and one output per task inside the graph; preprocessing, tasks and "
            "provenance in its metadata)",
            _export_arguments,
            _export,
        )
    }
