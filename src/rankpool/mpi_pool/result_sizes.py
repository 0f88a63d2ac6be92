"""Results that fit the run's message size cap: rank 0 never sends a message a socket refuses.

A socket of the run closes a connection that sends a message part over ``max_message_size``
(and the interchange drops a larger whole message), which would lose every result in it. So
results are sent in groups that fit, and a result that alone does not fit fails its task
with :class:`~rankpool.errors.MessageTooLarge` instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import MessageTooLarge
from ..protocol.result_batches import Outcome, Result
from ..task.serialize import dumps_error

#: bytes a result's record and header take besides its data and buffers (a generous bound)
_ROW = 64
#: what the header frame of a batch may take besides its rows
_HEADER = 4096


def _nbytes(buffer: object) -> int:
    # any object with the buffer protocol (collections.abc.Buffer is Python 3.12's)
    return memoryview(buffer).nbytes  # type: ignore[arg-type]


def result_size(result: Result) -> int:
    """Bytes ``result`` adds to a result batch (an upper bound)."""
    return sum(_ROW + _nbytes(o.data) + sum(_nbytes(b) for b in o.buffers)
               for o in result.outcomes)


def fit_results(results: Sequence[Result], limit: int) -> list[list[Result]]:
    """``results`` in order, in groups each of which fits one message of at most ``limit``
    bytes; a result too large for any message is replaced by its task's failure."""
    groups: list[list[Result]] = []
    group: list[Result] = []
    used = _HEADER
    for result in results:
        size = result_size(result)
        if _HEADER + size > limit:
            error = MessageTooLarge(f"the result of task {result.task_id}", size, limit)
            result = Result(result.task_id, [Outcome(0, False, dumps_error(error))])
            size = result_size(result)
        if group and used + size > limit:
            groups.append(group)
            group, used = [], _HEADER
        group.append(result)
        used += size
    if group:
        groups.append(group)
    return groups
