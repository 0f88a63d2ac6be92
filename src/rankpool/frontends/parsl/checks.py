"""Checks for :class:`~rankpool.frontends.parsl.executor.ExtremeScaleExecutor`: its arguments,
its apps.

Every constructor argument is checked at once, and a refusal names the argument (the
interchange's own configuration checks are reused for ports and heartbeats). For apps,
:func:`declares_spec` decides whether Parsl's ``parsl_resource_specification`` keyword is
passed on to the function or dropped, and :func:`parsl_counts` reads the counts Parsl's MPI
mode writes into a specification.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from parsl.monitoring.radios.base import RadioConfig
from parsl.providers.base import ExecutionProvider

from ...interchange.config import InterchangeConfig
from .blocks import check_launch_cmd

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: the keyword Parsl passes on to app functions
SPEC_KWARG = "parsl_resource_specification"
#: the counts Parsl's MPI mode may write into an app's specification, as strings
_COUNT_KEYS = ("num_ranks", "ranks_per_node", "num_nodes")


def parsl_counts(spec: Any) -> Any:
    """``spec`` with the counts Parsl's MPI mode wrote into it as strings read as integers.

    Parsl's MPI mode completes the mapping an app was given in place: ``num_ranks`` becomes
    ``str(num_nodes * ranks_per_node)`` ("4"), ``ranks_per_node`` a quotient ("2.0"). An app
    whose specification is shared between an ``MPIExecutor`` and this executor (a module-level
    dict, or one executor swapped for the other in a run) then carries those strings. A
    string that stands for a whole number is read as that number, in a copy; anything else is
    left for :func:`~rankpool.task.resources.parse_spec` to refuse by its key.
    """
    if not isinstance(spec, dict) or not any(isinstance(spec.get(k), str) for k in _COUNT_KEYS):
        return spec
    read = dict(spec)
    for key in _COUNT_KEYS:
        value = spec.get(key)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                continue
            if number.is_integer():
                read[key] = int(number)
    return read



def check_arguments(*, label: Any, provider: Any, ranks_per_node: Any, address: Any,
                    pool_port: Any, port_range: Any, heartbeat_period: Any,
                    heartbeat_threshold: Any, drain_period: Any, encrypted: Any,
                    worker_debug: Any, managed: Any, allow_per_node_launcher: Any,
                    working_dir: Any, launch_cmd: Any,
                    log_level: Any, remote_monitoring_radio: Any) -> None:
    """Raise ValueError/TypeError naming the first bad argument.

    ``encrypted=True`` without CurveZMQ in this pyzmq raises
    :class:`~rankpool.errors.EncryptionUnavailable` here, before anything starts.
    """
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"label must be a non-empty string, got {label!r}")
    if provider is not None and not isinstance(provider, ExecutionProvider):
        raise TypeError(f"provider must be a Parsl ExecutionProvider, "
                        f"got {type(provider).__name__}")
    if ranks_per_node is not None and not _positive_int(ranks_per_node):
        raise ValueError(f"ranks_per_node must be a positive integer, got {ranks_per_node!r}")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise ValueError(f"address must be a host name or IP address, got {address!r}")
    # the interchange's own checks name the argument: pool_port, port_range, heartbeat_*
    InterchangeConfig(address=address or "127.0.0.1", pool_port=pool_port, port_range=port_range,
                      heartbeat_period=heartbeat_period, heartbeat_threshold=heartbeat_threshold)
    if drain_period is not None and (isinstance(drain_period, bool)
                                     or not isinstance(drain_period, (int, float))
                                     or drain_period <= 0):
        raise ValueError(f"drain_period must be a positive number of seconds or None, "
                         f"got {drain_period!r}")
    if encrypted is not None and not isinstance(encrypted, bool):
        raise TypeError(f"encrypted must be True, False or None (the default: on), got "
                        f"{encrypted!r}")
    for name, flag in (("worker_debug", worker_debug), ("managed", managed),
                       ("allow_per_node_launcher", allow_per_node_launcher)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if encrypted:
        from ...security import require_curve
        require_curve()
    if working_dir is not None and (not isinstance(working_dir, str) or not working_dir):
        raise ValueError(f"working_dir must be a directory path or None, got {working_dir!r}")
    check_launch_cmd(launch_cmd)
    if not isinstance(log_level, str) or log_level.upper() not in LOG_LEVELS:
        raise ValueError(f"log_level must be one of {LOG_LEVELS}, got {log_level!r}")
    if remote_monitoring_radio is not None and not isinstance(remote_monitoring_radio, RadioConfig):
        raise TypeError(f"remote_monitoring_radio must be a Parsl RadioConfig, got "
                        f"{type(remote_monitoring_radio).__name__}")


def declares_spec(func: Callable[..., Any]) -> bool:
    """Whether an app function takes ``parsl_resource_specification`` (by name or ``**kwargs``).

    Wrappers made with ``functools.wraps`` (Parsl's error and monitoring wrappers) are looked
    through; for a bash app (``partial(remote_side_bash_executor, fn)``) ``fn`` decides.
    """
    target: Any = inspect.unwrap(func)
    while isinstance(target, functools.partial):
        inner = target.func
        if getattr(inner, "__name__", "") == "remote_side_bash_executor" and target.args:
            target = inspect.unwrap(target.args[0])
        else:
            target = inner
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == SPEC_KWARG or p.kind is p.VAR_KEYWORD for p in params)


def _positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


class ReraiseWrapped:
    """Calls an app function and raises the exception Parsl's wrapper returned as a value.

    Keeps ``func``'s signature visible (``__wrapped__``), so the task's communicator is still
    injected where the function wants it.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        self.__wrapped__ = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from parsl.app.errors import RemoteExceptionWrapper
        value = self.__wrapped__(*args, **kwargs)
        if isinstance(value, RemoteExceptionWrapper):
            value.reraise()
        return value
