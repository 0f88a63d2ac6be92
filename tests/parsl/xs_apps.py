"""Apps for tests/parsl, in a module the worker ranks can import (see conftest.py).

Functions that wait do so on a file, with a deadline, so that a test decides when they end.
"""

from __future__ import annotations

import os
import time
from typing import Any

from parsl import bash_app, join_app, python_app


def wait_file(path: str, timeout: float = 60.0) -> None:
    """Wait until ``path`` exists; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.01)


def touch(path: str) -> None:
    with open(path, "a"):
        pass


@python_app
def solve(n: int, comm: Any = None, parsl_resource_specification: dict = {}) -> int:  # noqa: B006
    return comm.allreduce(n)  # type: ignore[no-any-return]


@python_app
def rank_and_size(comm: Any = None) -> tuple[int, int]:
    return comm.Get_rank(), comm.Get_size()


@python_app
def first_arg_comm(comm: Any, x: int) -> int:
    return comm.Get_size() * x  # type: ignore[no-any-return]


@python_app
def no_comm(x: int) -> int:
    return x


@python_app
def double(x: int) -> int:
    return 2 * x


@python_app
def add(a: int, b: int) -> int:
    return a + b


@python_app
def echo_spec(parsl_resource_specification: dict = {}) -> dict:  # noqa: B006
    return parsl_resource_specification


@python_app
def takes_kwargs(**kwargs: Any) -> list[str]:
    return sorted(kwargs)


@python_app
def cwd() -> str:
    return os.getcwd()


@python_app
def block_id() -> str | None:
    return os.environ.get("PARSL_WORKER_BLOCK_ID")


@join_app
def sum_of_doubles(a: int, b: int) -> Any:
    return add(double(a), double(b))


@bash_app
def write_words(words: str, outputs: tuple = ()) -> str:
    return f"echo {words} > {outputs[0].filepath}"


@python_app
def count_words(inputs: tuple = ()) -> int:
    with open(inputs[0].filepath) as f:
        return len(f.read().split())


@python_app
def fails_once(marker: str) -> str:
    if not os.path.exists(marker):
        touch(marker)
        raise ValueError("the first try fails")
    return "second try"


@python_app
def always_fails() -> None:
    raise KeyError("always")


@python_app
def hold_until(started: str, go: str, comm: Any = None) -> str | None:
    """Say it started, then wait for ``go``; every rank of a wide task does both."""
    touch(started)
    wait_file(go)
    return os.environ.get("PARSL_WORKER_BLOCK_ID")


@python_app
def append_line(path: str, text: str) -> None:
    with open(path, "a") as f:
        f.write(text + "\n")


@python_app(cache=True)
def square_counted(x: int, counter: str) -> int:
    with open(counter, "a") as f:
        f.write(f"{x}\n")
    return x * x


@python_app
def barrier_size(comm: Any = None) -> int:
    comm.Barrier()
    return comm.Get_size()  # type: ignore[no-any-return]


@python_app
def busy(seconds: float, comm: Any = None) -> int:
    """Burn CPU for a while (so resource monitoring has something to sample)."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return comm.Get_size()  # type: ignore[no-any-return]


@python_app
def fail_on_rank(bad: int, comm: Any = None) -> int:
    if comm.Get_rank() == bad:
        raise ValueError(f"rank {bad} failed")
    return comm.Get_rank()


@python_app
def device_and_env(comm: Any = None, parsl_resource_specification: dict = {}) -> list:  # noqa: B006
    from mpi4py import MPI
    return [MPI.COMM_WORLD.Get_rank(), os.environ.get("RP_PARSL_DEVICE"),
            os.environ.get("RP_STAGE"), os.getcwd()]


@python_app
def echo(x: Any) -> Any:
    return x
