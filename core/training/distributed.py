"""Training under ``torchrun``: the process group, each rank's share of the work, and what
the ranks exchange.

``torchrun`` starts one process per rank with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
``MASTER_ADDR``/``MASTER_PORT`` in their environment; :func:`session` joins them into one
process group (gloo on the CPU, NCCL on CUDA, each rank on ``cuda:LOCAL_RANK``). Training
then runs as PyTorch DistributedDataParallel: every rank trains on its shard of each
epoch's shuffled order (:class:`ShardedSampler`), the gradients are averaged, and
evaluation shards the rows, gathers every rank's outputs in the original row order and
scores them once (:func:`gathered`). Only rank 0 writes files (:func:`is_main`).

Without a process group every function here is the single-process identity, so the rest of
mtlkit calls them unconditionally.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from mtlkit.config.schema import TrainingConfig
from mtlkit.errors import ConfigError, TrainingError, UsageError
from mtlkit.training.device import resolve_device

T = TypeVar("T")

# What torchrun sets in every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of a ``torchrun`` job (its variables are set)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def active() -> bool:
    """Whether a process group is initialised (by :func:`session` or by the caller)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank; 0 without a process group."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of ranks; 1 without a process group."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes files and prints: rank 0 of the process group, or of
    the torchrun job before its group exists, or the only process."""
    if active():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``); 0 outside torchrun."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def rank_device(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun, so that
    each rank of a machine has its own GPU; any other device is left as it is."""
    if active() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank())
    return device


@contextlib.contextmanager
def session(training: TrainingConfig) -> Iterator[None]:
    """The process group of a torchrun job for the duration of a run.

    Outside torchrun, or when the caller has initialised a group already, this does
    nothing. Otherwise it initialises gloo (CPU) or NCCL (CUDA) from torchrun's
    environment with ``training.distributed.timeout``: a rank that waits longer than that
    for the others (one of them failed or hangs) raises instead of waiting for ever.
    """
    if active() or not launched_by_torchrun():
        yield
        return
    device = resolve_device(training.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        if device.index is not None and int(os.environ["WORLD_SIZE"]) > 1:
            problem = "under torchrun each process takes cuda:LOCAL_RANK: set cuda or auto"
            raise ConfigError([("training.device", problem)])
        if local_rank() >= torch.cuda.device_count():
            raise UsageError(
                f"LOCAL_RANK is {local_rank()} but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s): start at most that many "
                "processes per machine (--nproc)"
            )
        torch.cuda.set_device(local_rank())
    if device.type not in ("cpu", "cuda"):
        where = "training.device"
        raise ConfigError([(where, "torchrun training needs the CPU (gloo) or CUDA (NCCL)")])
    if not training.threads:  # the ranks of a machine share its cores (fit sets threads)
        ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks_here))
    timeout = dt.timedelta(seconds=training.distributed.timeout)
    try:
        dist.init_process_group(backend, timeout=timeout)
    except (RuntimeError, ValueError) as exc:
        raise TrainingError(
            f"could not join the torchrun process group ({backend}, rank "
            f"{os.environ.get('RANK')} of {os.environ.get('WORLD_SIZE')}): {exc}"
        ) from None
    try:
        yield
    finally:
        dist.destroy_process_group()


def from_main(compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0, its result sent to every rank (what rank 0 alone can see:
    the run directory, the saved training state). An error raised on rank 0 is raised on
    every rank, so that no rank waits for a value that will never come."""
    if not active():
        return compute()
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = (True, compute())
        except Exception as exc:
            box[0] = (False, _sendable(exc))
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        value.reported_by_rank_0 = True  # the CLI leaves the message to rank 0
        raise value
    return value


def _sendable(exc: Exception) -> Exception:
    """``exc`` itself when it reaches the other ranks intact, else its message in an error
    of the same exit code."""
    try:
        if str(pickle.loads(pickle.dumps(exc))) == str(exc):
            return exc
    except Exception:
        pass
    return UsageError(str(exc)) if isinstance(exc, UsageError) else TrainingError(str(exc))


def check_same(value: str, what: str) -> None:
    """Refuse a job whose ranks disagree on ``value`` (e.g. the data's fingerprint: each
    machine reads its own copy of the data, and they must be the same data)."""
    if not active():
        return
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    differing = [r for r, v in enumerate(values) if v != values[0]]
    if differing:
        raise TrainingError(
            f"the ranks disagree on {what}: rank(s) {', '.join(map(str, differing))} differ "
            "from rank 0; every machine needs the same data and config"
        )


def rank_seed(seed: int, epoch: int) -> int:
    """The seed of this rank's random augmentation in ``epoch``: distinct per rank (so that
    the ranks do not draw the same crops), and a function of the seed and epoch alone, so
    that a resumed fit draws what the uninterrupted one drew."""
    text = f"{seed}|{epoch}|{rank()}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") % 2**63


# --- training ------------------------------------------------------------------------------


class ShardedSampler(Sampler[int]):
    """Each epoch one shuffled order of ``size`` rows, drawn from ``generator``, and every
    ``world``-th row of it from ``rank`` on: the ranks' shards are disjoint and together
    cover every row (the first rows are repeated to make the shards equal, as
    :class:`torch.utils.data.DistributedSampler` does, so every rank takes the same
    number of steps).

    Unlike DistributedSampler's ``set_epoch``, the per-epoch reshuffle comes from
    ``generator`` itself, seeded alike on every rank: it advances once per epoch and is
    saved in the training state, so a resumed fit continues with the very order the
    uninterrupted one would have drawn. With one rank the order is
    :class:`~torch.utils.data.RandomSampler`'s for the same generator.
    """

    def __init__(self, size: int, rank: int, world: int, generator: torch.Generator):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        self.size, self.rank, self.world, self.generator = size, rank, world, generator

    def __len__(self) -> int:
        return -(-self.size // self.world)  # ceil: the padded shard

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.size, generator=self.generator)
        # RandomSampler draws a second permutation for its (here empty) remainder; so do
        # we, so that one rank's orders stay those of a run without torchrun.
        torch.randperm(self.size, generator=self.generator)
        padded = len(self) * self.world
        if padded > self.size:
            order = torch.cat([order, order[: padded - self.size]])
        yield from order[self.rank : padded : self.world].tolist()


def wrap_model(model: nn.Module, device: torch.device, sync_batchnorm: bool) -> nn.Module:
    """``model`` as DistributedDataParallel (the same module, its gradients averaged over
    the ranks at each backward); the plain model without a process group."""
    if not active():
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            where = "training.distributed.sync_batchnorm"
            raise ConfigError(
                [(where, "needs CUDA: torch's SyncBatchNorm does not run on the CPU")]
            )
        # Replaces the batch-norm layers in place inside ``model``'s children, so the
        # unwrapped model the engine saves and evaluates holds the same layers.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def average_other_gradients(
    optimizer: torch.optim.Optimizer, parameters: Iterable[nn.Parameter]
) -> None:
    """Average the gradients of ``parameters`` (trained beside the DDP model, e.g. a task
    weighting's learned weights) over the ranks before each step of ``optimizer``, as DDP
    does for the model's. Does nothing without a process group or such parameters."""
    params = [p for p in parameters if p.requires_grad]
    if not active() or not params:
        return

    def hook(_optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        # Every rank reduces the same flat buffer (zeros where a gradient is missing), so
        # the collective matches across ranks; DDP's own reductions have finished by now.
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        )
        dist.all_reduce(flat)
        flat /= world_size()
        offset = 0
        for p in params:
            n = p.numel()
            if p.grad is not None:
                p.grad.copy_(flat[offset : offset + n].view_as(p))
            offset += n

    optimizer.register_step_pre_hook(hook)


def over_ranks(means: Sequence[float], counts: Sequence[int]) -> tuple[list[float], list[int]]:
    """Per-rank ``means`` (an epoch's losses) averaged over the ranks and ``counts`` (its
    images) summed: the epoch's figures of all ranks, as history.json records them."""
    if not active():
        return list(means), list(counts)
    # NCCL reduces CUDA tensors only; gloo CPU ones.
    device = torch.device("cuda", torch.cuda.current_device()) if _nccl() else None
    values = torch.tensor([*means, *counts], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    n = len(means)
    return (values[:n] / world_size()).tolist(), [round(c) for c in values[n:].tolist()]


def _nccl() -> bool:
    return dist.get_backend() == "nccl"


@torch.no_grad()
def broadcast_buffers(modules: Iterable[nn.Module]) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank. DDP sends them at the
    start of each forward, so after an epoch's last step each rank holds its own: this
    makes the validation and the saved model (rank 0's) agree on every rank."""
    if not active():
        return
    for module in modules:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


# --- evaluation ----------------------------------------------------------------------------


def shard_bounds(total: int, world: int) -> list[tuple[int, int]]:
    """The contiguous ``[start, stop)`` rows of each rank when ``total`` rows are shared
    by ``world`` ranks (the first ``total % world`` ranks take one row more)."""
    base, extra = divmod(total, world)
    bounds, start = [], 0
    for r in range(world):
        stop = start + base + (1 if r < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


Outputs = tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None, dict[str, np.ndarray]]


def gathered(forward: Callable[[torch.Tensor], Outputs], rows: torch.Tensor) -> Outputs:
    """``forward(rows)`` computed over all ranks: each rank runs its contiguous shard of
    ``rows``, the shards' outputs (probabilities, raw probabilities or None, maps: arrays
    by task) are gathered and joined in rank order, which is the original row order. Every
    rank gets the whole result, so every rank scores the same predictions."""
    if not active():
        return forward(rows)
    start, stop = shard_bounds(len(rows), world_size())[rank()]
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, forward(rows[start:stop]))
    return join_outputs(parts)


def join_outputs(parts: Sequence[Outputs]) -> Outputs:
    """The ranks' outputs, in rank order, as the outputs of all their rows."""

    def joined(dicts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        # A rank with no rows (fewer rows than ranks) holds flat empty arrays: left out.
        return {
            name: np.concatenate([d[name] for d in dicts if len(d[name])] or [dicts[0][name]])
            for name in dicts[0]
        }

    probabilities = joined([p[0] for p in parts])
    raws = [p[1] for p in parts]
    raw = None if any(r is None for r in raws) else joined(raws)
    return probabilities, raw, joined([p[2] for p in parts])
