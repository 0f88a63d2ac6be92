"""The WORK messages of one dispatch: what rank 0 sends each worker rank, and in how many
messages (see :meth:`.manager.Manager.manager_dispatch`).

A task travels as a :class:`~.subcomms.WorkItem` in plain-tuple form; a rank's 1-rank tasks
that share a function and a spec and carry no buffers travel as one *run* entry (lists of ids
and data in place of the id and the data; :func:`~.subcomms.expand` names them on the rank).
A rank's entries fill messages of at most :data:`~.subcomms.MESSAGE_BYTES` of data, so that
each leaves at once (under MPI's eager limit); a run cut into more than ``MOST_MESSAGES``
goes whole instead (see :func:`cuts`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from itertools import accumulate
from operator import add, attrgetter
from typing import Any

from ..protocol.batches import Task
from ..protocol.wire import Buffer
from ..task.resources import Spec
from .subcomms import MESSAGE_BYTES
from .task_setting import TaskSetting, setting_of

#: most WORK messages a run of 1-rank tasks is cut into (see :func:`cuts`)
MOST_MESSAGES = 16
#: bytes a WorkItem takes in a message besides its data and function; a run's, per task
ITEM_BYTES, RUN_BYTES = 40, 10


class TaskFields:
    """What an entry takes from its task's spec and function, looked at once per run of tasks
    that share them (a batch's tasks share one ``Spec``, one setting and one function)."""

    __slots__ = ("spec", "setting", "shared", "results_all", "walltime", "fn_source", "fn")

    def __init__(self) -> None:
        self.spec: Spec | None = None
        self.setting: TaskSetting | None = None
        self.shared = False  # not exclusive: one rank, no walltime, no accelerator
        self.results_all = False
        self.walltime: float | None = None
        self.fn_source: Buffer | None = None
        self.fn = b""

    def look(self, task: Task) -> None:
        spec = task.spec
        if spec is not self.spec:
            self.spec, self.setting = spec, setting_of(spec)
            self.shared, self.results_all, self.walltime = not spec.exclusive, \
                spec.results_all, spec.walltime
        if task.fn is not self.fn_source:
            self.fn_source = fn = task.fn
            self.fn = fn if isinstance(fn, bytes) else bytes(fn)


class WorkMessages:
    """Each rank's WORK messages of one dispatch, and how many tasks each rank was sent."""

    def __init__(self) -> None:
        #: rank -> its messages: (entries, the buffers that follow them, [size so far])
        self.per_rank: dict[int, list[tuple[list[tuple[Any, ...]], list[Buffer], list[int]]]] \
            = {}
        self.count: dict[int, int] = {}

    def add(self, rank: int, entry: tuple[Any, ...], buffers: Sequence[Buffer], size: int,
            tasks: int = 1) -> None:
        """Put an entry of ``tasks`` tasks in the rank's last message, or in a new one past
        ``MESSAGE_BYTES``."""
        messages = self.per_rank.get(rank)
        if messages is None:
            messages = self.per_rank[rank] = [([], [], [0])]
        message = messages[-1]
        if message[0] and message[2][0] + size > MESSAGE_BYTES:
            message = ([], [], [0])
            messages.append(message)
        message[0].append(entry)
        if buffers:
            message[1].extend(buffers)
        message[2][0] += size
        self.count[rank] = self.count.get(rank, 0) + tasks

    def add_run(self, rank: int, keys: list[Any], run: list[Task], fields: TaskFields,
                release: tuple[int, ...]) -> None:
        """A rank's run of tasks (:func:`plain_run`), cut into entries that fit messages; the
        communicators it frees (``release``) go with the first."""
        first = run[0]
        datas = list(map(_data_of, run))
        if set(map(type, datas)) != {bytes}:
            datas = [bytes(d) for d in datas]
        ranks = (rank,)
        for i, j, size in cuts(datas, len(fields.fn)):
            self.add(rank, (keys[i:j], ranks, fields.results_all, fields.walltime,
                            first.fn_digest, fields.fn, datas[i:j], 0, fields.setting, 0,
                            release if i == 0 else ()), (), size, j - i)

    def __iter__(self) -> Iterator[tuple[int, list[tuple[list[tuple[Any, ...]],
                                                          list[Buffer], list[int]]]]]:
        return iter(self.per_rank.items())


def cuts(datas: list[bytes], fn_bytes: int) -> list[tuple[int, int, int]]:
    """A run's tasks cut into runs of at most ``MESSAGE_BYTES`` each (at least one task):
    ``(start, end, bytes)`` of each."""
    n = len(datas)
    # what tasks 0 .. k-1 take: their data and ids
    upto = list(map(add, accumulate(map(len, datas), initial=0), range(0, RUN_BYTES * (n + 1),
                                                                        RUN_BYTES)))
    budget = MESSAGE_BYTES - fn_bytes
    found = []
    i = 0
    while i < n:
        j = min(n, max(i + 1, bisect_right(upto, upto[i] + budget) - 1))
        found.append((i, j, upto[j] - upto[i] + fn_bytes))
        i = j
        if len(found) > MOST_MESSAGES:
            # large arguments: so many small messages would wait in MPI's queues for rank
            # 0 to push them on; one large one waits for the rank once, for all its tasks
            return [(0, n, upto[n] + fn_bytes)]
    return found


_spec_of, _fn_of, _data_of, _buffers_of = (attrgetter("spec"), attrgetter("fn"),
                                           attrgetter("data"), attrgetter("buffers"))


def plain_run(run: list[Task]) -> bool:
    """Whether these tasks (for one rank) are shared ones of one spec and one function,
    without buffers: each check a pass in C."""
    first = run[0]
    n = len(run)
    return (not first.spec.exclusive and not first.buffers
            and list(map(_spec_of, run)).count(first.spec) == n
            and list(map(_fn_of, run)).count(first.fn) == n
            and list(map(_buffers_of, run)).count(first.buffers) == n)
