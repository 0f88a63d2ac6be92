"""The resource specification: parsing and validation, shared by every front-end.

A specification is a mapping such as ``{"num_ranks": 4, "results": "all"}``. It is parsed
once at submit into a frozen :class:`Spec`; every refusal raises :class:`ResourceSpecError`
naming the key.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..apps.prefix import check_family, check_options
from ..errors import ResourceSpecError
from ..wording import counted

RESULTS_MODES = ("root", "all")

#: every key a specification may hold; ``ranks`` is an alias of ``num_ranks``
KNOWN_KEYS = frozenset({"num_ranks", "ranks", "ranks_per_node", "num_nodes", "results",
                        "priority", "walltime", "gpus_per_rank", "threads_per_rank", "env",
                        "cwd", "launcher_options", "mpi_launcher"})

#: keys other systems put in a specification that mean nothing here but are harmless
IGNORED_KEYS = frozenset({"running_time"})


@dataclass(frozen=True, slots=True)
class Spec:
    """A validated resource specification."""

    num_ranks: int = 1
    ranks_per_node: int | None = None
    num_nodes: int | None = None
    results_all: bool = False
    priority: int = 0
    walltime: float | None = None
    gpus_per_rank: int = 0
    threads_per_rank: int | None = None
    env: tuple[tuple[str, str], ...] = ()    # sorted pairs: a Spec is hashable
    cwd: str | None = None
    launcher_options: str = ""               # an MPI application's launch prefix gets them
    mpi_launcher: str | None = None          # its launcher family (None: the block's own)

    @property
    def exclusive(self) -> bool:
        """Whether the task needs idle ranks of its own (no prefetching behind other tasks).

        A GPU task is exclusive so that it is placed on idle device-owning ranks only."""
        return self.num_ranks > 1 or self.walltime is not None or self.gpus_per_rank > 0

    @property
    def has_setting(self) -> bool:
        """Whether the task's ranks change their environment or directory while it runs."""
        return bool(self.threads_per_rank or self.env or self.cwd or self.launcher_options
                    or self.mpi_launcher)

    def to_wire(self) -> list[Any] | None:
        """A compact JSON-able form; ``None`` for the default specification.

        The node-resource keys add four fields only when one of them is set, the application
        keys two more, so the common case costs no extra bytes."""
        if self == DEFAULT_SPEC:
            return None
        base: list[Any] = [self.num_ranks, self.ranks_per_node, self.num_nodes, self.results_all,
                self.priority, self.walltime]
        if self.gpus_per_rank or self.has_setting:
            base += [self.gpus_per_rank, self.threads_per_rank,
                     dict(self.env) if self.env else None, self.cwd]
        if self.launcher_options or self.mpi_launcher:
            base += [self.launcher_options, self.mpi_launcher]
        return base

    @classmethod
    def from_wire(cls, raw: Any) -> Spec:
        """Inverse of :meth:`to_wire`, checking every field (it comes off a socket)."""
        if raw is None:
            return DEFAULT_SPEC
        if not isinstance(raw, list) or len(raw) not in (6, 10, 12):
            raise ResourceSpecError("spec", f"malformed wire form {raw!r:.200}")
        n, rpn, nn, all_, prio, wt = raw[:6]
        spec = {"num_ranks": n, "ranks_per_node": rpn, "num_nodes": nn,
                "results": "all" if all_ is True else "root", "priority": prio, "walltime": wt}
        if len(raw) >= 10:
            for key, value in zip(("gpus_per_rank", "threads_per_rank", "env", "cwd",
                                   "launcher_options", "mpi_launcher"), raw[6:]):
                if value is not None:
                    spec[key] = value
        return parse_spec(spec)


DEFAULT_SPEC = Spec()


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ResourceSpecError(key, f"must be a positive integer, got {value!r}")
    if value < 1:
        raise ResourceSpecError(key, f"must be a positive integer, got {value!r}")
    return value


def _positive_seconds(key: str, value: Any) -> float:
    bad = ResourceSpecError(key, f"must be a positive number of seconds, got {value!r:.60}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad
    try:
        seconds = float(value)
    except OverflowError:
        raise bad from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise bad
    return seconds


def parse_spec(spec: Mapping[str, Any] | Spec | None) -> Spec:
    """Validate a specification mapping and return a :class:`Spec`.

    ``num_ranks`` defaults to ``num_nodes * ranks_per_node`` when only the shape is given;
    when all three are given they must agree.
    """
    if spec is None:
        return DEFAULT_SPEC
    if isinstance(spec, Spec):
        return spec
    if not isinstance(spec, Mapping):
        raise ResourceSpecError("<spec>", f"must be a mapping, got {type(spec).__name__}")
    if not spec:
        return DEFAULT_SPEC
    for key in spec:
        if not isinstance(key, str) or (key not in KNOWN_KEYS and key not in IGNORED_KEYS):
            raise ResourceSpecError(str(key), f"unknown key; known keys are {sorted(KNOWN_KEYS)}")
    if "ranks" in spec and "num_ranks" in spec and spec["ranks"] != spec["num_ranks"]:
        raise ResourceSpecError("ranks", "is an alias of 'num_ranks' and disagrees with it")
    raw_n = spec.get("num_ranks", spec.get("ranks"))
    rpn = spec.get("ranks_per_node")
    nn = spec.get("num_nodes")
    rpn = None if rpn is None else _positive_int("ranks_per_node", rpn)
    nn = None if nn is None else _positive_int("num_nodes", nn)
    name = "num_ranks" if "num_ranks" in spec else "ranks"
    if raw_n is None:
        n = (nn or 1) * (rpn or 1)
    else:
        n = _positive_int(name, raw_n)
    if rpn is not None and nn is not None and n != rpn * nn:
        raise ResourceSpecError(name, f"{n} disagrees with num_nodes * ranks_per_node = {nn * rpn}")
    if rpn is not None and n % rpn:
        raise ResourceSpecError("ranks_per_node", f"{rpn} does not divide num_ranks {n}")
    if nn is not None and nn > n:
        raise ResourceSpecError("num_nodes", f"{nn} nodes cannot hold only {n} ranks")
    results = spec.get("results", "root")
    if results not in RESULTS_MODES:
        raise ResourceSpecError("results", f"must be one of {RESULTS_MODES}, got {results!r}")
    priority = spec.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ResourceSpecError("priority", f"must be an integer, got {priority!r}")
    walltime = spec.get("walltime")
    if walltime is not None:
        walltime = _positive_seconds("walltime", walltime)
    gpus = spec.get("gpus_per_rank", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ResourceSpecError("gpus_per_rank", f"must be an integer >= 0, got {gpus!r:.60}")
    threads = spec.get("threads_per_rank")
    if threads is not None:
        threads = _positive_int("threads_per_rank", threads)
    options = spec.get("launcher_options")
    launcher = spec.get("mpi_launcher")
    return Spec(n, rpn, nn, results == "all", priority, walltime, gpus, threads,
                _env(spec.get("env")), _cwd(spec.get("cwd")),
                "" if options is None else check_options(options),
                None if launcher is None else check_family(launcher))


def _env(value: Any) -> tuple[tuple[str, str], ...]:
    """``env``: a mapping of variable names to string values, as sorted pairs."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ResourceSpecError("env", f"must be a mapping of variable names to strings, "
                                f"got {type(value).__name__}")
    for name, text in value.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ResourceSpecError("env", f"variable name {name!r:.60} must be a non-empty "
                                    f"string without '=' or NUL")
        if not isinstance(text, str) or "\0" in text:
            raise ResourceSpecError("env", f"value of {name} must be a string without NUL, "
                                    f"got {text!r:.60}")
    return tuple(sorted(value.items()))


def _cwd(value: Any) -> str | None:
    """``cwd``: a directory path (created on the ranks if missing)."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value or "\0" in value:
        raise ResourceSpecError("cwd", f"must be a non-empty directory path, got {value!r:.80}")
    return value


def check_fits(spec: Spec, widest: int, largest_node: int | None = None,
               devices: DeviceCapacity | None = None) -> None:
    """Refuse a task that no pool of ``widest`` ranks (nodes of ``largest_node``) could hold.

    ``devices`` says how many of those ranks own an accelerator (None: none do)."""
    if spec.gpus_per_rank:
        check_devices(spec, devices or DeviceCapacity())
    if spec.num_ranks > widest:
        raise ResourceSpecError("num_ranks", f"{spec.num_ranks} ranks is wider than any pool can "
                                f"hold ({counted(widest, 'worker rank')})")
    if largest_node is not None and spec.ranks_per_node is not None \
            and spec.ranks_per_node > largest_node:
        raise ResourceSpecError("ranks_per_node", f"{spec.ranks_per_node} is more than a node "
                                f"holds ({counted(largest_node, 'worker rank')})")


@dataclass(frozen=True, slots=True)
class DeviceCapacity:
    """The device-owning worker ranks of the widest pool: in all, on its fullest node, and
    the devices each of them owns."""

    ranks: int = 0
    largest_node: int = 0
    per_rank: int = 1


def check_devices(spec: Spec, devices: DeviceCapacity) -> None:
    """Refuse a GPU task that no pool could ever place on device-owning ranks."""
    if not devices.ranks:
        raise ResourceSpecError("gpus_per_rank", f"{spec.gpus_per_rank} asked, but no worker "
                                "rank owns an accelerator (see the 'accelerators' option)")
    if spec.gpus_per_rank > devices.per_rank:
        raise ResourceSpecError("gpus_per_rank", f"{spec.gpus_per_rank} asked; each rank owns "
                                f"{devices.per_rank} accelerator")
    if spec.num_ranks > devices.ranks:
        raise ResourceSpecError("gpus_per_rank", f"{spec.num_ranks} GPU ranks asked; a pool "
                                f"has only {devices.ranks} ranks that own an accelerator")
    if spec.ranks_per_node is not None and spec.ranks_per_node > devices.largest_node:
        raise ResourceSpecError("gpus_per_rank", f"{spec.ranks_per_node} GPU ranks per node "
                                f"asked; a node has only {devices.largest_node} that own one")

