"""ONNX Runtime's own settings for the ``onnx`` inference path, and int8 quantisation, against
eager fp32: why the shipped session keeps ONNX Runtime's defaults and why no int8 path is
offered (docs/performance.md, "Inference").

    python benchmarks/onnx_settings.py [--model busi|quick] [--epochs 2] [--rounds 12]
        [--run RUN_DIR] [--busi DIR]

The model is trained here briefly, as benchmarks/inference.py does (or read from ``--run``).
Each variant scores batches of 32 of the model's own test RoIs, the variants measured in
alternating rounds in one process; ``speedup`` is the median over rounds of its images/s
over eager's in the same round, with the smallest and largest. Every variant but int8
runs the same graph as the ``onnx`` path; int8 is ONNX Runtime's static QDQ quantisation
(per-channel int8 weights, uint8 activations), calibrated on 256 training RoIs. For each,
``max_abs_probability_difference`` from eager and the test AUC (no test-time
augmentation) say how exact it is. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import ROOT, trained  # noqa: E402  (the sibling script, not a package)

from mtlkit.data.transforms import normalize_batch  # noqa: E402
from mtlkit.evaluation.auc import binary_auc  # noqa: E402
from mtlkit.inference.onnx_graph import onnx_proto  # noqa: E402
from mtlkit.inference.onnx_model import INPUT_NAME, OUTPUT_PREFIX, _TupleOutputs  # noqa: E402

BATCH = 32
CALIBRATION_IMAGES = 256


def sessions(model: torch.nn.Module, example: torch.Tensor, calibration: torch.Tensor) -> dict:
    """Each variant's ``run(images) -> logits`` of the first task."""
    import onnxruntime as ort

    name = next(iter(model(example[:1]).keys()))
    graph = _TupleOutputs(model, [name]).eval()
    proto = onnx_proto(graph, example[:2], INPUT_NAME, [OUTPUT_PREFIX + name]).SerializeToString()

    def session(source, threads: int = torch.get_num_threads(), **settings):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        for key, value in settings.items():
            if key == "config":
                for entry, text in value.items():
                    options.add_session_config_entry(entry, text)
            else:
                setattr(options, key, value)
        run = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"]).run
        return lambda images: torch.from_numpy(run(None, {INPUT_NAME: images.numpy()})[0])

    def eager(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(images)[name]

    return {
        "eager": eager,
        "onnx (shipped: ONNX Runtime defaults)": session(proto),
        "onnx, 1 intra-op thread": session(proto, threads=1),
        "onnx, no thread spinning": session(proto, config={"session.intra_op.allow_spinning": "0"}),
        "onnx, basic graph optimisation": session(
            proto, graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        ),
        "int8 (static QDQ, not exact)": session(quantised(proto, calibration)),
    }


def quantised(proto: bytes, calibration: torch.Tensor) -> bytes:
    """``proto`` quantised to int8, calibrated on ``calibration`` (ONNX Runtime's tools work
    on files: they are written to a temporary folder, removed before this returns)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration.split(BATCH))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch.numpy()}

    with tempfile.TemporaryDirectory(prefix="onnx-settings-") as name:
        folder = Path(name)
        (folder / "model.onnx").write_bytes(proto)
        quant_pre_process(str(folder / "model.onnx"), str(folder / "prepared.onnx"))
        quantize_static(
            str(folder / "prepared.onnx"),
            str(folder / "int8.onnx"),
            Batches(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        return (folder / "int8.onnx").read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["busi", "quick"], default="busi")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--run", type=Path, help="a run dir or checkpoint of the config")
    parser.add_argument("--busi", type=Path, default=ROOT.parent / "shared" / "data" / "busi")
    args = parser.parse_args()
    engine, origin = trained(args.model, args.epochs, args.run, args.busi)
    if engine.config.training.threads:
        torch.set_num_threads(engine.config.training.threads)
    model = engine.model.eval()
    data = engine.data
    test = normalize_batch(data.cache[torch.from_numpy(data.indices("test"))])
    train = normalize_batch(data.cache[torch.from_numpy(data.indices("train"))])
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    variants = sessions(model, test, train[order[:CALIBRATION_IMAGES]])

    task = next(iter(model(test[:1]).keys()))
    column = data.task_names.index(task)
    labels = data.targets[torch.from_numpy(data.indices("test")), column].numpy()
    known = ~np.isnan(labels)
    probabilities = {
        name: torch.sigmoid(torch.cat([run(b) for b in test.split(BATCH)]).float()).reshape(-1)
        for name, run in variants.items()
    }
    batch = test[:BATCH]
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    shuffle = random.Random(0)
    for _ in range(args.rounds):
        shuffle.shuffle(names)
        for name in names:
            start = time.perf_counter()
            variants[name](batch)
            seconds[name].append(time.perf_counter() - start)
    report = {"benchmark": "onnx_settings", "model": args.model, "task": task, **origin}
    report["variants"] = {}
    for name in variants:
        ratios = [e / s for e, s in zip(seconds["eager"], seconds[name], strict=True)]
        p = probabilities[name].numpy()
        report["variants"][name] = {
            "images_per_second": round(BATCH / statistics.median(seconds[name]), 1),
            "speedup": round(statistics.median(ratios), 3),
            "speedup_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "max_abs_probability_difference": float(
                np.abs(p - probabilities["eager"].numpy()).max()
            ),
            "test_auc": round(float(binary_auc(labels[known], p[known])), 5),
        }
        v = report["variants"][name]
        print(
            f"{name:40s} {v['images_per_second']:7.1f} img/s  x{v['speedup']:.2f} "
            f"[{v['speedup_range'][0]:.2f}-{v['speedup_range'][1]:.2f}]  "
            f"|dp| {v['max_abs_probability_difference']:.1e}  AUC {v['test_auc']:.4f}"
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
