"""Rank 0's directory of kept communicators (``mpi_pool/comm_cache.py``): the same id for the
same ranks, the least recently used set dropped past the size with its id given to each of
its members to free, a returning set made afresh, and nothing kept once a rank died."""

from __future__ import annotations

from rankpool.mpi_pool.comm_cache import CommDirectory


def test_the_same_ranks_get_the_same_id_and_other_ranks_another() -> None:
    d = CommDirectory(size=4)
    a = d.id_for((1, 2))
    assert a > 0
    assert d.id_for((1, 2)) == a
    b = d.id_for((1, 2, 3))
    assert b not in (0, a)
    assert d.releases(1) == ()


def test_past_the_size_the_least_recently_used_set_is_released_to_its_members() -> None:
    d = CommDirectory(size=2)
    a = d.id_for((1, 2))
    b = d.id_for((3, 4))
    d.id_for((1, 2))            # (3, 4) is now the least recently used
    d.id_for((1, 3))            # one set too many
    assert d.releases(3) == (b,)
    assert d.releases(4) == (b,)
    assert d.releases(3) == ()  # told once
    assert d.releases(1) == () and d.releases(2) == ()
    again = d.id_for((3, 4))    # back: a new id, made afresh by its members
    assert again not in (a, b)


def test_after_a_death_every_member_frees_what_it_holds_and_nothing_is_kept() -> None:
    d = CommDirectory(size=8)
    a = d.id_for((1, 2))
    b = d.id_for((2, 3))
    d.stop()
    assert d.releases(2) == (a, b)
    assert d.releases(1) == (a,) and d.releases(3) == (b,)
    assert d.id_for((1, 2)) == 0


def test_a_directory_of_size_zero_keeps_nothing() -> None:
    d = CommDirectory(size=0)
    assert d.id_for((1, 2)) == 0
    assert d.releases(1) == ()
