"""A trained model for deployment outside mtlkit: ``mtl export --format onnx``.

``graph`` is the network a deployer runs (uint8 RoIs in, each task's probabilities out),
``metadata`` what the file says about it (preprocessing, tasks, provenance) and how that is
read back, ``onnx_file`` the export itself, checked in ONNX Runtime before it is written.
"""
