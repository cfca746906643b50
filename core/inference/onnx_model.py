"""The ``onnx`` inference path: a model's forward pass as an ONNX Runtime session, built in
memory with the exporter ``mtl export`` uses too (:func:`~mtlkit.inference.onnx_graph.onnx_proto`).

Only the network is exported (normalised images in, each task's logits out); the heads'
probabilities, the mirror image and the constraints' adjustment stay in PyTorch
(:func:`~mtlkit.inference.outputs.predicted_outputs`), so one graph serves evaluation with
and without test-time augmentation.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlkit.inference.onnx_graph import onnx_proto

INPUT_NAME = "normalised_images"
OUTPUT_PREFIX = "logits."


class _TupleOutputs(nn.Module):
    """``model``'s ``{task: logits}`` as a tuple in a fixed order (ONNX outputs are a list)."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(images)
        return tuple(outputs[name] for name in self.names)


class OnnxForward:
    """``forward(images) -> {task: logits}`` computed by ONNX Runtime's CPU provider from a
    graph of eval-mode ``model`` (which is only read, never changed), with ``threads``
    intra-op threads (torch's own count, so ``training.threads`` applies to both)."""

    def __init__(self, model: nn.Module, example: torch.Tensor, threads: int):
        import onnxruntime

        with torch.no_grad():
            self.names = list(model(example).keys())
        example = example[:2] if len(example) >= 2 else example.repeat(2, 1, 1, 1)
        outputs = [OUTPUT_PREFIX + name for name in self.names]
        graph = _TupleOutputs(model, self.names).eval()
        proto = onnx_proto(graph, example.cpu(), INPUT_NAME, outputs)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self._outputs = outputs

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        arrays = self.session.run(self._outputs, {INPUT_NAME: images.contiguous().numpy()})
        return {name: torch.from_numpy(a) for name, a in zip(self.names, arrays, strict=True)}
