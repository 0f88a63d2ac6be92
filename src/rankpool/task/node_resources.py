"""Per-node resources of a pool: which worker rank owns which accelerator, and CPU binding.

The binding is *static per rank* and applied when the pool starts, before any user code runs:
a device library initialised in a long-lived process ignores later changes to
``CUDA_VISIBLE_DEVICES`` and friends, so a task cannot be given a device by setting a variable
when it starts. On each node, devices are dealt to the node's worker ranks in rank order,
``ranks_per_accelerator`` ranks per device; rank 0 (the manager) owns none, and worker ranks
beyond the devices own none and run CPU-only tasks.

A rank's *local worker index* is its position among the worker ranks of its node, the index
that deals devices: ``cpu_affinity`` lists are indexed by it, so entry i and device i go
together on every node, whether or not the node also holds rank 0. Rank 0 is never bound.
Nothing here imports mpi4py: the pool hands in its topology.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .resources import DeviceCapacity

log = logging.getLogger(__name__)

#: vendor names accepted by ``accelerator_env`` and the variable each stands for
VENDOR_ENV = {"nvidia": "CUDA_VISIBLE_DEVICES", "amd": "ROCR_VISIBLE_DEVICES",
              "intel": "ZE_AFFINITY_MASK"}

AFFINITY_MODES = ("none", "block", "alternating")

CpuSets = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class NodeResources:
    """The checked node-resource options; build it with :func:`node_resources`."""

    accelerators: tuple[str, ...] = ()
    accelerator_env: str = "CUDA_VISIBLE_DEVICES"
    ranks_per_accelerator: int = 1
    cpu_affinity: str | CpuSets = "none"

    @property
    def device_ranks_per_node(self) -> int:
        """Worker ranks per node that own a device (at most; a node may have fewer ranks)."""
        return len(self.accelerators) * self.ranks_per_accelerator

    def to_argv(self) -> list[str]:
        """The pool command-line options that rebuild these settings (none for the defaults)."""
        argv: list[str] = []
        if self.accelerators:
            argv += ["--accelerators", ",".join(self.accelerators),
                     "--accelerator-env", self.accelerator_env]
        if self.ranks_per_accelerator != 1:
            argv += ["--ranks-per-accelerator", str(self.ranks_per_accelerator)]
        if self.cpu_affinity != "none":
            argv += ["--cpu-affinity", affinity_text(self.cpu_affinity)]
        return argv

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for logs and the executors' pool listings."""
        return {"accelerators": list(self.accelerators), "accelerator_env": self.accelerator_env,
                "ranks_per_accelerator": self.ranks_per_accelerator,
                "cpu_affinity": affinity_text(self.cpu_affinity)}


def node_resources(accelerators: int | str | Sequence[str] | None = None,
                   accelerator_env: str | None = None, ranks_per_accelerator: int = 1,
                   cpu_affinity: str | Sequence[Any] = "none") -> NodeResources:
    """Check and normalise the options; every refusal is a ValueError/TypeError naming one.

    ``accelerators``: devices per node, a count (ids ``"0"``..``"n-1"``), a comma-separated
    string or a list of id strings (``["0.0", "0.1"]`` for Intel tiles); ``accelerator_env``:
    the variable that carries a rank's device, or a vendor name (``nvidia``, ``amd``,
    ``intel``); default ``ZE_AFFINITY_MASK`` when the ids are tiles (contain a dot), else
    ``CUDA_VISIBLE_DEVICES``; ``ranks_per_accelerator``: ranks that share one device;
    ``cpu_affinity``: ``"none"``, ``"block"``, ``"alternating"``, or CPUs per local worker
    rank (a list of CPU lists or range strings, or ``"list:0-3:4-7"``).
    """
    ids = _accelerator_ids(accelerators)
    env = _accelerator_env(accelerator_env, ids)
    if isinstance(ranks_per_accelerator, bool) or not isinstance(ranks_per_accelerator, int) \
            or ranks_per_accelerator < 1:
        raise ValueError(f"ranks_per_accelerator: must be a positive integer, got "
                         f"{ranks_per_accelerator!r}")
    return NodeResources(ids, env, ranks_per_accelerator, _affinity(cpu_affinity))


def _accelerator_ids(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, bool):
        raise TypeError(f"accelerators: must be a count or a list of device ids, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"accelerators: a count must be >= 0, got {value}")
        return tuple(str(i) for i in range(value))
    if isinstance(value, str):
        value = [] if not value.strip() else value.split(",")
    if not isinstance(value, Sequence):
        raise TypeError(f"accelerators: must be a count or a list of device ids, got "
                        f"{type(value).__name__}")
    ids = []
    for item in value:
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str) or not item or "," in item \
                or any(c.isspace() for c in item):
            raise ValueError(f"accelerators: device ids must be non-empty strings without commas "
                             f"or spaces, got {item!r:.60}")
        ids.append(item)
    if len(set(ids)) != len(ids):
        raise ValueError(f"accelerators: device ids repeat in {ids!r:.200}")
    return tuple(ids)


def _accelerator_env(value: str | None, ids: tuple[str, ...]) -> str:
    if value is None or value == "":
        return "ZE_AFFINITY_MASK" if any("." in i for i in ids) else "CUDA_VISIBLE_DEVICES"
    if not isinstance(value, str):
        raise TypeError(f"accelerator_env: must be a variable name or a vendor "
                        f"{sorted(VENDOR_ENV)}, got {value!r}")
    name = VENDOR_ENV.get(value.lower(), value)
    if not (name.replace("_", "a").isalnum() and not name[0].isdigit()):
        raise ValueError(f"accelerator_env: {value!r} is neither a variable name nor a vendor "
                         f"{sorted(VENDOR_ENV)}")
    return name


def _cpu_list(entry: Any, index: int) -> tuple[int, ...]:
    """One local rank's CPUs: ints, or a string such as ``"0-3,8"``."""
    bad = ValueError(f"cpu_affinity: entry {index} ({entry!r:.60}) must be CPU numbers or a "
                     f"range string such as '0-3,8'")
    cpus: list[int] = []
    if isinstance(entry, int) and not isinstance(entry, bool):
        entry = [entry]
    if isinstance(entry, str):
        for part in entry.split(","):
            lo, _, hi = part.strip().partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()) or (hi and int(hi) < int(lo)):
                raise bad
            cpus += range(int(lo), int(hi or lo) + 1)
    elif isinstance(entry, Sequence):
        for cpu in entry:
            if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu < 0:
                raise bad
            cpus.append(cpu)
    else:
        raise bad
    if not cpus:
        raise bad
    return tuple(sorted(set(cpus)))


def _affinity(value: Any) -> str | CpuSets:
    if isinstance(value, str):
        if value in AFFINITY_MODES:
            return value
        if value.startswith("list:"):
            value = value[len("list:"):].split(":")
        else:
            raise ValueError(f"cpu_affinity: must be one of {AFFINITY_MODES}, 'list:CPUS:CPUS:...'"
                             f" or a list of CPUs per local worker rank, got {value!r:.60}")
    if not isinstance(value, Sequence) or not value:
        raise ValueError(f"cpu_affinity: a list of CPUs per local worker rank must not be "
                         f"empty, got {value!r:.60}")
    return tuple(_cpu_list(entry, i) for i, entry in enumerate(value))


def affinity_text(value: str | CpuSets) -> str:
    """The command-line form of a ``cpu_affinity`` value (``list:0-1:2-3`` for a list)."""
    if isinstance(value, str):
        return value
    return "list:" + ":".join(",".join(map(str, cpus)) for cpus in value)


# -- what a block holds ---------------------------------------------------------------------------
def node_workers(workers: int, nodes: int, widest: int | None = None) -> list[int]:
    """Worker ranks per node of one pool: a block's ``workers`` over ``nodes`` nodes, the first
    node short of the manager's slot where the launcher counts it; one node of ``widest``
    where each node runs a pool of its own (``widest < workers``)."""
    if widest is not None and widest < workers:
        return [widest]
    per = -(-workers // nodes)
    return [workers - per * (nodes - 1)] + [per] * (nodes - 1)


def block_devices(res: NodeResources, workers_per_node: Sequence[int]) -> DeviceCapacity:
    """The device-owning ranks of a pool with these worker ranks per node (rank 0 on the first
    node); refuses an explicit ``cpu_affinity`` list too short for the node's ranks."""
    if isinstance(res.cpu_affinity, tuple) and workers_per_node:
        local = max(workers_per_node)
        if len(res.cpu_affinity) < local:
            raise ValueError(f"cpu_affinity: lists {len(res.cpu_affinity)} local worker ranks; "
                             f"a node of this pool has {local}")
    per = res.device_ranks_per_node
    counts = [min(w, per) for w in workers_per_node]
    return DeviceCapacity(sum(counts), max(counts, default=0))


# -- the binding ---------------------------------------------------------------------------------
def worker_index(nodes: Sequence[Sequence[int]], rank: int) -> tuple[int, int]:
    """``rank``'s position among its node's worker ranks, and how many that node has."""
    for workers in nodes:
        if rank in workers:
            ordered = sorted(workers)
            return ordered.index(rank), len(ordered)
    raise ValueError(f"rank {rank} is not a worker rank of the pool")


def device_binding(nodes: Sequence[Sequence[int]], res: NodeResources) -> dict[int, str]:
    """Which worker rank owns which device: ``{rank: device id}`` (ranks without one left out)."""
    owners: dict[int, str] = {}
    per = res.ranks_per_accelerator
    for workers in nodes:
        for i, rank in enumerate(sorted(workers)[:res.device_ranks_per_node]):
            owners[rank] = res.accelerators[i // per]
    return owners


def devices_list(nodes: Sequence[Sequence[int]], res: NodeResources) -> list[str]:
    """The binding as a list indexed by pool rank ("" for no device); empty without devices."""
    owners = device_binding(nodes, res)
    if not owners:
        return []
    size = max((r for n in nodes for r in n), default=0) + 1
    return [owners.get(r, "") for r in range(size)]


def device_ranks(nodes: Sequence[Sequence[int]], res: NodeResources) -> list[list[int]]:
    """The device-owning worker ranks of each node."""
    return [sorted(w)[:res.device_ranks_per_node] for w in nodes]


def cpu_set(res: NodeResources, local: int, count: int, available: Sequence[int]) -> set[int]:
    """The CPUs local worker rank ``local`` of ``count`` asks for, out of ``available``."""
    mode = res.cpu_affinity
    cpus = sorted(available)
    if mode == "none" or not cpus:
        return set(cpus)
    if isinstance(mode, tuple):
        if local >= len(mode):
            raise ValueError(f"cpu_affinity: lists {len(mode)} local worker ranks; this node has "
                             f"{count} (local worker rank {local} has no entry)")
        return set(mode[local])
    if len(cpus) < count:  # more ranks than CPUs: share them round robin
        return {cpus[local % len(cpus)]}
    if mode == "block":
        size = len(cpus) // count
        return set(cpus[local * size:(local + 1) * size])
    return set(cpus[local::count])  # alternating


def apply_binding(rank: int, nodes: Sequence[Sequence[int]], res: NodeResources) -> str | None:
    """Bind this process (pool rank ``rank``): its device variable and CPU affinity.

    Rank 0 is left as it was started. Affinity is intersected with the current mask and never
    widens it; an empty intersection keeps the mask and logs a warning. Returns the device id.
    """
    block_devices(res, [len(n) for n in nodes])  # every rank refuses a bad list alike
    if rank == 0:
        return None
    device = device_binding(nodes, res).get(rank)
    if device is not None:
        os.environ[res.accelerator_env] = device
    if res.cpu_affinity != "none" and hasattr(os, "sched_setaffinity"):
        local, count = worker_index(nodes, rank)
        current = os.sched_getaffinity(0)
        wanted = cpu_set(res, local, count, sorted(current)) & current
        if wanted:
            os.sched_setaffinity(0, wanted)
        else:
            log.warning("rank %d: cpu_affinity asks for CPUs outside its mask %s; keeping it",
                        rank, sorted(current))
    return device
