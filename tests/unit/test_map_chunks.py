"""How ``map`` cuts its calls into chunks (``frontends/mapping.py``)."""

from __future__ import annotations

import pickle

from rankpool.frontends.mapping import _chunks


def test_a_range_is_cut_into_ranges_that_pickle_small() -> None:
    chunks = list(_chunks(range(3, 1_000_003, 2), 100_000))
    assert all(isinstance(c, range) for c in chunks)
    assert [x for c in chunks for x in c] == list(range(3, 1_000_003, 2))
    assert max(len(pickle.dumps(c, protocol=5)) for c in chunks) < 100


def test_lists_and_tuples_are_sliced_into_copies() -> None:
    items = list(range(10))
    chunks = list(_chunks(items, 4))
    assert chunks == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    items[0] = -1
    assert chunks[0][0] == 0
    assert list(_chunks(tuple(range(5)), 2)) == [(0, 1), (2, 3), (4,)]
    assert list(_chunks([], 3)) == []


def test_other_iterables_are_read_into_lists() -> None:
    assert list(_chunks((i for i in range(5)), 2)) == [[0, 1], [2, 3], [4]]
    assert list(_chunks(iter(()), 2)) == []
