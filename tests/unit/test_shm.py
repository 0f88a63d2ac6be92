"""The shared-memory plane's parts in one process: arena (placement, reuse, freeing, growth,
the cap), descriptors (round trip and every kind of bad one), the reader, cleanup, and the
choices and options that switch the plane on."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from rankpool.errors import SharedMemoryError
from rankpool.frontends.settling import settle
from rankpool.frontends.task_future import TaskFuture
from rankpool.mpi_pool.config import PoolConfig, parse
from rankpool.protocol.result_batches import Outcome, Result
from rankpool.shm import arena as shm
from rankpool.shm import reader as shm_reader
from rankpool.shm import run as shm_run
from rankpool.shm.plane import FrontEndPlane, check_cap, choose_shared_memory
from rankpool.task.serialize import dumps_data, loads_data

MB = 1024 * 1024


def run_files(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir(shm_run.SHM_DIR) if n.startswith(prefix))


@pytest.fixture
def prefix() -> Iterator[str]:
    p = shm_run.new_run_prefix()
    yield p
    shm_run.sweep(p)


@pytest.fixture
def arena(prefix: str) -> Iterator[shm.Arena]:
    a = shm.Arena(prefix, cap=64 * MB)
    yield a
    a.close()


def big(n: int, value: int = 7) -> np.ndarray:
    return np.full(n, value, np.uint8)


# -- the arena -----------------------------------------------------------------------------------
def test_small_buffers_stay_frames(arena: shm.Arena) -> None:
    small = bytes(shm.THRESHOLD - 1)
    frames, slots = arena.publish([small], reader_frees=True)
    assert frames == [small] and slots == [] and arena.segments == []


def test_a_placed_buffer_reads_back_and_its_reader_frees_it(arena: shm.Arena, prefix: str) -> None:
    data = np.arange(3 * MB, dtype=np.uint8)
    frames, slots = arena.publish([memoryview(data)], reader_frees=True)
    assert len(slots) == 1 and shm.is_descriptor(frames[0]) and len(frames[0]) < 200
    desc = shm.parse_descriptor(frames[0])
    assert (desc.host, desc.offset, desc.length) == (shm.HOST, shm.HEADER, data.nbytes)
    assert desc.name.startswith(f"{prefix}-{os.getpid()}-")
    stat = os.stat(os.path.join(shm_run.SHM_DIR, desc.name))
    assert stat.st_mode & 0o777 == 0o600
    assert arena.in_use() == 1
    out = shm_reader.Reader().fetch(desc)
    assert bytes(out) == data.tobytes() and not out.readonly
    assert (arena.in_use(), arena.lent()) == (0, 1)  # its only reader borrowed it
    del out
    assert (arena.in_use(), arena.lent()) == (0, 0)
    assert slots[0][0].free


def test_free_segments_are_reused_and_generations_move_on(arena: shm.Arena) -> None:
    reader = shm_reader.Reader()
    first = shm.parse_descriptor(arena.publish([big(2 * MB, 1)], True)[0][0])
    reader.fetch(first)
    second = shm.parse_descriptor(arena.publish([big(2 * MB, 2)], True)[0][0])
    assert second.name == first.name and second.generation == first.generation + 1
    assert bytes(reader.fetch(second)) == bytes(big(2 * MB, 2))
    with pytest.raises(SharedMemoryError,
                       match=r"already freed or reused \(state FREE, generation \d+, expected"):
        reader.fetch(first)  # a stale descriptor is refused, not read
    assert len(arena.segments) == 1


def test_buffers_in_flight_grow_the_arena(arena: shm.Arena) -> None:
    frames, slots = arena.publish([big(MB), big(MB, 3)], reader_frees=False)
    names = {shm.parse_descriptor(f).name for f in frames}
    assert len(names) == 2 and len(arena.segments) == 2 and arena.held == 2 * MB


def test_sender_freed_slots_wait_for_release(arena: shm.Arena) -> None:
    reader = shm_reader.Reader()
    frames, slots = arena.publish([big(MB)], reader_frees=False)
    desc = shm.parse_descriptor(frames[0])
    reader.fetch(desc)
    reader.fetch(desc)  # every rank of a task reads the same arguments
    assert arena.in_use() == 1
    arena.release(slots)
    assert arena.in_use() == 0
    again = shm.parse_descriptor(arena.publish([big(MB)], False)[0][0])
    assert again.name == desc.name
    arena.release(slots)  # a stale release leaves the new use alone
    assert arena.in_use() == 1


def test_a_borrowed_result_is_read_in_place_until_its_last_view_dies(arena: shm.Arena) -> None:
    value = np.arange(MB, dtype=np.float64)
    data, buffers = dumps_data(value)
    frames, slots = arena.publish(buffers, reader_frees=True)
    segment = slots[0][0]
    back = loads_data(data, frames)
    np.testing.assert_array_equal(back, value)
    assert back.flags.writeable and segment.map[shm.STATE_AT] == shm.LENT
    # while it is borrowed, the sender places later buffers elsewhere
    later = shm.parse_descriptor(arena.publish([big(8 * MB, 3)], True)[0][0])
    assert later.name != segment.name
    back[0] = -1.0  # the borrower's writes land in the segment, the sender's copy of nothing
    assert struct.unpack_from("<d", segment.map, shm.HEADER)[0] == -1.0
    part = back[::2]
    del back
    assert segment.map[shm.STATE_AT] == shm.LENT  # a view of a view still reads it
    assert part[1] == 2.0
    del part
    assert segment.free
    again = shm.parse_descriptor(arena.publish([big(8 * MB, 4)], True)[0][0])
    assert again.name == segment.name and again.generation == slots[0][1] + 1


def test_an_argument_its_task_keeps_outlives_its_release(arena: shm.Arena) -> None:
    frames, slots = arena.publish([big(MB, 5)], reader_frees=False)
    desc = shm.parse_descriptor(frames[0])
    kept = np.frombuffer(shm_reader.Reader().fetch(desc, only_reader=True), np.uint8)
    assert (arena.in_use(), arena.lent()) == (0, 1)
    arena.release(slots)  # the task ended; its argument is still borrowed
    assert slots[0][0].map[shm.STATE_AT] == shm.LENT
    other = shm.parse_descriptor(arena.publish([big(MB, 6)], False)[0][0])
    assert other.name != desc.name
    assert (kept == 5).all()
    del kept
    assert slots[0][0].free
    assert shm.parse_descriptor(arena.publish([big(MB, 7)], False)[0][0]).name == desc.name


def test_a_forked_child_dropping_a_borrowed_view_does_not_free_it(arena: shm.Arena) -> None:
    frames, slots = arena.publish([big(MB, 4)], reader_frees=True)
    kept = np.frombuffer(shm_reader.Reader().fetch(shm.parse_descriptor(frames[0])), np.uint8)
    pid = os.fork()
    if pid == 0:  # the child drops its copy of the view, then runs the exit handlers
        code = 1
        try:
            del kept
            import gc
            gc.collect()
            import atexit
            atexit._run_exitfuncs()
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    assert slots[0][0].map[shm.STATE_AT] == shm.LENT  # the parent still reads it
    assert (kept == 4).all()
    del kept
    assert slots[0][0].free


def test_arguments_with_several_readers_are_copied(arena: shm.Arena) -> None:
    frames, slots = arena.publish([big(MB, 5)], reader_frees=False)
    desc = shm.parse_descriptor(frames[0])
    reader = shm_reader.Reader()
    first, second = (np.frombuffer(reader.fetch(desc), np.uint8) for _ in range(2))
    first[:] = 1  # one rank's writes never reach another rank's copy
    assert (second == 5).all() and arena.in_use() == 1 and arena.lent() == 0
    borrowed = reader.fetch(desc, only_reader=True)
    copied = reader.fetch(desc, only_reader=True)  # read again (the task ran again): a copy
    assert arena.lent() == 1 and np.frombuffer(copied, np.uint8)[0] == 5
    del copied
    assert arena.lent() == 1
    del borrowed
    assert arena.lent() == 0


def test_a_borrowed_buffer_outlives_its_sender(prefix: str) -> None:
    sender = shm.Arena(prefix)
    frames, _ = sender.publish([big(2 * MB, 9)], reader_frees=True)
    reader = shm_reader.Reader()
    kept = np.frombuffer(reader.fetch(shm.parse_descriptor(frames[0])), np.uint8)
    assert (sender.in_use(), sender.lent()) == (0, 1)
    sender.close(linger=30.0)  # borrowed, not in flight: the close does not wait for it
    assert run_files(prefix) == []
    reader.close()
    assert (kept == 9).all()  # unlinked and unmapped by both, still readable while it lives
    del kept  # the late give-back writes into memory nobody else maps, and does not raise


def test_best_fit_picks_the_smallest_free_segment(arena: shm.Arena) -> None:
    frames, slots = arena.publish([big(8 * MB), big(MB)], reader_frees=False)
    large, small = (shm.parse_descriptor(f).name for f in frames)
    arena.release(slots)
    picked = shm.parse_descriptor(arena.publish([big(MB)], False)[0][0]).name
    assert picked == small
    picked = shm.parse_descriptor(arena.publish([big(6 * MB)], False)[0][0]).name
    assert picked == large


def test_a_far_larger_free_segment_is_not_hoarded(arena: shm.Arena) -> None:
    frames, slots = arena.publish([big(32 * MB)], reader_frees=False)
    arena.release(slots)
    name = shm.parse_descriptor(arena.publish([big(MB)], False)[0][0]).name
    assert name != shm.parse_descriptor(frames[0]).name and len(arena.segments) == 2


def test_free_segments_beyond_keep_are_let_go(prefix: str) -> None:
    arena = shm.Arena(prefix, keep=2 * MB)
    reader = shm_reader.Reader()
    try:
        frames, _ = arena.publish([big(MB, 1), big(MB, 2), big(8 * MB, 3)], reader_frees=True)
        names = [shm.parse_descriptor(f).name for f in frames]
        assert len(run_files(prefix)) == 3
        for f in frames:  # the 8 MiB segment was placed last: the first candidate to keep
            reader.fetch(shm.parse_descriptor(f))
        arena.trim()
        # the most recently used free segments are kept while they fit in 2 MiB
        assert run_files(prefix) == sorted(names[:2])
        assert arena.held == 2 * MB
    finally:
        arena.close()
        reader.close()


def test_a_placement_looks_at_few_segments_and_finds_freed_ones_later(prefix: str) -> None:
    arena = shm.Arena(prefix)
    try:
        count = 3 * shm.PROBE
        placed = [arena.publish([big(MB, i)], reader_frees=False) for i in range(count)]
        arena.release(placed[-1][1])  # the newest is freed, the oldest still in flight
        freed = placed[-1][1][0][0]
        segments = len(arena.segments)
        names = [shm.parse_descriptor(arena.publish([big(MB)], False)[0][0]).name
                 for _ in range(count // shm.PROBE)]
        # each placement read at most PROBE states, the ones in use went to the back, and the
        # placement that reached the freed segment took it: a new segment for each before
        assert freed.name in names
        assert len(arena.segments) - segments == names.index(freed.name)
        assert names.index(freed.name) <= count // shm.PROBE - 1
    finally:
        arena.close()


def test_sweeps_started_by_placements_are_spaced(prefix: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    arena = shm.Arena(prefix, keep=MB)
    try:
        placed = [arena.publish([big(MB, i)], reader_frees=False)[1] for i in range(3)]
        arena.trim()  # a sweep just ran
        monkeypatch.setattr(shm, "TRIM_EVERY", 3600.0)
        arena.release(placed[0])
        arena.release(placed[1])
        assert len(run_files(prefix)) == 3  # no sweep yet: two free segments, 1 MiB kept
        arena.trim()  # the sweep a rank runs when it has time
        assert len(run_files(prefix)) == 2
        monkeypatch.setattr(shm, "TRIM_EVERY", 0.0)
        arena.release(placed[2])
        assert len(run_files(prefix)) == 1 and arena.held == MB
    finally:
        arena.close()


def test_past_the_cap_buffers_fall_back_to_frames(prefix: str) -> None:
    arena = shm.Arena(prefix, cap=3 * MB)
    try:
        one, two = big(2 * MB, 1), big(2 * MB, 2)
        frames, slots = arena.publish([one, two], reader_frees=False)
        assert shm.is_descriptor(frames[0]) and frames[1] is two and len(slots) == 1
        assert arena.fallbacks == 1 and arena.held == 2 * MB
        too_big = big(4 * MB)
        assert arena.publish([too_big], False)[0] == [too_big]
        arena.release(slots)  # once free, the old segment makes room for a new size
        frames, _ = arena.publish([big(3 * MB)], False)
        assert shm.is_descriptor(frames[0]) and arena.held == 3 * MB
        assert len(run_files(prefix)) == 1
    finally:
        arena.close()


def test_a_zero_cap_sends_everything_as_frames(prefix: str) -> None:
    arena = shm.Arena(prefix, cap=0)
    buf = big(MB)
    assert arena.publish([buf], True)[0] == [buf] and run_files(prefix) == []
    arena.close()


def test_close_unlinks_every_segment(prefix: str) -> None:
    arena = shm.Arena(prefix, cap=64 * MB)
    frames, _ = arena.publish([big(MB), big(2 * MB)], reader_frees=False)
    assert len(run_files(prefix)) == 2
    arena.close()
    assert run_files(prefix) == []
    buf = big(MB)
    assert arena.publish([buf], True)[0] == [buf]  # a closed arena places nothing
    with pytest.raises(SharedMemoryError, match="cannot be opened"):
        shm_reader.Reader().fetch(shm.parse_descriptor(frames[0]))


def test_arena_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="run prefix"):
        shm.Arena("../etc")
    with pytest.raises(ValueError, match="shared_memory_cap"):
        shm.Arena(shm_run.new_run_prefix(), cap=-1)


# -- descriptors ----------------------------------------------------------------------------------
def _desc(**kw: object) -> shm.Descriptor:
    fields = {"host": shm.HOST, "name": "rankpool-0123abcd4567-42-1", "offset": shm.HEADER,
              "length": 10, "generation": 3, "flags": shm.READER_FREES, **kw}
    return shm.Descriptor(**fields)  # type: ignore[arg-type]


def test_descriptors_round_trip() -> None:
    d = _desc()
    assert shm.parse_descriptor(d.encode()) == d
    assert shm.parse_descriptor(memoryview(d.encode())) == d


def test_only_short_frames_with_the_magic_are_descriptors() -> None:
    assert not shm.is_descriptor(b"x" * 100)
    assert not shm.is_descriptor(shm.DESCRIPTOR_MAGIC + bytes(shm.MAX_DESCRIPTOR))
    assert shm.is_descriptor(_desc().encode())


@pytest.mark.parametrize("frame, match", [
    (_desc().encode()[:20], "truncated or garbled"),
    (_desc().encode()[:-3], "truncated or padded"),
    (_desc().encode() + b"xx", "truncated or padded"),
    (_desc(name="rankpool-../../etc/passwd").encode(), "names no rankpool segment"),
    (_desc(name="other-file").encode(), "names no rankpool segment"),
    (_desc(name="rankpool-0123abcd4567.host").encode(), "names no rankpool segment"),
    (_desc(offset=8).encode(), "inside the segment header"),
    (b"not a descriptor", "not a shared-memory descriptor"),
])
def test_bad_descriptors_are_refused_with_a_reason(frame: bytes, match: str) -> None:
    with pytest.raises(SharedMemoryError, match=match):
        shm.parse_descriptor(frame)


def test_descriptors_that_cannot_be_read_say_why(arena: shm.Arena) -> None:
    reader = shm_reader.Reader()
    with pytest.raises(SharedMemoryError, match="cannot be opened") as info:
        reader.fetch(_desc())
    assert info.value.segment == "rankpool-0123abcd4567-42-1"
    with pytest.raises(SharedMemoryError, match="written on host 'elsewhere'"):
        reader.fetch(_desc(host="elsewhere"))
    real = shm.parse_descriptor(arena.publish([big(MB)], False)[0][0])
    with pytest.raises(SharedMemoryError, match="reaches byte"):
        shm_reader.Reader().fetch(_desc(name=real.name, length=2 * MB))


def test_a_file_that_is_no_segment_is_refused(prefix: str) -> None:
    name = f"{prefix}-1-1"
    with open(os.path.join(shm_run.SHM_DIR, name), "wb") as f:
        f.write(bytes(4096))
    with pytest.raises(SharedMemoryError, match="not a rankpool segment"):
        shm_reader.Reader().fetch(_desc(name=name))


def test_shared_memory_error_keeps_its_fields_across_pickle() -> None:
    err = pickle.loads(pickle.dumps(SharedMemoryError("seg", "gone")))
    assert isinstance(err, SharedMemoryError) and (err.segment, err.reason) == ("seg", "gone")
    assert "seg" in str(err) and "gone" in str(err)


# -- through serialization -------------------------------------------------------------------------
@pytest.mark.parametrize("value", [
    np.arange(MB // 8, dtype=np.float64),
    np.arange(4 * MB // 8, dtype=np.int64).reshape(512, -1)[:, ::2],  # not contiguous
    bytearray(b"ab" * MB),
])
def test_loads_data_resolves_descriptors(arena: shm.Arena, value: object) -> None:
    data, buffers = dumps_data(value)
    frames, _ = arena.publish(buffers, reader_frees=True)
    back = loads_data(data, frames)
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(back, value)
        assert back.flags.writeable
    else:
        assert back == value and type(back) is bytearray
    assert arena.in_use() == 0


def test_discard_frees_unread_results_and_ignores_junk(arena: shm.Arena) -> None:
    frames, _ = arena.publish([big(MB)], reader_frees=True)
    shm_reader.discard([frames[0], _desc().encode(), b"\x00RPSHM1\x00junk", big(10)])
    assert arena.in_use() == 0
    frames, _ = arena.publish([big(MB)], reader_frees=False)
    shm_reader.discard(frames)  # arguments are freed by their sender only
    assert arena.in_use() == 1
    frames, _ = arena.publish([big(MB)], reader_frees=True)
    kept = shm_reader.reader().fetch(shm.parse_descriptor(frames[0]))
    shm_reader.discard(frames)  # borrowed: its borrower frees it
    assert arena.lent() == 1
    del kept
    assert arena.lent() == 0


def test_a_result_with_an_unreadable_descriptor_fails_its_future() -> None:
    data, _ = dumps_data(np.zeros(MB, np.uint8))
    future = TaskFuture(1)
    settle(future, Result(1, [Outcome(0, True, data, [_desc(length=MB).encode()])]))
    with pytest.raises(SharedMemoryError, match="cannot be opened"):
        future.result(0)


def test_a_settled_future_frees_the_late_result(arena: shm.Arena) -> None:
    data, buffers = dumps_data(np.zeros(MB, np.uint8))
    frames, _ = arena.publish(buffers, reader_frees=True)
    future = TaskFuture(1)
    future.cancel()
    settle(future, Result(1, [Outcome(0, True, data, frames)]))
    assert arena.in_use() == 0


def test_the_reader_drops_mappings_of_unlinked_segments(prefix: str) -> None:
    reader = shm_reader.Reader()
    one, two = shm.Arena(prefix), shm.Arena(prefix)
    try:
        reader.fetch(shm.parse_descriptor(one.publish([big(MB)], True)[0][0]))
        assert len(reader._maps) == 1
        one.close()
        reader.fetch(shm.parse_descriptor(two.publish([big(MB)], True)[0][0]))
        assert len(reader._maps) == 1  # the unlinked segment's pages are let go
    finally:
        two.close()
        reader.close()


def test_a_kept_mapping_whose_name_was_reused_is_not_read(prefix: str) -> None:
    reader = shm_reader.Reader()
    arena = shm.Arena(prefix)
    try:
        desc = shm.parse_descriptor(arena.publish([big(MB, 1)], True)[0][0])
        reader.fetch(desc)  # now kept open, and freed
        arena.close()
        # a process of the run that got the same pid makes a segment of the same name
        again = shm._Segment(desc.name, MB)
        struct.pack_into("<Q", again.map, shm.GENERATION_AT, desc.generation)
        again.map[shm.STATE_AT] = shm.IN_USE
        again.data[:] = 2
        out = np.frombuffer(reader.fetch(desc), np.uint8)
        assert (out == 2).all()  # the new file's bytes, not the kept mapping's
        del out
        again.unlink()
    finally:
        reader.close()


# -- cleanup ---------------------------------------------------------------------------------------
def test_sweep_removes_a_dead_process_segments(prefix: str) -> None:
    code = (f"from rankpool.shm import arena as shm; import numpy as np, os\n"
            f"a = shm.Arena({prefix!r}); a.publish([np.ones(2**20, np.uint8)], False)\n"
            f"f, s = a.publish([np.ones(2**20, np.uint8)], False); a.release(s)\n"
            "os._exit(0)\n")  # as if killed: no atexit
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    live = shm.Arena(prefix)
    live.publish([big(MB)], True)
    live.publish([big(MB)], True)
    live.release([(s, s.generation) for s in live.segments[1:]])
    assert len(run_files(prefix)) == 4
    removed = shm_run.sweep(prefix, only_dead=True)
    assert len(removed) == 1  # the dead process's free segment; not its busy one, not ours
    assert len(run_files(prefix)) == 3
    open(shm_run.probe_path(prefix), "w").close()
    shm_run.sweep(prefix)
    assert run_files(prefix) == []
    live.close()


def test_the_front_end_plane_frees_arguments_and_cleans_up() -> None:
    plane = FrontEndPlane(64 * MB)
    try:
        assert shm_run.shares_front_end_memory(plane.prefix)
        frames = plane.publish_args(5, [big(MB)])
        assert shm.is_descriptor(frames[0]) and plane.arena.in_use() == 1
        plane.task_ended(4)
        assert plane.arena.in_use() == 1
        plane.task_ended(5)
        assert plane.arena.in_use() == 0
        plane.publish_args(6, [big(MB)])
    finally:
        plane.close()
    assert run_files(plane.prefix) == []
    assert not shm_run.shares_front_end_memory(plane.prefix)


# -- switching it on -------------------------------------------------------------------------------
def test_choose_shared_memory() -> None:
    assert choose_shared_memory(None, local=True) is True
    assert choose_shared_memory(None, local=False) is False
    assert choose_shared_memory(True, local=False) is True
    assert choose_shared_memory(False, local=True) is False
    with pytest.raises(TypeError, match="shared_memory must be True, False or None"):
        choose_shared_memory("yes", local=True)  # type: ignore[arg-type]
    assert check_cap(None) == shm.DEFAULT_CAP and check_cap(0) == 0
    for bad in (-1, 1.5, True, "1G"):
        with pytest.raises(ValueError, match="shared_memory_cap"):
            check_cap(bad)  # type: ignore[arg-type]


def test_pool_options_carry_the_plane() -> None:
    prefix = shm_run.new_run_prefix()
    cfg = PoolConfig("tcp://h:1", "0", shared_memory=prefix, shared_memory_cap=5 * MB)
    again = parse(cfg.to_argv())
    assert (again.shared_memory, again.shared_memory_cap) == (prefix, 5 * MB)
    assert "--shared-memory" not in PoolConfig("tcp://h:1", "0").to_argv()
    with pytest.raises(ValueError, match="--shared-memory: expected a shared-memory run prefix"):
        PoolConfig("tcp://h:1", "0", shared_memory="/dev/shm/x")
    with pytest.raises(ValueError, match="--shared-memory-cap"):
        PoolConfig("tcp://h:1", "0", shared_memory_cap=-5)


def test_a_rank_that_cannot_see_the_probe_sends_results_as_messages() -> None:
    from rankpool.mpi_pool.program import result_arena
    prefix = shm_run.new_run_prefix()
    assert result_arena(PoolConfig("tcp://h:1", "0", shared_memory=prefix)) is None
    assert result_arena(PoolConfig("tcp://h:1", "0")) is None
    open(shm_run.probe_path(prefix), "w").close()
    try:
        arena = result_arena(PoolConfig("tcp://h:1", "0", shared_memory=prefix))
        assert isinstance(arena, shm.Arena)
        arena.close()
    finally:
        shm_run.sweep(prefix)


def test_segment_header_layout() -> None:
    prefix = shm_run.new_run_prefix()
    arena = shm.Arena(prefix)
    try:
        desc = shm.parse_descriptor(arena.publish([big(MB)], False)[0][0])
        with open(os.path.join(shm_run.SHM_DIR, desc.name), "rb") as f:
            head = f.read(shm.HEADER)
        assert head[:8] == shm.SEGMENT_MAGIC and head[8] == shm.IN_USE
        assert struct.unpack_from("<QQ", head, 16) == (desc.generation, MB)
    finally:
        arena.close()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a segment to another user needs root")
def test_a_segment_of_another_user_is_never_mapped(arena: shm.Arena, prefix: str) -> None:
    """A file planted under the run's name by another user (or one made theirs) is refused
    before it is mapped, and another user's probe is no probe of the run."""
    frames, _ = arena.publish([memoryview(big(3 * MB))], reader_frees=True)
    desc = shm.parse_descriptor(frames[0])
    os.chown(os.path.join(shm_run.SHM_DIR, desc.name), 65534, 65534)
    with pytest.raises(SharedMemoryError, match="belongs to uid 65534, not to this user"):
        shm_reader.Reader().fetch(desc)
    probe = shm_run.probe_path(prefix)
    with open(probe, "w"):
        pass
    assert shm_run.shares_front_end_memory(prefix)
    os.chown(probe, 65534, 65534)
    assert not shm_run.shares_front_end_memory(prefix)
