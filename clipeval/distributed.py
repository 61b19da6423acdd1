"""The ranks of a torchrun launch: which share of the work each process does, and how the shares meet.

``torchrun --nproc_per_node N -m clipeval task=... model=...`` (``torch.distributed.run``) starts N
copies of the run with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
set. :func:`joined` joins them into one process group: NCCL when the run's device is CUDA (each rank
on GPU ``LOCAL_RANK``), gloo otherwise (CPU). Outside torchrun it does nothing and :func:`world` is a
world of one, so every caller has one code path.

All ranks run the same configuration through the same code, so they reach the same collective calls in
the same order: each encodes its :meth:`World.span` of a dataset's chunks (clipeval.features.encode) or
of an attack's batches (clipeval.evaluators.adversarial), :meth:`World.each` gives every rank all the
results in rank order, and :meth:`World.on_main` and :meth:`World.broadcast` give every rank what rank 0
computed or decided (text prototypes, a cache hit). Every rank then holds the same numbers; rank 0 alone
writes the results (clipeval.run.runner). A failure inside ``each`` or ``on_main`` is raised on every
rank, so the ranks stop at the same point and rank 0 still writes what finished.

A rank that fails exits non-zero, and torchrun then stops the others; collectives wait at most
:data:`TIMEOUT` for a rank that is still working (a slow shard, a cache lock held by another run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from clipeval.errors import ClipevalError

T = TypeVar("T")

#: how long a collective waits for the slowest rank (encoding a shard of a large dataset on CPUs takes hours)
TIMEOUT = datetime.timedelta(hours=12)


@dataclasses.dataclass(frozen=True)
class World:
    """This process's rank among ``size`` (rank 0 of 1 outside torchrun), its GPU index on its node, the backend."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the rank that decides what the cache holds and writes the results."""
        return self.rank == 0

    def span(self, n: int) -> range:
        """This rank's contiguous share of ``n`` items (the first ``n % size`` ranks get one more).

        The spans of all ranks are disjoint, in rank order, and cover ``range(n)``; rank 0's is never shorter
        than another's, and a rank gets none when ``n < size``."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))

    def gather(self, share: Any) -> list[Any]:
        """Every rank's ``share`` (picklable), in rank order, on every rank (``all_gather_object``)."""
        if not self.distributed:
            return [share]
        import torch.distributed as dist

        shares: list[Any] = [None] * self.size
        dist.all_gather_object(shares, share)
        return shares

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (picklable) on every rank (``broadcast_object_list``); the others' are ignored."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def each(self, work: Callable[[], T], what: str) -> list[T]:
        """``work()`` on every rank, then every rank's result in rank order on every rank.

        When ``work`` raises on some rank, every rank raises, so that all of them leave at the same point
        (and the run's evaluator failure is the same on each): the failing rank its own exception, the others
        a ClipevalError naming it and its message. ``what``: what the ranks were doing, for that message; a
        rank that meets another doing something else raises :class:`RanksOutOfStep` (see :func:`in_step`)."""
        if not self.distributed:
            return [work()]
        result, error = _attempt(work)
        shares = self.gather((what, result, _message(error)))
        _check_step(shares, what, self.rank)
        if error is not None:
            raise error
        _raise_first_failure([(share[1], share[2]) for share in shares], self.size, what)
        return [share[1] for share in shares]

    def agree(self, work: Callable[[], T], what: str) -> T:
        """``work()`` on every rank, its own result once every rank finished it: when it raised on some rank,
        every rank raises, as :meth:`each` does (only whether each rank failed travels, not the results)."""
        if not self.distributed:
            return work()
        result, error = _attempt(work)
        shares = self.gather((what, None, _message(error)))
        _check_step(shares, what, self.rank)
        if error is not None:
            raise error
        _raise_first_failure([(None, share[2]) for share in shares], self.size, what)
        return result  # type: ignore[return-value]

    def on_main(self, work: Callable[[], T], what: str) -> T:
        """``work()`` on rank 0 alone, its result on every rank (:meth:`broadcast`); when it raises on rank 0, the
        other ranks raise a ClipevalError naming it, as :meth:`each` does."""
        if not self.distributed:
            return work()
        result, error = _attempt(work) if self.is_main else (None, None)
        shared = self.broadcast((what, result, _message(error)))
        _check_step([shared], what, self.rank)
        if error is not None:
            raise error
        _raise_first_failure([(shared[1], shared[2])], self.size, what)
        return shared[1]


class RanksOutOfStep(ClipevalError):
    """Two ranks met at different steps: one of them failed where the others could not know it."""


_out_of_step = False


def in_step() -> bool:
    """False once the ranks met at different steps: no collective can be trusted to pair up any more, so the run
    ends on each rank without waiting for the others (rank 0 still writes what finished)."""
    return not _out_of_step


def _attempt(work: Callable[[], T]) -> tuple[T | None, Exception | None]:
    try:
        return work(), None
    except Exception as exc:  # KeyboardInterrupt is not coordinated: torchrun stops every rank
        return None, exc


def _message(error: Exception | None) -> str | None:
    return None if error is None else f"{type(error).__name__}: {error}"


def _check_step(shares: list[Any], what: str, rank: int) -> None:
    global _out_of_step
    for other, share in enumerate(shares):
        if not (isinstance(share, tuple) and len(share) == 3 and share[0] == what):
            _out_of_step = True
            doing = share[0] if isinstance(share, tuple) and share and isinstance(share[0], str) else "elsewhere"
            raise RanksOutOfStep(
                f"The ranks are out of step: rank {rank} was {what} while rank {other} was {doing}. A rank failed "
                "where the others could not know it (its message is above); the run ends on every rank."
            )


def _raise_first_failure(shares: list[tuple[Any, str | None]], size: int, what: str) -> None:
    failed = [(rank, message) for rank, (_, message) in enumerate(shares) if message is not None]
    if failed:
        rank, message = failed[0]
        raise ClipevalError(f"Rank {rank} of {size} failed while {what}: {message}")


_current = World()


def world() -> World:
    """The world of the running process: set by :func:`joined`, a world of one otherwise."""
    return _current


def launched_ranks() -> tuple[int, int]:
    """(rank, world size) that torchrun put in the environment; (0, 1) when not launched by it."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


@contextlib.contextmanager
def joined(device: str) -> Iterator[World]:
    """Join torchrun's process group for the block, and leave it after; a world of one outside torchrun.

    ``device``: the run's ``runtime.device`` setting (``auto``, ``cpu``, ``cuda``, ``cuda:K``). CUDA ranks use
    NCCL and GPU ``LOCAL_RANK`` (``cuda:K`` is refused: every rank would use GPU K); the others gloo.
    Raises ClipevalError when CUDA is asked for but the node has fewer GPUs than ranks on it.
    """
    global _current
    rank, size = launched_ranks()
    if size <= 1:
        yield _current
        return
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if device.startswith("cuda:"):
            raise ClipevalError(
                f"runtime.device={device} under torchrun would put every rank on one GPU. Use runtime.device=cuda "
                "(or auto): each rank then uses the GPU of its LOCAL_RANK."
            )
        if local_rank >= torch.cuda.device_count():
            raise ClipevalError(
                f"Rank {rank} has LOCAL_RANK {local_rank} but this node has {torch.cuda.device_count()} GPU(s): "
                "start at most one process per GPU (--nproc_per_node), or use runtime.device=cpu."
            )
        torch.cuda.set_device(local_rank)
    backend = "nccl" if cuda else "gloo"
    try:
        dist.init_process_group(backend, timeout=TIMEOUT)
    except (ValueError, RuntimeError) as exc:  # torch.distributed's DistError is a RuntimeError
        raise ClipevalError(
            f"Could not join the process group of rank {rank} of {size} ({backend}): {exc}. RANK and WORLD_SIZE are "
            "set in the environment: start the run with torchrun, or unset them to run in one process."
        ) from exc
    _current = World(rank, size, local_rank, backend)
    try:
        yield _current
    finally:
        _current = World()
        if in_step():  # no rank tears its connections down while another still uses them (gloo aborts then)
            with contextlib.suppress(RuntimeError):  # a rank has gone already: torchrun reports it
                dist.barrier()
        dist.destroy_process_group()
