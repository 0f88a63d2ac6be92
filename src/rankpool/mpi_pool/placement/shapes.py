"""Task shapes and how a shape is laid out over nodes: pure functions, no MPI.

:func:`layout` resolves a shape into per-node rank counts; :func:`pick` chooses nodes for a
layout given each node's candidate ranks (one node when it fits, best fit, else whole nodes
first). The scheduler in :mod:`.scheduler` builds on them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

Layout = tuple[int, "tuple[int, ...] | None"]  # (width, per-node counts or None = free)


@dataclass(frozen=True, slots=True)
class Shape:
    """What a task asks for: ``width`` ranks, optionally an exact per-node/node-count shape."""

    width: int
    ranks_per_node: int | None = None
    num_nodes: int | None = None
    exclusive: bool = False  # idle ranks even for width 1 (e.g. the task has a walltime)
    gpus: int = 0  # devices per rank: only ranks that own an accelerator (exclusive shapes)


class Assignment(NamedTuple):
    """A task started on ``ranks`` (ascending pool ranks). A named tuple: the hot path makes
    one per task with ``tuple.__new__`` (a frozen dataclass cost ~0.6 µs a task)."""

    key: Hashable
    ranks: tuple[int, ...]


def layout(shape: Shape) -> Layout | None:
    """Resolve a shape into ``(width, per-node counts)``; counts None means any split.

    Returns None for a malformed shape (which can then never be placed)."""
    w, r, n = shape.width, shape.ranks_per_node, shape.num_nodes
    if w < 1 or (r is not None and r < 1) or (n is not None and n < 1):
        return None
    if r is not None:
        if w % r or (n is not None and n * r != w):
            return None
        return w, (r,) * (w // r)
    if n is not None:
        if w < n:
            return None
        q, rem = divmod(w, n)
        return w, (q + 1,) * rem + (q,) * (n - rem)
    return w, None


def zero(i: int, k: int) -> int:
    """Cost function for placements where every candidate rank is equally good."""
    return 0


def pick(layout: Layout, counts: Sequence[int], cost: Callable[[int, int], int],
          take: Callable[[int, int], list[int]]) -> list[int] | None:
    """Choose ranks for ``layout`` given ``counts[i]`` candidate ranks on node i.

    ``cost(i, k)`` prices the k best candidates of node i, ``take(i, k)`` returns them.
    Nodes are preferred by (cost, fewest candidates = best fit, lower index).  The greedy
    choice is complete: it returns None only if no placement exists."""
    width, per_node = layout
    idx = range(len(counts))

    def order(k: int, skip: set[int]) -> list[int]:
        fit = [i for i in idx if counts[i] >= k and i not in skip]
        return sorted(fit, key=lambda i: (cost(i, k), counts[i], i))

    out: list[int] = []
    if per_node is None:  # one node if any fits (best fit), else largest whole nodes first
        if sum(counts) < width:
            return None
        used: set[int] = set()
        while len(out) < width:
            left = width - len(out)
            fit = order(left, used)
            i = fit[0] if fit else min((j for j in idx if counts[j] and j not in used),
                                       key=lambda j: (-counts[j], cost(j, counts[j]), j))
            out += take(i, min(left, counts[i]))
            used.add(i)
        return sorted(out)
    big, small = per_node[0], per_node[-1]
    nbig = per_node.count(big)
    chosen = order(big, set())[:nbig]
    rest = order(small, set(chosen))[:len(per_node) - nbig]
    if len(chosen) + len(rest) < len(per_node):
        return None
    for i in chosen:
        out += take(i, big)
    for i in rest:
        out += take(i, small)
    return sorted(out)
