"""``--nproc N``: the same ``mtl`` command again under torchrun, in N processes on this
machine (one rank each, DDP; see :mod:`mtlkit.training.distributed`)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence

from mtlkit.errors import TrainingError, UsageError
from mtlkit.training import distributed

# torchrun starts each rank as `python -m mtlkit.cli ...` (the `mtl` script may not be on
# the PATH of every environment, the interpreter running this one is).
MODULE = "mtlkit.cli"


def torchrun_arguments(nproc: int, command: Sequence[str]) -> list[str]:
    """torchrun's arguments for ``command`` (``mtl``'s arguments) in ``nproc`` processes:
    a standalone rendezvous on a free local port, no restarts (a failed rank ends the
    job)."""
    return [
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={nproc}",
        "--max-restarts=0",
        "-m",
        MODULE,
        *command,
    ]


def launch(nproc: int, command: Sequence[str]) -> int:
    """Run ``mtl COMMAND`` in ``nproc`` torchrun processes and wait for them; returns the
    exit code of the rank that failed first (its message was printed by that rank), or 0."""
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, got {nproc}")
    if distributed.launched_by_torchrun():
        raise UsageError("--nproc inside a torchrun job: run the command without --nproc")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    _quiet_torchrun_logs()
    try:
        with _rank_environment():
            run(parse_args(torchrun_arguments(nproc, command)))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode
        if code > 0:
            return code  # the rank printed its own message (exit 2: usage, 1: failure)
        raise TrainingError(
            f"rank {rank} of {nproc} was stopped by signal {-code}; the other ranks were "
            "stopped with it"
        ) from None
    return 0


@contextlib.contextmanager
def _rank_environment() -> Iterator[None]:
    """The ranks' environment while torchrun runs them; this process's is put back after.

    torchrun sets ``OMP_NUM_THREADS=1`` where it is unset (and says so), which would also
    leave numpy's BLAS one thread per rank. The ranks keep this process's setting (all
    cores when unset) and each rank takes its share of torch's threads itself
    (:func:`mtlkit.training.distributed.session`); nothing the ranks prepare depends on
    it (the phantom generator pins its BLAS threads)."""
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = saved or str(os.cpu_count() or 1)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved


def _quiet_torchrun_logs() -> None:
    """torchrun's agent logs each failed rank with its pid and binary; the failed rank has
    printed its own message and :func:`launch` reports the rest, so only its critical
    records are shown. (Each of its loggers has its own level: setting the parent's is
    not enough.)"""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
