"""``python -m mtlkit.cli``: the ``mtl`` command, as torchrun starts it (``-m mtlkit.cli``)."""

import sys

from mtlkit.cli import main

sys.exit(main())
