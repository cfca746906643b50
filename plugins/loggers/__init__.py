"""The built-in experiment loggers: ``tensorboard`` and ``mlflow`` (each an optional extra,
``pip install 'mtlkit[tensorboard]'`` / ``'mtlkit[mlflow]'``), imported only when a run
uses them."""
