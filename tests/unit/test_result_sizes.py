"""Rank 0 sends results in messages that fit the run's cap (rankpool.mpi_pool.result_sizes)."""

from __future__ import annotations

from rankpool.errors import MessageTooLarge
from rankpool.mpi_pool.result_sizes import fit_results, result_size
from rankpool.protocol.result_batches import Outcome, Result
from rankpool.task.serialize import dumps_data, loads_error

MB = 1 << 20


def value(task_id: int, nbytes: int) -> Result:
    return Result(task_id, [Outcome(0, True, b"v", [bytes(nbytes)])])


def test_results_are_grouped_under_the_cap_and_a_too_large_one_fails_its_task() -> None:
    results = [value(1, MB), value(2, MB), value(3, 5 * MB), value(4, MB // 2)]
    groups = fit_results(results, 2 * MB + 8192)
    # task 3's result fails (a small error now, so it joins the first message); 4 does not fit
    assert [[r.task_id for r in g] for g in groups] == [[1, 2, 3], [4]]
    assert all(sum(result_size(r) for r in g) <= 2 * MB + 8192 for g in groups)
    failed = groups[0][2]
    assert not failed.ok
    error = loads_error(failed.outcomes[0].data)
    assert isinstance(error, MessageTooLarge) and error.limit == 2 * MB + 8192
    assert "the result of task 3" in str(error) and "max_message_size" in str(error)


def test_results_that_fit_travel_in_one_message() -> None:
    small = [Result(i, [Outcome(0, True, dumps_data(i)[0])]) for i in range(100)]
    assert fit_results(small, MB) == [small]
