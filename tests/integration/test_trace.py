"""The rank-occupancy trace: recorded by the pool, written to HDF5 and drawn as a PNG."""

from __future__ import annotations

import h5py
import helpers  # noqa: F401  (puts this folder on the pools' PYTHONPATH)
import pytest

from rankpool import Executor
from rankpool.cli import main
from rankpool.tracing import NoTrace, load, trace_run, utilisation


def where(comm=None):
    return comm.Get_size()


@pytest.mark.timeout(90)
def test_trace_records_every_rank_of_every_task(tmp_path):
    run = tmp_path / "run"
    with Executor(max_ranks=3, run_dir=str(run), trace=True) as ex:
        futures = [ex.requirements(num_ranks=w).submit(where) for w in (1, 2, 3, 1, 2)]
        assert [f.result() for f in futures] == [1, 2, 3, 1, 2]
    [block] = load(str(run))                       # written when the pool left
    assert len(block.task) == 1 + 2 + 3 + 1 + 2     # one row per (task, rank)
    ids = {int(t) for t in block.task}
    assert ids == {f.task_id for f in futures}
    for t in ids:
        rows = block.task == t
        width = int(block.width[rows][0])
        assert rows.sum() == width and len(set(block.rank[rows].tolist())) == width
    assert set(block.rank.tolist()) <= {1, 2, 3} and (block.end >= block.start).all()
    assert 0 < utilisation([block]) <= 1
    assert main(["trace", str(run)]) == 0            # the command writes both files
    out = trace_run(str(run))
    with h5py.File(out["hdf5"]) as h5:
        assert h5["block-0/task"].shape == (9,)
        assert 0 < h5.attrs["utilisation"] <= 1
    assert (run / "trace.png").stat().st_size > 1000


def test_no_trace_says_how_to_get_one(tmp_path, capsys):
    with pytest.raises(NoTrace, match="trace=True"):
        load(str(tmp_path))
    assert main(["trace", str(tmp_path)]) == 1
    assert "trace=True" in capsys.readouterr().err
    assert main(["trace", str(tmp_path / "missing")]) == 2
