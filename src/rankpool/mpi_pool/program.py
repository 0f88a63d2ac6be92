"""The pool program: every rank's life, from ``MPI_Init`` to its exit status.

All ranks find the topology, share the pool's token and their pids, and unlink MPICH's file of
their node once every rank has it mapped; rank 0 starts watching the keepers (:mod:`.deaths`)
and tells the ranks on other nodes where to send their death notes; then rank 0 runs
:class:`~.pool.RankZero` and every other rank a :class:`~.worker.Worker`. A pool that lost
ranks ends without ``MPI_Finalize`` on every rank (MPICH's would wait for the dead ones
forever): it flushes its logs and exits with its status.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from mpi4py import MPI

from ..collector import settle_for_service
from ..exit_codes import ExitCode
from ..private_files import PrivateFileHandler, private_dir
from ..shm import arena as shm
from ..shm import run as shm_run
from ..task.initializer import read_initializer
from ..task.node_resources import apply_binding
from .config import PoolConfig
from .deaths import DeathWatch, Identity, note_dir
from .doorbell import Doorbell, new_token
from .initializer import initialize
from .interrupts import Interrupts
from .keeper import Link
from .mpich_files import abort, release
from .node_names import node_name
from .pool import RankZero
from .rank_losses import abort_for_stuck
from .subcomms import discover_topology
from .worker import Worker

log = logging.getLogger(__name__)

#: signals that stop a pool cleanly (Ctrl-C forwarded by mpiexec; a job's cancel)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_pool(cfg: PoolConfig, link: Link | None = None) -> int:
    """Run the pool on ``COMM_WORLD``; every rank calls this and returns 0 on a clean end.
    ``link``: this rank's keeper (see :mod:`.keeper`)."""
    comm = MPI.COMM_WORLD.Dup()
    topology = discover_topology(comm)
    rank = comm.Get_rank()
    token = comm.bcast(new_token() if rank == 0 else None, root=0)
    identities = comm.gather(Identity(os.getpid(), link.keeper_pid if link else 0), root=0)
    release(comm)  # MPICH's file in /dev/shm: nothing left however the job ends
    near = topology.nodes[0] if topology.nodes else []  # worker ranks on rank 0's node
    far = [r for node in topology.nodes[1:] for r in node]  # and on the other nodes
    _setup_logging(cfg, rank)
    notes = note_dir(token)
    watch = None
    if rank == 0:
        assert identities is not None  # gathered on rank 0
        watch = DeathWatch({r: identities[r] for r in near}, notes, topology.hosts[0],
                           far={r: identities[r] for r in far})
    box = comm.bcast(watch.box_address if watch is not None else "", root=0)
    names = comm.allgather(node_name())  # every rank's node, as the batch system names it
    pids = comm.allgather(os.getpid())
    if link is not None:
        os.makedirs(notes, mode=0o700, exist_ok=True)
        link.serving(rank, notes, box if rank in far else "", names[rank])
    status = 0
    lost = False  # whether some rank of the pool died: no MPI_Finalize then
    bell = Doorbell.open(token, rank) if rank == 0 or rank in near else None
    try:
        apply_binding(rank, topology.nodes, cfg.resources)  # before any user code runs
        init_error = initialize(comm, read_initializer(cfg.initializer),
                                [r for node in topology.nodes for r in node])
        if watch is not None:  # rank 0
            pool = RankZero(cfg, comm, topology, bell, near, init_error, watch)
            settle_for_service()
            try:
                with Interrupts(STOP_SIGNALS, comm, on_first=pool.interrupt):
                    status = pool.run()
            finally:
                watch.close()
            if pool.mpi.stuck:
                abort_for_stuck(comm, pool.mpi.stuck, ExitCode.STUCK)
            lost = bool(pool.mpi.lost)
        else:
            worker = Worker(comm, arena=result_arena(cfg), bell=bell, link=link, node_names=names,
                            interrupts=Interrupts(STOP_SIGNALS, comm), belled=near,
                            pids=pids, traced=cfg.trace)
            worker.serve()
            lost = bool(worker.lost_peers)
    except BaseException:
        log.critical("rank %d failed; aborting the pool", rank, exc_info=True)
        sys.stderr.flush()
        abort(comm, 1)
    if bell is not None:
        bell.close()
    if link is not None:
        link.finished()
    if lost:
        _exit_without_finalize(notes, status)
    comm.Free()
    return status


def _exit_without_finalize(notes: str, status: int) -> None:
    """End this rank of a pool that lost ranks: ``MPI_Finalize`` would wait for them."""
    log.info("ending without MPI_Finalize: ranks of this pool died")
    try:
        os.rmdir(notes)
    except OSError:
        pass
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def result_arena(cfg: PoolConfig) -> shm.Arena | None:
    """A worker rank's shared-memory arena for its results, when the front-end offered the
    plane (``--shared-memory``) and this rank sees its probe (same host and ``/dev/shm``)."""
    if not cfg.shared_memory:
        return None
    if not shm_run.shares_front_end_memory(cfg.shared_memory):
        log.info("shared memory: the front-end's %s is not visible here; results travel as "
                 "messages", shm_run.probe_path(cfg.shared_memory))
        return None
    return shm.Arena(cfg.shared_memory, cap=cfg.shared_memory_cap)


def _setup_logging(cfg: PoolConfig, rank: int) -> None:
    level = getattr(logging, cfg.log_level.upper())
    fmt = f"%(asctime)s rank {rank} %(name)s %(levelname)s %(message)s"
    root = logging.getLogger("rankpool")
    root.setLevel(level)
    if cfg.run_dir and (rank == 0 or cfg.worker_debug):
        private_dir(cfg.run_dir)
        name = f"pool-{cfg.block_id}.log" if rank == 0 else f"pool-{cfg.block_id}-rank{rank}.log"
        handler: logging.Handler = PrivateFileHandler(os.path.join(cfg.run_dir, name))
    else:
        handler = logging.StreamHandler(sys.stderr)
        if rank != 0 and not cfg.worker_debug:
            level = max(level, logging.WARNING)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)
