"""One distributed toolkit for every ``torch.distributed`` benchmark of the book.

Start-up, shutdown and the few operations each benchmark needs, written once:

* :func:`init` joins the process group that ``torchrun`` (or ``srun torchrun``) describes, or
  makes a world of one when the script was started as a plain ``python`` program. The backend
  follows the device: NCCL when every local rank can have its own CUDA GPU, gloo otherwise.
* :func:`teardown` leaves the group cleanly.
* :func:`run_ranks` is the frame of every benchmark run under ``torchrun``: a watchdog
  that ends a hung run, the group joined, a check of what must split over the ranks
  (one ``error:`` line, exit 2), the work, the ``placement`` of the ranks, the teardown.
* :func:`slowest` and :func:`reduce_floats`: a collective operation, or a timed loop of them, is
  as slow as its slowest rank, so times are reduced with MAX before they are reported.
* :func:`exchange` posts a batch of sends and receives at once and waits for all of them, on
  NCCL (one grouped launch, ``batch_isend_irecv``) and gloo (independent ``isend``/``irecv``).
* :func:`message_sizes`: the geometric sweep of message sizes every benchmark uses.
* :func:`placement`: which node each rank ran on (``$SLURMD_NODENAME`` under SLURM, otherwise
  the host name), so a result shows that a multi-node job really spanned several nodes.
* Bandwidth as nccl-tests reports it (``doc/PERFORMANCE.md`` of nccl-tests):
  ``algbw = bytes / time`` and ``busbw = algbw * factor``:

  ==================================  ==============
  collective                          busbw factor
  ==================================  ==============
  all-reduce                          ``2 (n-1) / n``
  all-gather, reduce-scatter          ``(n-1) / n``
  all-to-all                          ``(n-1) / n``
  broadcast, reduce, send/recv        ``1``
  ==================================  ==============

  ``bytes`` is the size of the user buffer on one rank; for all-gather and reduce-scatter
  nccl-tests counts the *full* buffer, ``n`` times the per-rank chunk.

``torch`` is imported only by the functions that need it: the sizes, the bandwidth bookkeeping
and :func:`placement` outside a process group are cheap to use from an MPI program.
"""

from __future__ import annotations

import faulthandler
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for the annotations; imported lazily at run time
    import torch

__all__ = [
    "BACKENDS",
    "World",
    "algbw_GBps",
    "busbw_GBps",
    "busbw_factor",
    "choose_backend",
    "exchange",
    "free_port",
    "init",
    "message_sizes",
    "node_name",
    "placement",
    "reduce_floats",
    "run_ranks",
    "slowest",
    "teardown",
]

BACKENDS = ("auto", "gloo", "nccl")
"""Values a benchmark's ``--backend`` knob accepts; ``auto`` lets :func:`init` choose."""


@dataclass(frozen=True)
class World:
    """This process's place in the process group."""

    rank: int
    size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_root(self) -> bool:
        """True on rank 0, the rank that prints and returns the result."""
        return self.rank == 0

    def sync(self) -> None:
        """Wait for queued GPU work (a no-op on CPUs): call before reading a clock."""
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)


# --------------------------------------------------------------------------- start and stop
def free_port() -> int:
    """A TCP port on the loopback interface that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def choose_backend(backend: str = "auto") -> str:
    """``gloo`` or ``nccl``: ``auto`` picks NCCL when each local rank can own a CUDA GPU.

    NCCL needs one GPU per rank; on a machine with fewer GPUs than local ranks (or none)
    ``auto`` falls back to gloo. Asking for ``nccl`` without CUDA is a ``ValueError``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if backend == "auto":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        return "nccl" if gpus >= local >= 1 else "gloo"
    if backend == "nccl" and gpus == 0:
        raise ValueError("backend nccl needs CUDA GPUs; use gloo on a machine without one")
    return backend


def init(backend: str = "auto") -> World:
    """Join the process group and return this rank's :class:`World`.

    Under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set) the group is the launcher's; started
    as a plain program the process forms a world of one on a free loopback port, so a
    benchmark also runs, and is tested, without a launcher. With NCCL each rank binds the GPU
    of its ``LOCAL_RANK``. Calling ``init`` when a group already exists returns that group.
    """
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        chosen = str(dist.get_backend())
    else:
        chosen = choose_backend(backend)
    if chosen == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            dist.init_process_group(chosen)
        else:  # not launched by torchrun: a world of one, on an in-memory store
            # (no TCP port to pick, so no race with another process taking it)
            dist.init_process_group(chosen, store=dist.HashStore(), rank=0, world_size=1)
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank,
                 backend=chosen, device=device)


def teardown(barrier: bool = True) -> None:
    """Leave the process group (after a barrier, so no rank quits while others still talk)."""
    import torch.distributed as dist

    if dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def start_watchdog(seconds: float) -> None:
    """After ``seconds``, print every thread's traceback and exit (a hung collective never
    returns by itself); :func:`stop_watchdog` cancels it.

    ``faulthandler`` writes to a file descriptor: a notebook's kernel replaces
    ``sys.stderr`` with a stream that may have none, so the first stream that has one is
    used (the process's own standard error, else the null device: the exit still comes).
    """
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None and stream.fileno() >= 0:
                faulthandler.dump_traceback_later(float(seconds), exit=True, file=stream)
                return
        except (AttributeError, OSError, ValueError):
            continue
    sink = open(os.devnull, "w")  # noqa: SIM115 - kept open while the watchdog may fire
    faulthandler.dump_traceback_later(float(seconds), exit=True, file=sink)


def stop_watchdog() -> None:
    """Cancel :func:`start_watchdog`."""
    faulthandler.cancel_dump_traceback_later()


def run_ranks(body: Callable[[World], dict[str, Any]], *, backend: str = "auto",
              hang_timeout_s: float | None = None,
              check_world: Callable[[World], None] | None = None) -> dict[str, Any] | None:
    """Run ``body(world)`` on every rank of the group and return its result on rank 0.

    The frame every distributed benchmark needs, written once:

    1. a watchdog (:func:`start_watchdog`): after ``hang_timeout_s``
       seconds the process prints every thread's traceback and exits, because a hung
       collective never returns by itself;
    2. :func:`init` with ``backend``;
    3. ``check_world(world)``, which raises ``ValueError`` for what cannot split over
       ``world.size`` ranks: rank 0 prints it as one ``error:`` line, every rank leaves
       the group and exits with status 2;
    4. ``body(world)`` on every rank (it may call collectives; its dict is kept);
    5. :func:`placement` (a collective), :func:`teardown`, the watchdog cancelled.

    Rank 0 gets ``body``'s dict with ``world``, ``ranks``, ``backend``, ``device`` and
    ``placement`` added where ``body`` did not set them; other ranks get ``None``.
    """
    if hang_timeout_s is not None:
        start_watchdog(float(hang_timeout_s))
    try:
        world = init(backend)
        if check_world is not None:
            try:
                check_world(world)
            except ValueError as err:
                if world.is_root:
                    print(f"error: {err}", file=sys.stderr, flush=True)
                teardown()
                raise SystemExit(2) from None
        result = body(world)
        where = placement()
        teardown()
    finally:
        if hang_timeout_s is not None:
            stop_watchdog()
    if not world.is_root:
        return None
    for key, value in (("world", world.size), ("ranks", world.size),
                       ("backend", world.backend), ("device", str(world.device)),
                       ("placement", where)):
        result.setdefault(key, value)
    return result


# --------------------------------------------------------------------------- reductions
def _stat_device(group: Any = None) -> torch.device:
    """Where a small tensor must live for the backend of ``group`` to reduce it."""
    import torch
    import torch.distributed as dist

    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_floats(values: Sequence[float], op: str = "max", group: Any = None) -> list[float]:
    """Element-wise ``max``, ``min`` or ``sum`` of ``values`` over the ranks of ``group``.

    Every rank of the group must call it with the same number of values.
    """
    import torch
    import torch.distributed as dist

    ops = {"max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN, "sum": dist.ReduceOp.SUM}
    if op not in ops:
        raise ValueError(f"op must be one of {sorted(ops)}, not {op!r}")
    t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                     device=_stat_device(group))
    dist.all_reduce(t, op=ops[op], group=group)
    return [float(v) for v in t.tolist()]


def slowest(seconds: float, group: Any = None) -> float:
    """The largest of every rank's ``seconds``: the time the whole group took."""
    return reduce_floats([seconds], "max", group)[0]


# --------------------------------------------------------------------------- point to point
def exchange(sends: Sequence[tuple[torch.Tensor, int]],
             recvs: Sequence[tuple[torch.Tensor, int]], group: Any = None) -> None:
    """Post every receive ``(tensor, src)`` and send ``(tensor, dst)`` at once, then wait.

    Posting all of them before waiting avoids the deadlock of two blocking sends facing each
    other. NCCL runs a lone send or receive as a kernel in stream order, so two ranks that each
    queue "receive, then send" would wait for each other for ever: on NCCL the batch goes out
    as one grouped launch (``batch_isend_irecv``). gloo progresses each operation on its own
    and takes them one by one. Empty tensors are skipped. Ranks are global ranks.
    """
    import torch.distributed as dist

    ops = [(dist.irecv, t, peer) for t, peer in recvs if t.numel() > 0]
    ops += [(dist.isend, t, peer) for t, peer in sends if t.numel() > 0]
    if not ops:
        return
    if dist.get_backend(group) == "nccl":
        reqs = dist.batch_isend_irecv([dist.P2POp(fn, t, peer, group) for fn, t, peer in ops])
    else:
        reqs = [fn(t, peer, group=group) for fn, t, peer in ops]
    for req in reqs:
        req.wait()


# --------------------------------------------------------------------------- sizes and nodes
def message_sizes(min_bytes: int, max_bytes: int, factor: int, multiple: int = 1) -> list[int]:
    """``min_bytes``, ``min_bytes * factor``, ... and always ``max_bytes`` itself.

    Each size is rounded down to a multiple of ``multiple`` (an element size, say), and
    duplicates are dropped. Bad bounds raise ``ValueError`` before any work.
    """
    if multiple < 1 or min_bytes < multiple or max_bytes < min_bytes or factor < 2:
        raise ValueError(
            f"need {multiple} <= min_bytes <= max_bytes and factor >= 2; got "
            f"min_bytes={min_bytes}, max_bytes={max_bytes}, factor={factor}")
    sizes, m = [], min_bytes
    while m < max_bytes:
        sizes.append(m - m % multiple)
        m *= factor
    sizes.append(max_bytes - max_bytes % multiple)
    return sorted(set(sizes))


def node_name() -> str:
    """The SLURM node this process runs on (``$SLURMD_NODENAME``), else the host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def placement(group: Any = None) -> list[dict[str, Any]]:
    """``[{"rank": r, "node": name}, ...]`` for every rank, gathered on all ranks.

    A collective: every rank of the group must call it. Outside a process group it
    describes this process alone.
    """
    import torch.distributed as dist

    mine = {"rank": dist.get_rank() if dist.is_initialized() else 0, "node": node_name()}
    if not dist.is_initialized() or dist.get_world_size(group) == 1:
        return [mine]
    everyone: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, mine, group=group)
    return sorted(everyone, key=lambda p: p["rank"])


# --------------------------------------------------------------------------- nccl-tests bandwidth
_OP_ALIASES: dict[str, str] = {
    "allreduce": "allreduce", "all_reduce": "allreduce", "all-reduce": "allreduce",
    "allgather": "allgather", "all_gather": "allgather", "all-gather": "allgather",
    "reducescatter": "reducescatter", "reduce_scatter": "reducescatter",
    "reduce-scatter": "reducescatter",
    "alltoall": "alltoall", "all_to_all": "alltoall", "all-to-all": "alltoall",
    "broadcast": "broadcast", "bcast": "broadcast",
    "reduce": "reduce",
    "sendrecv": "sendrecv", "send_recv": "sendrecv",
}


def _canonical_op(op: str) -> str:
    key = op.strip().lower()
    if key not in _OP_ALIASES:
        known = sorted(set(_OP_ALIASES.values()))
        raise ValueError(f"unknown collective {op!r}; expected one of {known}")
    return _OP_ALIASES[key]


def algbw_GBps(nbytes: float, t: float) -> float:
    """Algorithm bandwidth in GB/s (1 GB = 1e9 bytes): ``nbytes / t``.

    ``nbytes`` is the message size per rank as nccl-tests counts it, ``t`` the time of one
    operation in seconds.
    """
    if t <= 0:
        raise ValueError(f"time must be positive, got {t!r}")
    if nbytes < 0:
        raise ValueError(f"nbytes must be non-negative, got {nbytes!r}")
    return nbytes / t / 1e9


def busbw_factor(op: str, world: int) -> float:
    """The nccl-tests factor that turns algbw into busbw for ``op`` on ``world`` ranks.

    ``op`` accepts ``allreduce``/``all_reduce``/``all-reduce`` style spellings of:
    allreduce, allgather, reducescatter, alltoall, broadcast, reduce, sendrecv.
    """
    if world < 1:
        raise ValueError(f"world size must be >= 1, got {world!r}")
    name = _canonical_op(op)
    n = world
    if name == "allreduce":
        return 2.0 * (n - 1) / n
    if name in ("allgather", "reducescatter", "alltoall"):
        return (n - 1) / n
    return 1.0  # broadcast, reduce, sendrecv


def busbw_GBps(op: str, nbytes: float, t: float, world: int) -> float:
    """Bus bandwidth in GB/s: ``algbw_GBps(nbytes, t) * busbw_factor(op, world)``."""
    return algbw_GBps(nbytes, t) * busbw_factor(op, world)
