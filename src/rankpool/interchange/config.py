"""The interchange's typed configuration.

The front-end builds an :class:`InterchangeConfig`, writes it as one JSON object on the
interchange process's stdin, and the process rebuilds it with :meth:`InterchangeConfig.from_json`.
Every field is checked at construction, so a bad value fails in the front-end (or at process
start) with an error that names the field, not later inside the poll loop.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..protocol.wire import MAX_MESSAGE_SIZE, check_max_message_size
from ..shm.run import check_run_prefix

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _check_port(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"{name}: must be a port number in 0..65535 (0 = any free port), "
                         f"got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    try:  # float(): an int too large for a float raises OverflowError, and is no time either
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0 \
            and math.isfinite(float(value))
    except OverflowError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: must be a positive number of seconds, got {value!r:.40}")


@dataclass(frozen=True)
class InterchangeConfig:
    """Where the interchange listens and how it judges liveness and capacity.

    ``pool_port``, ``client_port`` and ``command_port`` of 0 mean a free port, taken from
    ``port_range`` (inclusive low, exclusive high) when that is set. Pools connect to
    ``address``; the front-end's two sockets are always bound on loopback.

    A pool holds at most ``ranks * prefetch`` ranks' worth of tasks at once (less when its tasks
    are long: see :class:`.pools.Pool`), so its manager can keep every worker fed without
    waiting on the interchange. ``front_identity``, when set, is the
    ZeroMQ identity of the one front-end allowed on the client port (others are ignored).
    ``parent_pid``, when nonzero,
    is the front-end's process: the interchange exits once it is gone. ``curve_dir``, when
    set, is the run's key directory (:func:`rankpool.security.make_keys`): every socket then
    speaks CurveZMQ and admits only this run's keys; it must be an absolute path.
    ``shm_prefix``, when set, is the run's shared-memory prefix (:mod:`rankpool.shm.run`): if the
    front-end is lost, the interchange removes the run's files from ``/dev/shm`` as it stops.
    ``max_message_size`` caps the bytes of a message every socket takes (a larger message part
    closes its sender's connection; a larger whole message is dropped and logged).
    """

    address: str = "127.0.0.1"
    pool_port: int = 0
    client_port: int = 0
    command_port: int = 0
    port_range: tuple[int, int] | None = None
    heartbeat_period: float = 2.0
    heartbeat_threshold: float = 10.0
    prefetch: int = 1024
    run_dir: str = ""
    log_level: str = "INFO"
    max_widest: int = 0
    parent_pid: int = 0
    front_identity: str = ""
    curve_dir: str = ""
    shm_prefix: str = ""
    max_message_size: int = MAX_MESSAGE_SIZE

    def __post_init__(self) -> None:
        if not isinstance(self.front_identity, str):
            raise ValueError(f"front_identity: must be a string, got {self.front_identity!r}")
        if not isinstance(self.address, str) or not self.address \
                or any(c.isspace() for c in self.address):
            raise ValueError(f"address: must be a host name, an IP address or '*', "
                             f"got {self.address!r}")
        for name in ("pool_port", "client_port", "command_port"):
            _check_port(name, getattr(self, name))
        if self.port_range is not None:
            rng = self.port_range
            if isinstance(rng, list):  # JSON has no tuples
                rng = tuple(rng)
                object.__setattr__(self, "port_range", rng)
            if not (isinstance(rng, tuple) and len(rng) == 2
                    and all(isinstance(p, int) and not isinstance(p, bool) for p in rng)
                    and 1 <= rng[0] < rng[1] <= 65536):
                raise ValueError(f"port_range: must be (low, high) with 1 <= low < high <= 65536, "
                                 f"got {self.port_range!r}")
        _check_positive("heartbeat_period", self.heartbeat_period)
        _check_positive("heartbeat_threshold", self.heartbeat_threshold)
        if self.heartbeat_threshold < self.heartbeat_period:
            raise ValueError(f"heartbeat_threshold: {self.heartbeat_threshold!r} is shorter than "
                             f"heartbeat_period {self.heartbeat_period!r}; "
                             f"every peer would look lost")
        if isinstance(self.prefetch, bool) or not isinstance(self.prefetch, int) \
                or self.prefetch < 1:
            raise ValueError(f"prefetch: must be a positive integer, got {self.prefetch!r}")
        if not isinstance(self.run_dir, str):
            raise ValueError(f"run_dir: must be a path or '', got {self.run_dir!r}")
        if not isinstance(self.curve_dir, str) or "\0" in self.curve_dir or (
                self.curve_dir and not os.path.isabs(self.curve_dir)):
            raise ValueError(f"curve_dir: must be an absolute directory path or '' (no "
                             f"encryption), got {self.curve_dir!r}")
        check_max_message_size(self.max_message_size)
        if self.shm_prefix:
            try:
                check_run_prefix(self.shm_prefix)
            except ValueError as exc:
                raise ValueError(f"shm_prefix: {exc}") from None
        if not isinstance(self.log_level, str) or self.log_level.upper() not in _LOG_LEVELS:
            raise ValueError(f"log_level: must be one of {_LOG_LEVELS}, got {self.log_level!r}")
        for name in ("max_widest", "parent_pid"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: must be a non-negative integer, got {value!r}")

    @property
    def level(self) -> int:
        """The numeric logging level of ``log_level``."""
        return int(logging.getLevelName(self.log_level.upper()))

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> InterchangeConfig:
        """Rebuild a configuration; unknown keys and bad values raise ValueError naming them."""
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"interchange configuration is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError("interchange configuration must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown interchange configuration field; "
                             f"known fields are {sorted(known)}")
        return cls(**raw)
