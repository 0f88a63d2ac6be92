"""The benchmark scripts under bench/ import, parse their arguments and format their reports.

Nothing here starts a process or opens a socket; the benchmarks themselves run by hand
(``python bench/run_all.py --quick``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` (the scripts import each other as top-level modules)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_run_all_arguments_and_report() -> None:
    run_all, tasks, report = load("run_all"), load("suite_tasks"), load("suite_report")
    quick = run_all.parse(["--quick", "--out", "x", "--only", "rankpool.Executor", "--skip-scale"])
    assert quick.quick and quick.only == ["rankpool.Executor"] and quick.skip_scale
    assert quick.passthrough == ["--quick"] and quick.repeat == 1
    full = run_all.parse([])
    assert full.repeat == 3 and full.mixed > quick.mixed and full.passthrough == []
    with pytest.raises(SystemExit):
        run_all.parse(["--only", "no-such-system"])
    assert set(run_all.CASES) == set(run_all.SYSTEMS)
    work = tasks.mixed_workload(50)
    assert work == tasks.mixed_workload(50)  # a fixed seed
    assert {k for k, _ in work} <= {1, 2, 4} and all(0.005 <= d <= 0.05 for _, d in work)
    rows = report.median_rows({
        "rankpool.Executor": [{"tasks_per_s": 100.0, "rtt_ms": 1.0, "np_64MB_GBps": 2.0,
                               "rtt2_ms": 3.0, "rtt4_ms": 4.0, "mixed_utilisation": 0.95},
                              {"tasks_per_s": 300.0, "rtt_ms": 3.0}],
        "Parsl HTEX direct": [{"tasks_per_s": 1.0}],
        "Parsl HTEX direct (tuned)": [{"tasks_per_s": 3.0}],
        "ProcessPoolExecutor": [{"tasks_per_s": 50.0, "rtt_ms": 0.5}],
        "executorlib": [{"error": "not installed"}]})
    assert rows["rankpool.Executor"]["tasks_per_s"] == 200.0
    assert rows["executorlib"]["error"] == "not installed"
    text = report.tables(rows)
    assert "| rankpool.Executor | 200 | 1.0 |" in text and "executorlib: not installed" in text
    verdicts = {what: ok for what, ok, _ in report.targets(rows)}
    # against each peer's best configuration: 200 is 200× untuned HTEX but only 66.7× tuned
    assert verdicts["rankpool.Executor throughput ≥ 50× Parsl HTEX direct (tuned) "
                    "(its best configuration)"] is True
    assert not any("≥ 50× Parsl HTEX direct (its" in what for what in verdicts)
    assert verdicts["rankpool.Executor round trip, ÷ ProcessPoolExecutor's in this run "
                    "(≤ 1 ms where that is 0.4 ms: ≤ 2.5×)"] is False  # 2.0 ms ÷ 0.5 ms: 4×
    assert verdicts["rankpool.Executor: mixed-workload utilisation ≥ 90 %"] is True


def test_schedule_bounds_of_the_placement_policies() -> None:
    measure, tasks = load("suite_measure"), load("suite_tasks")
    # 2 ranks: a 1-rank task runs, a 2-rank task blocks, a second 1-rank task waits behind it
    work = [(1, 1.0), (2, 1.0), (1, 1.0)]
    assert measure.schedule_bound(work, 2, backfill=False) == pytest.approx(4 / 6)
    assert measure.schedule_bound(work, 2, backfill=True, lend=0) == pytest.approx(4 / 6)
    assert measure.schedule_bound(work, 2, backfill=True, lend=1) == pytest.approx(1.0)
    assert measure.schedule_bound(work, 2, backfill=True) == pytest.approx(1.0)
    mixed = tasks.mixed_workload(120)
    strict, lent, greedy = (measure.schedule_bound(mixed, 4, True, lend=n) for n in (0, 2, 10**9))
    assert strict < 0.85 < 0.9 < lent < greedy  # what the lending budget buys on this workload
    assert greedy == pytest.approx(measure.schedule_bound(mixed, 4, backfill=True))
    report = load("suite_report")
    row = {"rtt2_ms": 3.0, "rtt4_ms": 4.0, "mixed_utilisation": 0.9, "mixed_bound_fifo": 0.8,
           "mixed_bound_backfill": 0.99, "mixed_bound_lend": 0.967, "mixed_lend": 2}
    text = report.tables(report.median_rows({"rankpool.CommExecutor": [row]}))
    assert "96.7 % with rankpool's placement" in text and "lent at most 2 times" in text


def test_scale_sim_arguments_and_table(tmp_path: Path) -> None:
    scale_sim = load("scale_sim")
    row = {"pools": 1, "ranks": 128, "tasks_per_s": 100_000.0, "ix_cpu_us_per_task": 5.0,
           "latency_ms": {"median": 0.5, "p99": 1.0}, "rss_mb": 30.0, "rss_peak_mb": 31.0,
           "idle_cores": 0.01, "heartbeat_pass_ms": {"median": 0.1}}
    big = dict(row, pools=10_000, ranks=1_280_000, tasks_per_s=85_000.0, rss_peak_mb=400.0,
               register_s=4.5)
    assert "| 10,000 | 1,280,000 | 85,000 | 0.85 | 5.0 |" in scale_sim.table([row, big])
    assert scale_sim.table([row, big]).endswith("| 1.0 | 4.5 |")  # idle CPU %, registration s
    assert all(ok for _, ok, _ in scale_sim.targets([row, big]))
    slow = dict(big, tasks_per_s=60_000.0, register_s=6.0)
    assert [what for what, ok, _ in scale_sim.targets([row, slow]) if not ok] == [
        "≥ 0.8× the 1-pool rate at 10,000 pools", "10,000 pools registered in < 5 s"]
    # rounds: each 10,000-pool rate against its own round's 1-pool rate, then the median;
    # registration must hold every time
    rounds = [dict(row, round=1), dict(big, round=1), dict(row, round=2, tasks_per_s=50_000.0),
              dict(big, round=2, tasks_per_s=45_000.0), dict(row, round=3, tasks_per_s=90_000.0),
              dict(big, round=3, tasks_per_s=60_000.0, register_s=5.5)]
    assert "| 10,000 | 1,280,000 | 45,000 | 0.90 |" in scale_sim.table(rounds)
    got = {what: (ok, figure) for what, ok, figure in scale_sim.targets(rounds)}
    assert got["≥ 0.8× the 1-pool rate at 10,000 pools"] == (
        True, "0.85× (median of rounds); each round: 0.85, 0.90, 0.67")
    assert got["10,000 pools registered in < 5 s"] == (False, "5.5 s at most")
    assert scale_sim.percentile([1, 2, 3, 4], 50) == 2 and scale_sim.percentile([5], 99) == 5
    raw = tmp_path / "raw.txt"
    raw.write_text("main (a.py:1);loop (b/c.py:2);send (zmq/s.py:3) 3\n"
                   "main (a.py:1);loop (b/c.py:9) 1\n")
    summary = load("pyspy").summarize_raw(str(raw))
    assert summary["samples"] == 4 and summary["own"][0] == ("send (zmq/s.py)", 75.0)
    assert ("loop (b/c.py)", 100.0) in summary["inclusive"]


def test_scale_sim_result_batches_decode() -> None:
    """The simulated pools answer in the real result-batch format."""
    sim_front, sim_roles = load("sim_front"), load("sim_roles")
    from rankpool.protocol.batches import encode_tasks, task_ids
    from rankpool.protocol.result_batches import decode_results
    from rankpool.protocol.wire import decode_header
    frames = encode_tasks(sim_front._tasks(10, 3))
    ids = task_ids(decode_header(frames[0]), frames[1:])
    reply = sim_roles.answer(ids)
    results = decode_results(decode_header(reply[0]), reply[1:])
    assert [r.task_id for r in results] == [10, 11, 12] and all(r.ok for r in results)


def test_pool_dispatch_arguments() -> None:
    pool_dispatch = load("pool_dispatch")
    args = pool_dispatch.parse(["--quick"])
    assert args.ranks == [8, 64] and args.rounds == 1 and args.tasks <= 2000
    with pytest.raises(SystemExit):
        pool_dispatch.parse(["--ranks", "1"])
    text = pool_dispatch.table({"by_ranks": {"8": {"workers": 7, "tasks_per_s": 100.0,
                                                   "rtt_ms": 0.5, "rank0_cores": 0.5,
                                                   "rank0_us_per_task": 5.0}},
                                "ratio": 1.0, "ratio_label": "7 workers / 7 workers"})
    assert "| 8 | 7 | 100 |" in text


def test_load_arguments_stream_and_report() -> None:
    load_bench = load("load")
    full = load_bench.parse([])
    assert (full.tasks, full.wide, full.ranks, full.warmup) == (1_000_000, 100_000, 4, 50_000)
    quick = load_bench.parse(["--quick"])
    assert quick.tasks == 20_000 and quick.wide == 2_000 and quick.warmup == 1000
    with pytest.raises(SystemExit):
        load_bench.parse(["--ranks", "1"])
    assert set(load_bench.widths(200, 4)) == {2, 3, 4}

    class Done:  # a future that is already resolved
        def __init__(self, value: int) -> None:
            self.value = value

        def result(self, timeout: float | None = None) -> int:
            return self.value

    seen: list[int] = []
    progress: list[int] = []
    rate = load_bench.stream(Done, 25, 4, lambda i, v: seen.append(v), 10, progress.append)
    assert seen == list(range(25)) and progress == [10, 20] and rate > 0

    role = {"interchange": 20.0, "rank 0": 50.0, "rank 1": 60.0}
    text = load_bench.report({
        "tasks": 1000, "wide": 100, "ranks": 2, "window": 10, "noop_tasks_per_s": 5000.0,
        "wide_tasks_per_s": 500.0, "wide_rank_tasks": 200,
        "rss_mb": {"warm": role, "after_noop": role, "end": {**role, "rank 0": 51.5}},
        "rss_growth_mb": {"interchange": 0.0, "rank 0": 1.5, "rank 1": 0.0},
        "free_communicators_before": [2044, 2044], "free_communicators_after": [2044, 2044]})
    assert "| rank 0 | 50.0 | 50.0 | 51.5 | +1.5 |" in text
    assert "under 50 MB" in text and "none leaked" in text


def test_gc_time_and_wakeups_import_and_refuse_bad_arguments(capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    gc_time, wakeups = load("gc_time"), load("wakeups")
    for bad in ([], ["--build", "nosource"], ["--build", "x=/no/such/folder"]):
        with pytest.raises(SystemExit):
            gc_time.main(bad)
    assert "LABEL=SRC" in capsys.readouterr().err
    assert gc_time.PROBE.joinpath("sitecustomize.py").is_file()  # the probe the tests use
    assert set(wakeups.PLACEMENTS) == {"free", "one core", "two cores"}
    with pytest.raises(SystemExit):
        wakeups.main(["--trips", "many"])


def test_split_batches_measures_a_build_and_refuses_bad_arguments(
        capsys: pytest.CaptureFixture[str]) -> None:
    split_batches = load("split_batches")
    for bad in ([], ["--build", "x=/no/such/folder"]):
        with pytest.raises(SystemExit):
            split_batches.main(bad)
    assert "LABEL=SRC" in capsys.readouterr().err
    figures = split_batches.measure(64, 16)
    assert set(figures) == {"decode", "split", "whole"} and all(v > 0 for v in figures.values())


def test_rank0_alone_refuses_bad_arguments_and_tabulates_rounds(
        capsys: pytest.CaptureFixture[str]) -> None:
    rank0_alone = load("rank0_alone")
    for bad in (["--build", "x"], ["--rounds", "some"]):
        with pytest.raises(SystemExit):
            rank0_alone.main(bad)
    assert "LABEL=SRC" in capsys.readouterr().err
    text = rank0_alone.table({"before": [9.0, 11.0, 10.0], "now": [7.5, "error: gone"]})
    assert "| before | 9.00, 11.00, 10.00 | 10.00 |" in text
    assert "| now | 7.50, error: gone | 7.50 |" in text
    steps = dict.fromkeys(rank0_alone.STEPS, 0.5)
    text = rank0_alone.steps_table({"now": [{**steps, "decode": 0.9}, steps],
                                    "old": ["error: gone"]})
    assert "| now | 0.500 | 0.500 | 0.500 | 0.500 | 0.500 | 2.500 |" in text  # the best round
    assert "| old | - | - | - | - | - | error: gone |" in text


def test_cpu_split_names_ranks_by_their_launchers_numbers() -> None:
    cpu_split = load("cpu_split")

    class Proc:
        def __init__(self, pid: int, env: dict[str, str]) -> None:
            self.pid, self._env = pid, env

        def environ(self) -> dict[str, str]:
            return self._env

    procs = [Proc(10, {"PMI_RANK": "2"}), Proc(11, {"OMPI_COMM_WORLD_RANK": "0"}),
             Proc(12, {"SLURM_PROCID": "1"}), Proc(9, {})]
    assert [p.pid for p in sorted(procs, key=cpu_split._rank_of)] == [11, 12, 10, 9]


def test_builds_mixed_losses_account_for_every_lost_rank_second() -> None:
    builds = load("builds")
    # 3 worker ranks (rank 3 never used), t0 = 100: a 1-rank task on rank 1, then a 2-rank task
    # on ranks 1 and 2 whose rank 2 waited at the Barrier; sleeps overshoot by 0.01
    work = [(1, 1.0), (2, 2.0)]
    spans = [(1, 100.5, 101.51, 101.51),
             [(1, 102.0, 104.01, 104.5), (2, 102.4, 104.41, 104.5)]]
    out = load("build_measures").mixed_losses(work, spans, 100.0, 5.0, 3)
    assert out["overshoot"] == pytest.approx(0.03)
    assert out["barrier"] == pytest.approx(0.49 + 0.09)
    assert out["before_2"] == pytest.approx(102.0 - 101.51)
    assert (out["start"], out["end"]) == (pytest.approx(0.5 + 2.4), pytest.approx(0.5 + 0.5))
    assert out["unused"] == pytest.approx(5.0)
    assert out["lost"] == pytest.approx(3 * 5.0 - 1.0 - 2 * 2.0)
    parts = sum(v for k, v in out.items() if k not in ("lost", "utilisation"))
    assert parts == pytest.approx(out["lost"])
    assert out["utilisation"] == pytest.approx(5.0 / 15.0)
    with pytest.raises(SystemExit):
        builds.main(["--mixed"])  # no --build


def test_lone_trip_names_steps_that_exist_and_reads_trips_in_time_order(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lone_trip = load("lone_trip")
    for module, cls, fn in lone_trip.STEPS + lone_trip.FINE:  # a renamed step fails here
        owner = importlib.import_module(module)
        owner = getattr(owner, cls) if cls else owner
        assert callable(getattr(owner, fn.rstrip("?"))), (module, cls, fn)
    # two processes' stamps, written as the hook writes them: two trips of the same order
    (tmp_path / "1.log").write_text("100 1 SUBMIT\n150 1 a:in\n900 1 DONE\n"
                                    "1000 1 SUBMIT\n1100 1 a:in\n2000 1 DONE\n")
    (tmp_path / "2.log").write_text("400 2 b:in\n1500 2 b:in\n")
    trips = lone_trip.read_trips(tmp_path)
    assert [[name for _, _, name in trip] for trip in trips] == \
        [["SUBMIT", "a:in", "b:in", "DONE"]] * 2
    lone_trip.report(trips)
    out = capsys.readouterr().out
    assert "2 trips; 2 in the most common order" in out
    # medians of the gaps (a: 50 and 100 ns, b: 250 and 400, DONE: 500 and 500) and of the
    # times since submit
    assert "| a:in | process 1 | 0.1 | 0.1 |" in out
    assert "| b:in | process 2 | 0.3 | 0.4 |" in out
    assert "| DONE | process 1 | 0.5 | 0.9 |" in out
