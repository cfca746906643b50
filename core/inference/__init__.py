"""How a trained model is run to predict: the inference paths (eager, BatchNorm folded
into the convolutions, ``torch.compile``, bf16 autocast, ONNX Runtime) behind
``evaluation.inference``.

``outputs`` is what every path computes (each task's probabilities from one batch),
``folding`` the frozen copy with BatchNorm folded away, ``onnx_graph`` a module as an ONNX
graph in memory (``mtl export`` writes one), ``onnx_model`` the model as an ONNX Runtime
session, ``paths`` the choice of a path and the cached copy each one runs. ``mtlkit.export``
builds on this layer, never the other way round.
"""
