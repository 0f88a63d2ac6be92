"""Task and result batches built field by field, to send what no encoder would write."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rankpool.protocol.wire import encode_header, pack_ints


def raw_tasks(records: Sequence[Sequence[int]], fns: Sequence[tuple[str, bytes]] = (("01", b"F"),),
              specs: Sequence[Any] = (None,), data: bytes = b"", *, n: int | None = None,
              extra: Sequence[bytes] = (), fn_table: Any = None) -> list[bytes]:
    """``[header, blob, *extra]`` of a task batch: records ``(task_id, function, spec, data
    length, buffers)``, the function table ``fns`` as (digest hex, bytes), then ``data``."""
    header = {"k": "tasks", "n": len(records) if n is None else n,
              "f": [[d, len(b)] for d, b in fns] if fn_table is None else fn_table,
              "s": list(specs)}
    blob = pack_ints([v for r in records for v in r]) + b"".join(b for _, b in fns) + data
    return [encode_header(header), blob, *extra]


def raw_results(rows: Sequence[Sequence[int]], data: bytes = b"", *, n: int | None = None,
                extra: Sequence[bytes] = ()) -> list[bytes]:
    """``[header, blob, *extra]`` of a result batch: rows ``(task_id, rank, flags, length,
    buffers)`` (flags: 1 a value, 2 another outcome of the row before's task), then ``data``."""
    header = {"k": "results", "n": len(rows) if n is None else n}
    return [encode_header(header), pack_ints([v for r in rows for v in r]) + data, *extra]
