"""The report of a ``run_all.py`` run: median rows, Markdown tables, targets, plots."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import statistics
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from suite_tasks import MPI_WORKERS, OURS, SYSTEMS, WORKERS  # noqa: E402


def median_rows(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per system, the median of every numeric figure over the rounds that produced it."""
    rows: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        ok = [r for r in results if "error" not in r]
        row: dict[str, Any] = {"rounds": len(ok)}
        if not ok:
            row["error"] = results[-1].get("error", "no result") if results else "not run"
        keys = {k for r in ok for k, v in r.items() if isinstance(v, (int, float))}
        for k in keys:
            values = [r[k] for r in ok if isinstance(r.get(k), (int, float))]
            row[k] = statistics.median(values)
        for r in ok[-1:]:
            for k in ("mixed_trace", "profile"):
                if k in r:
                    row[k] = r[k]
        rows[name] = row
    return rows


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def tables(rows: dict[str, dict[str, Any]]) -> str:
    ours = rows.get("rankpool.Executor", {}).get("tasks_per_s")
    out = ["| system | no-op tasks/s | rankpool.Executor ÷ this | 1-task round trip ms | "
           "start → 1st result s | 1 MB round trip ms | 64 MB round trip ms | 64 MB GB/s |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in SYSTEMS:
        r = rows.get(name)
        if r is None or "tasks_per_s" not in r:
            continue
        ratio = ours / r["tasks_per_s"] if ours else None
        out.append(f"| {name} | {r['tasks_per_s']:,.0f} | {_fmt(ratio, '.1f')} | "
                   f"{_fmt(r.get('rtt_ms'), '.2f')} | {_fmt(r.get('first_result_s'), '.2f')} | "
                   f"{_fmt(r.get('np_1MB_ms'), '.1f')} | {_fmt(r.get('np_64MB_ms'), '.0f')} | "
                   f"{_fmt(r.get('np_64MB_GBps'), '.2f')} |")
    out += ["", f"MPI tasks on {MPI_WORKERS} worker ranks:", "",
            "| system | 2-rank round trip ms | 4-rank round trip ms | mixed utilisation % | "
            "mixed makespan s (ideal) |", "|---|---:|---:|---:|---:|"]
    for name in SYSTEMS:
        r = rows.get(name)
        if r is None or "rtt2_ms" not in r:
            continue
        util = r.get("mixed_utilisation")
        extra = ""
        if "rtt2_percall_ms" in r:
            extra = (f" (block allocation; {r['rtt2_percall_ms']:.0f} / {r['rtt4_percall_ms']:.0f}"
                     f" ms with an mpiexec per call)")
        out.append(f"| {name}{extra} | {r['rtt2_ms']:.2f} | {r['rtt4_ms']:.2f} | "
                   f"{_fmt(None if util is None else util * 100, '.1f')} | "
                   f"{_fmt(r.get('mixed_makespan_s'), '.2f')} "
                   f"({_fmt(r.get('mixed_ideal_s'), '.2f')}) |")
    bounds = next((r for r in rows.values() if "mixed_bound_fifo" in r), None)
    if bounds:
        out += ["", f"The same workload scheduled with zero overhead: "
                f"{bounds['mixed_bound_fifo'] * 100:.1f} % in arrival order (no task passes a "
                f"blocked one; what a strict reservation without run-time estimates amounts to "
                f"on one "
                f"node), {bounds['mixed_bound_backfill'] * 100:.1f} % with greedy backfill "
                f"(any task that fits starts; wide tasks can starve)"
                + (f", {bounds['mixed_bound_lend'] * 100:.1f} % with rankpool's placement "
                   f"(backfill, a reservation for the first blocked task whose idle ranks are "
                   f"lent at most {bounds['mixed_lend']} times each)"
                   if "mixed_bound_lend" in bounds else "") + "."]
    skipped = [f"- {n}: {rows[n]['error']}" for n in SYSTEMS if n in rows and "error" in rows[n]]
    if skipped:
        out += ["", "Not measured:", "", *skipped]
    return "\n".join(out)


def targets(rows: dict[str, dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    """The issue's targets on this machine, as ratios within this run."""
    def rate(name: str) -> float | None:
        return rows.get(name, {}).get("tasks_per_s")

    def best(*names: str) -> tuple[str, float | None]:
        """The fastest configuration of a peer that ran."""
        ran = [(rate(n), n) for n in names if rate(n)]
        return (max(ran)[1], max(ran)[0]) if ran else (names[0], None)

    res: list[tuple[str, bool | None, str]] = []
    peers = (best("Parsl HTEX direct", "Parsl HTEX direct (tuned)"), best("mpi4py.futures"),
             best("ProcessPoolExecutor"))
    for ours in ("rankpool.Executor", "rankpool.CommExecutor"):
        mine = rate(ours)
        for (other, theirs), need in zip(peers, (50, 10, 3)):
            if mine and theirs:
                res.append((f"{ours} throughput ≥ {need}× {other} (its best configuration)",
                            mine / theirs >= need, f"{mine / theirs:.1f}×"))
    anchor = rows.get("ProcessPoolExecutor", {}).get("rtt_ms")
    trip = rows.get("rankpool.Executor", {}).get("rtt_ms")
    if anchor and trip:
        res.append(("rankpool.Executor round trip, ÷ ProcessPoolExecutor's in this run "
                    "(≤ 1 ms where that is 0.4 ms: ≤ 2.5×)", trip / anchor <= 2.5,
                    f"{trip / anchor:.1f}×"))
    for ours in OURS:
        gbps = rows.get(ours, {}).get("np_64MB_GBps")
        if gbps is not None:
            res.append((f"{ours}: 64 MB NumPy round trip ≥ 1 GB/s", gbps >= 1.0,
                        f"{gbps:.2f} GB/s"))
    for ours in OURS:
        util = rows.get(ours, {}).get("mixed_utilisation")
        if util is not None:
            res.append((f"{ours}: mixed-workload utilisation ≥ 90 %", util >= 0.9,
                        f"{util * 100:.1f} %"))
    return res


def plots(rows: dict[str, dict[str, Any]], out_dir: str, scale: dict[str, Any] | None) -> list[str]:
    """PNG plots; returns their file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = []
    names = [n for n in SYSTEMS if "tasks_per_s" in rows.get(n, {})]
    colours = ["#1f6fb4" if n in OURS else "#999999" for n in names]

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    panels = [("tasks_per_s", "no-op tasks/s (higher is better)", True),
              ("rtt_ms", "1-task round trip, ms (lower is better)", True),
              ("first_result_s", "start → first result, s (lower is better)", True),
              ("np_64MB_GBps", "64 MB NumPy round trip, GB/s (higher is better)", False)]
    for ax, (key, title, log) in zip(axes.flat, panels):
        vals = [rows[n].get(key, 0) or 0 for n in names]
        ax.barh(names, vals, color=colours)
        ax.invert_yaxis()
        if log:
            ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.tick_params(labelsize=8)
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:,.3g}", va="center", fontsize=7)
    fig.suptitle(f"{WORKERS} workers each (blue: rankpool)", fontsize=11)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "systems.png"), dpi=80)
    plt.close(fig)
    made.append("systems.png")

    mpi_names = [n for n in SYSTEMS if "rtt2_ms" in rows.get(n, {})]
    if mpi_names:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
        y = range(len(mpi_names))
        for off, k in ((-0.2, 2), (0.2, 4)):
            ax1.barh([i + off for i in y], [rows[n][f"rtt{k}_ms"] for n in mpi_names], height=0.4,
                     label=f"{k} ranks")
        ax1.set_yticks(list(y), mpi_names, fontsize=8)
        ax1.invert_yaxis()
        ax1.set_xscale("log")
        ax1.set_title("Barrier task round trip, ms (lower is better)", fontsize=10)
        ax1.legend(fontsize=8)
        util = [rows[n].get("mixed_utilisation", 0) * 100 for n in mpi_names]
        ax2.barh(mpi_names, util, color=["#1f6fb4" if n in OURS else "#999999" for n in mpi_names])
        ax2.axvline(90, color="red", lw=1, ls="--")
        ax2.invert_yaxis()
        ax2.set_xlim(0, 100)
        ax2.set_title(f"mixed 1/2/4-rank workload: utilisation of {MPI_WORKERS} ranks, %",
                      fontsize=10)
        ax2.tick_params(labelsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "mpi_tasks.png"), dpi=80)
        plt.close(fig)
        made.append("mpi_tasks.png")

    traced = [n for n in mpi_names if rows[n].get("mixed_trace")]
    if traced:
        fig, axes = plt.subplots(len(traced), 1, figsize=(11, 1.3 * len(traced) + 0.6),
                                 squeeze=False)
        for ax, n in zip(axes[:, 0], traced):
            events = sorted([(s, k) for k, s, _ in rows[n]["mixed_trace"]]
                            + [(e, -k) for k, _, e in rows[n]["mixed_trace"]])
            xs, ys, busy = [0.0], [0], 0
            for t, dk in events:
                busy += dk
                xs.append(t)
                ys.append(busy)
            ax.fill_between(xs, ys, step="post", alpha=0.6,
                            color="#1f6fb4" if n in OURS else "#999999")
            ax.set_ylim(0, MPI_WORKERS)
            ax.set_xlim(0, rows[n]["mixed_makespan_s"])
            ax.set_yticks(range(MPI_WORKERS + 1))
            ax.tick_params(labelsize=7)
            ax.set_title(f"{n}: {rows[n]['mixed_utilisation'] * 100:.0f} % of {MPI_WORKERS} ranks "
                         f"busy, makespan {rows[n]['mixed_makespan_s']:.2f} s", fontsize=9,
                         loc="left")
        axes[-1, 0].set_xlabel("seconds since the first submit (each row its own scale)")
        fig.suptitle("mixed workload: busy ranks over time, measured inside the tasks", fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "mixed_occupancy.png"), dpi=80)
        plt.close(fig)
        made.append("mixed_occupancy.png")

    if scale and scale.get("rows"):
        srows = scale["rows"]
        pools = [r["pools"] for r in srows]
        fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(12, 3.6))
        ax1.plot(pools, [r["tasks_per_s"] for r in srows], "o-")
        ax1.axhline(50_000, color="red", lw=1, ls="--")
        ax1.set_title("interchange throughput, tasks/s", fontsize=10)
        ax2.plot(pools, [r["latency_ms"]["median"] for r in srows], "o-", label="median")
        ax2.plot(pools, [r["latency_ms"]["p99"] for r in srows], "s--", label="p99")
        ax2.set_title("dispatch latency, ms", fontsize=10)
        ax2.legend(fontsize=8)
        ax3.plot(pools, [r["rss_peak_mb"] for r in srows], "o-")
        ax3.set_title("interchange peak RSS, MB", fontsize=10)
        for ax in (ax1, ax2, ax3):
            ax.set_xscale("log")
            ax.set_xlabel("simulated pools of 128 ranks")
            ax.set_ylim(bottom=0)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "scale.png"), dpi=80)
        plt.close(fig)
        made.append("scale.png")
    return made


def machine() -> dict[str, Any]:
    import psutil
    info: dict[str, Any] = {"host": socket.gethostname(), "python": platform.python_version(),
                            "platform": platform.platform(), "cores": os.cpu_count(),
                            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                            "load_average": os.getloadavg()}
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    for pkg in ("rankpool", "parsl", "mpi4py", "mpich", "pyzmq", "executorlib", "numpy"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version
            info[pkg] = version(pkg)
    return info


def report(result: dict[str, Any]) -> str:
    lines = ["# rankpool benchmark run", "", f"`{result['command']}`", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()), "",
             tables(result["rows"]), "", "## Targets", ""]
    for what, ok, figure in targets(result["rows"]):
        lines.append(f"- {'met' if ok else '**not met**'}: {what} ({figure})")
    scale = result.get("scale")
    if scale and "rows" in scale:
        import scale_sim
        lines += ["", "## Scale by simulation", "", scale_sim.table(scale["rows"]), ""]
        for what, ok, figure in scale_sim.targets(scale["rows"]):
            lines.append(f"- {'met' if ok else '**not met**'}: {what} ({figure})")
        for r in scale["rows"]:
            for key, when in (("profile", "flooded"), ("profile_idle", "idle")):
                summary = r.get(key, {})
                if "own" in summary:
                    top = ", ".join(f"{fn} {p:.0f} %" for fn, p in summary["own"][:6])
                    lines.append(f"- interchange at {r['pools']:,} pools, {when} (py-spy, "
                                 f"{summary['samples']} samples): {top}")
    elif scale:
        lines += ["", f"Scale simulation failed: {scale.get('error')}"]
    dispatch = result.get("dispatch")
    if dispatch and "by_ranks" in dispatch:
        import pool_dispatch
        lines += ["", "## Inside one pool (CommExecutor, oversubscribed)", "",
                  pool_dispatch.table(dispatch)]
    elif dispatch:
        lines += ["", f"Pool dispatch failed: {dispatch.get('error')}"]
    cpu = result["runs"].get("rankpool.Executor", [{}])
    cpu = [r["cpu_us_per_task"] for r in cpu if "cpu_us_per_task" in r]
    if cpu:
        lines += ["", "## rankpool.Executor: CPU per no-op task, by process "
                  "(µs, median of rounds)", "",
                  "| " + " | ".join(cpu[0]) + " | total |", "|" + "---:|" * (len(cpu[0]) + 1)]
        med = {k: statistics.median(c[k] for c in cpu if k in c) for k in cpu[0]}
        lines.append("| " + " | ".join(f"{v:.1f}" for v in med.values())
                     + f" | {sum(med.values()):.1f} |")
    prof = result["rows"].get("rankpool.Executor", {}).get("profile")
    if prof and "error" not in prof:
        lines += ["", "## Where rankpool.Executor's time goes (py-spy, own samples)", ""]
        for proc, summary in prof.items():
            if "own" in summary:
                top = ", ".join(f"{fn} {p:.0f} %" for fn, p in summary["own"][:6])
                threads = ", ".join(f"{fn} {p:.0f} %" for fn, p in summary["roots"][:3])
                lines.append(f"- {proc} ({summary['samples']} samples; by thread: {threads}): "
                             f"{top}")
    lines += ["", "Plots: " + ", ".join(f"![{p}]({p})" for p in result.get("plots", []))]
    return "\n".join(lines) + "\n"
