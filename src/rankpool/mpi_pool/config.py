"""The pool program's typed configuration and its command line."""

from __future__ import annotations

import argparse
import math
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from ..protocol.wire import MAX_MESSAGE_SIZE, check_max_message_size
from ..shm.arena import DEFAULT_CAP
from ..shm.run import check_run_prefix
from ..task.node_resources import NodeResources, node_resources
from .placement.scheduler import DEFAULT_DEPTH, DEFAULT_LEND, check_lend

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")



@dataclass(frozen=True)
class PoolConfig:
    """Everything one pool needs; checked at construction (errors name the option)."""

    interchange: str
    block_id: str
    pool_id: str = ""
    heartbeat_period: float = 2.0
    heartbeat_threshold: float = 10.0
    depth: int = DEFAULT_DEPTH
    lend: int = DEFAULT_LEND      # times a reserved rank may be lent per reservation
    grace: float = 5.0
    run_dir: str = ""
    log_level: str = "INFO"
    worker_debug: bool = False
    server_key: str = ""          # the interchange's CurveZMQ public key file: encrypt when set
    trace: bool = False           # record where and when tasks ran (run_dir/trace-<block>.npz)
    resources: NodeResources = field(default_factory=NodeResources)  # devices, CPU binding
    shared_memory: str = ""       # the front-end's shared-memory run prefix ("": plane off)
    shared_memory_cap: int = DEFAULT_CAP  # bytes of segments one worker rank may hold
    max_lost: float = 0.5         # fraction of worker ranks that may die before the pool drains
    keeper: bool = True           # run each rank under a keeper, so that worker deaths are survived
    max_message_size: int = MAX_MESSAGE_SIZE  # the largest message sent or taken, in bytes
    initializer: str = ""         # file with the pickled (initializer, initargs) ("": none)

    def __post_init__(self) -> None:
        if not self.interchange.startswith(("tcp://", "ipc://")):
            raise ValueError(f"--interchange: expected tcp://HOST:PORT, got {self.interchange!r}")
        if not self.block_id or any(c.isspace() for c in self.block_id):
            raise ValueError(f"--block-id: must be a non-empty word, got {self.block_id!r}")
        for name in ("heartbeat_period", "heartbeat_threshold", "grace"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"--{name.replace('_', '-')}: must be a positive number, "
                                 f"got {value!r}")
        if self.heartbeat_threshold < self.heartbeat_period:
            raise ValueError("--heartbeat-threshold: must not be shorter than --heartbeat-period")
        if self.depth < 1:
            raise ValueError(f"--depth: must be a positive integer, got {self.depth!r}")
        check_lend(self.lend, "--lend")
        if isinstance(self.max_lost, bool) or not isinstance(self.max_lost, (int, float)) \
                or not 0 <= self.max_lost < 1:
            raise ValueError(f"--max-lost: must be a fraction of the worker ranks, at least 0 "
                             f"and below 1, got {self.max_lost!r}")
        if self.trace and not self.run_dir:
            raise ValueError("--trace: needs --run-dir, where the trace is written")
        if self.log_level.upper() not in _LOG_LEVELS:
            raise ValueError(f"--log-level: must be one of {_LOG_LEVELS}, got {self.log_level!r}")
        if self.shared_memory:
            try:
                check_run_prefix(self.shared_memory)
            except ValueError as exc:
                raise ValueError(f"--shared-memory: {exc}") from None
        if isinstance(self.shared_memory_cap, bool) or not isinstance(self.shared_memory_cap, int) \
                or self.shared_memory_cap < 0:
            raise ValueError(f"--shared-memory-cap: must be a non-negative number of bytes, "
                             f"got {self.shared_memory_cap!r}")
        check_max_message_size(self.max_message_size, "--max-message-size")
        if not self.pool_id:
            object.__setattr__(self, "pool_id",
                               f"{self.block_id}.{socket.gethostname()}.{os.getpid()}")

    def to_argv(self) -> list[str]:
        """The command-line arguments that rebuild this config."""
        argv = ["--interchange", self.interchange, "--block-id", self.block_id]
        defaults = PoolConfig.__dataclass_fields__
        for name in ("heartbeat_period", "heartbeat_threshold", "depth", "lend", "grace", "run_dir",
                     "log_level", "server_key", "shared_memory", "shared_memory_cap",
                     "max_lost", "max_message_size", "initializer"):
            value = getattr(self, name)
            if value != defaults[name].default:
                argv += [f"--{name.replace('_', '-')}", str(value)]
        if self.worker_debug:
            argv.append("--worker-debug")
        if self.trace:
            argv.append("--trace")
        if not self.keeper:
            argv.append("--no-keeper")
        return argv + self.resources.to_argv()


def parser(prog: str = "python -m rankpool.mpi_pool") -> argparse.ArgumentParser:
    """The pool program's options; ``prog``: how its usage line names it."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="An MPI pool: start it with any mpiexec/srun; rank 0 connects to the "
                    "interchange and places tasks on the other ranks. Exits 0 on every rank "
                    "when stopped, drained, or when the interchange has been silent past the "
                    "heartbeat threshold; exits 5 (rank 0) when the interchange never answered "
                    "the pool's registration within the heartbeat threshold, 3 when it refused "
                    "the pool.")
    p.add_argument("--interchange", required=True, metavar="tcp://HOST:PORT",
                   help="the interchange's pool port")
    p.add_argument("--block-id", required=True, help="the block this pool is (set by the executor)")
    p.add_argument("--pool-id", default="", help="unique pool name (default: block.host.pid)")
    p.add_argument("--heartbeat-period", type=float, default=2.0, metavar="S",
                   help="seconds between heartbeats until the interchange sets its own (default 2)")
    p.add_argument("--heartbeat-threshold", type=float, default=10.0, metavar="S",
                   help="exit when the interchange is silent this long (default 10)")
    p.add_argument("--depth", type=int, default=PoolConfig.depth,
                   help=f"most 1-rank tasks queued on one worker rank (default "
                        f"{PoolConfig.depth}; 64 unless the recent tasks ran under 40 us)")
    p.add_argument("--lend", type=int, default=PoolConfig.lend, metavar="N",
                   help="times each rank reserved for a blocked wide task may run another task "
                        "while the wide task waits; 0: strict reservation (default "
                        f"{PoolConfig.lend})")
    p.add_argument("--grace", type=float, default=5.0, metavar="S",
                   help="seconds a task's other ranks get after one rank failed (default 5)")
    p.add_argument("--run-dir", default="", help="write pool-<block>.log here (default: stderr)")
    p.add_argument("--log-level", default="INFO", choices=_LOG_LEVELS)
    p.add_argument("--worker-debug", action="store_true",
                   help="also write one log per worker rank (run dir needed)")
    p.add_argument("--trace", action="store_true",
                   help="record each task's ranks, start and end in run-dir/trace-<block>.npz "
                        "(see 'rankpool trace')")
    p.add_argument("--server-key", default="", metavar="FILE",
                   help="the interchange's CurveZMQ public key: encrypt the connection")
    p.add_argument("--shared-memory", default="", metavar="PREFIX",
                   help="the front-end's shared-memory run prefix: worker ranks that share its "
                        "/dev/shm send large results through segments (set by the executor)")
    p.add_argument("--shared-memory-cap", type=int, default=DEFAULT_CAP, metavar="BYTES",
                   help="most bytes of shared-memory segments one worker rank holds "
                        f"(default {DEFAULT_CAP})")
    p.add_argument("--max-lost", type=float, default=PoolConfig.max_lost, metavar="FRACTION",
                   help="the pool serves on after worker ranks die until more than this "
                        "fraction of them is gone; then it finishes the tasks that started and "
                        f"exits (default {PoolConfig.max_lost})")
    p.add_argument("--no-keeper", dest="keeper", action="store_false",
                   help="no keeper process per rank: a rank that dies ends the whole MPI job "
                        "(as the launcher decides)")
    p.add_argument("--max-message-size", type=int, default=MAX_MESSAGE_SIZE, metavar="BYTES",
                   help="the largest message the pool sends or takes; a larger result fails its "
                        f"task (default {MAX_MESSAGE_SIZE}, set by the executor)")
    p.add_argument("--initializer", default="", metavar="FILE",
                   help="a pickled (initializer, initargs) that every worker rank runs once "
                        "before serving (written by the executor)")
    add_resource_options(p)
    return p


def add_resource_options(p: argparse.ArgumentParser) -> None:
    """The node-resource options (see :mod:`rankpool.task.node_resources`)."""
    g = p.add_argument_group("node resources")
    g.add_argument("--accelerators", default=None, metavar="N|ID,ID,...",
                   help="devices per node: a count or a comma-separated list of ids (e.g. "
                        "0.0,0.1 for Intel tiles); dealt to worker ranks in local rank order")
    g.add_argument("--accelerator-env", default=None, metavar="VAR|VENDOR",
                   help="the variable that carries a rank's device, or nvidia, amd, intel "
                        "(default: ZE_AFFINITY_MASK for tile ids, else CUDA_VISIBLE_DEVICES)")
    g.add_argument("--ranks-per-accelerator", type=int, default=1, metavar="N",
                   help="worker ranks that share one device (default 1)")
    g.add_argument("--cpu-affinity", default="none", metavar="MODE",
                   help="none, block, alternating, or list:CPUS:CPUS:... with one entry per "
                        "worker rank of a node, e.g. list:0-3:4-7 (default none)")


def resources_from(ns: argparse.Namespace) -> NodeResources:
    """Build the node resources from parsed options; ValueError/TypeError name the option."""
    accel = ns.accelerators
    if accel is not None and accel.isdigit():
        accel = int(accel)
    return node_resources(accel, ns.accelerator_env, ns.ranks_per_accelerator, ns.cpu_affinity)


def parse(argv: list[str] | None = None, prog: str = "python -m rankpool.mpi_pool") -> PoolConfig:
    p = parser(prog)
    ns = p.parse_args(argv)
    names = ("accelerators", "accelerator_env", "ranks_per_accelerator", "cpu_affinity")
    kwargs: dict[str, Any] = {k: v for k, v in vars(ns).items() if k not in names}
    try:
        return PoolConfig(**kwargs, resources=resources_from(ns))
    except (ValueError, TypeError) as exc:
        p.error(str(exc))
        raise  # unreachable: error() exits
