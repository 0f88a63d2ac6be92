"""The ``rankpool`` command::

    rankpool pool --interchange tcp://HOST:PORT --block-id ID [...]   python -m rankpool.mpi_pool
    rankpool info                      versions, the MPI library, mpiexec, the batch system
    rankpool status RUN_DIR [--once]   a running executor's pools, ranks, tasks and failed starts

``status`` reads ``RUN_DIR/interchange.json`` (written by both executors when their
interchange starts) and asks the interchange's command port, on loopback, for its pools and
task counts; it must therefore run on the executor's host. Exit status: 0; 1 when the
executor has ended or its interchange does not answer; 2 for bad arguments (a missing run
directory included).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._version import __version__

#: seconds ``status`` waits for each answer of the interchange, by default
STATUS_TIMEOUT = 3.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``rankpool`` subcommand; return its exit status (argparse's 2 on bad usage)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] == "pool":  # the pool program parses its own options
            from .mpi_pool.__main__ import main as pool_main
            return pool_main(args[1:], prog="rankpool pool")
        ns = build_parser().parse_args(args)
        return int(ns.run(ns))
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand but ``pool`` (whose options are the pool program's)."""
    parser = argparse.ArgumentParser(
        prog="rankpool", description="rankpool: MPI-native task pools for Python.",
        epilog="'rankpool pool --help' lists the pool program's options.")
    parser.add_argument("--version", action="version", version=f"rankpool {__version__}")
    sub = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND", required=True)
    sub.add_parser("pool", help="run an MPI pool on every rank of an MPI launch (the same as "
                                "'python -m rankpool.mpi_pool')", add_help=False)
    info = sub.add_parser("info", help="print versions, the MPI library, the mpiexec rankpool "
                                       "would use and the batch system detected",
                          description="Print what rankpool would run with here: Python, "
                                      "rankpool, mpi4py, the MPI library, the mpiexec used "
                                      "for local blocks, and the batch system and launcher "
                                      "the environment points to.")
    info.set_defaults(run=run_info)
    status = sub.add_parser(
        "status", help="show a running executor's pools and tasks",
        description="Show a running executor's pools (busy and idle worker ranks) and its "
                    "queued and running tasks, refreshed in place until Ctrl-C. RUN_DIR is the "
                    "executor's run directory: rankpool.Executor's run_dir, or "
                    "<parsl run dir>/<label> for ExtremeScaleExecutor, or a directory above it "
                    "such as Parsl's runinfo (the run directory below it whose executor is "
                    "running is picked). Run it on the executor's host.")
    status.add_argument("run_dir", metavar="RUN_DIR", help="the executor's run directory")
    status.add_argument("--once", action="store_true", help="print once and exit")
    status.add_argument("--interval", type=_positive_float, default=1.0, metavar="S",
                        help="seconds between refreshes (default 1)")
    status.add_argument("--timeout", type=_positive_float, default=STATUS_TIMEOUT, metavar="S",
                        help=f"seconds to wait for the interchange (default {STATUS_TIMEOUT:g})")
    status.set_defaults(run=run_status, parser=status)
    trace = sub.add_parser(
        "trace", help="write a run's rank-occupancy trace to HDF5 and draw it as a PNG",
        description="Collect the trace-<block>.npz files the pools of a run wrote (executors "
                    "started with trace=True) into RUN_DIR/trace.h5 and draw RUN_DIR/trace.png: "
                    "one row per rank, one bar per task, coloured by task width.")
    trace.add_argument("run_dir", metavar="RUN_DIR", help="the executor's run directory")
    trace.set_defaults(run=run_trace, parser=trace)
    return parser


def run_trace(ns: argparse.Namespace) -> int:
    """Write trace.h5 and trace.png; say where, and the utilisation."""
    from .tracing import NoTrace, trace_run
    if not os.path.isdir(ns.run_dir):
        ns.parser.error(f"RUN_DIR {ns.run_dir!r} is not a directory")
    try:
        out = trace_run(ns.run_dir)
    except NoTrace as exc:
        print(f"rankpool trace: {exc}", file=sys.stderr)
        return 1
    print(f"{out['rows']} task ranks from {out['blocks']} block(s); utilisation "
          f"{100 * out['utilisation']:.1f} %\nwrote {out['hdf5']}\nwrote {out['png']}")
    return 0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


# -- info ----------------------------------------------------------------------------------------
def run_info(ns: argparse.Namespace) -> int:
    """Print one ``name: value`` line per fact; facts that cannot be had say why."""
    from .launchers.jobscript import detect_batch
    from .launchers.mpiexec import MpiexecNotFound, find_mpiexec
    lines = [("rankpool", f"{__version__} ({os.path.dirname(os.path.abspath(__file__))})"),
             ("python", f"{platform.python_version()} ({sys.executable})")]
    lines += _mpi_lines()
    try:
        lines.append(("mpiexec", find_mpiexec()))
    except MpiexecNotFound as exc:
        lines.append(("mpiexec", f"none: {exc}"))
    batch = detect_batch()
    system = batch.system or "none"
    if batch.job_id:
        system += f", job {batch.job_id}"
    lines += [("batch system", f"{system} ({batch.evidence})"),
              ("launcher", batch.launcher if batch.launcher.startswith("none") else
               f"rankpool.launchers.{batch.launcher}"),
              ("cray", batch.cray or "no")]
    width = max(len(name) for name, _ in lines) + 2
    for name, value in lines:
        print(f"{name + ':':<{width}}{value}")
    return 0


def _mpi_lines() -> list[tuple[str, str]]:
    """mpi4py's version and the MPI library's, without initializing MPI."""
    try:
        import mpi4py
        mpi4py.rc.initialize = False  # Get_library_version needs no MPI_Init: start no runtime
        mpi4py.rc.finalize = False
        from mpi4py import MPI
    except Exception as exc:  # not installed, or its MPI library cannot be loaded
        return [("mpi4py", f"not usable: {exc}"), ("MPI library", "unknown (needs mpi4py)")]
    text = " ".join(MPI.Get_library_version().split("\n")[0].split())
    major, minor = MPI.Get_version()
    return [("mpi4py", f"{mpi4py.__version__} ({os.path.dirname(mpi4py.__file__)})"),
            ("MPI library", f"{text} (MPI standard {major}.{minor})")]


# -- status --------------------------------------------------------------------------------------
def run_status(ns: argparse.Namespace) -> int:
    """Show the executor's state once (``--once``) or until Ctrl-C."""
    from .launchers.failed_starts import read_failures
    from .launchers.rundir import INTERCHANGE_INFO, read_interchange_info
    parser: argparse.ArgumentParser = ns.parser
    run_dir = find_run_dir(ns.run_dir, INTERCHANGE_INFO, parser)
    try:
        info = read_interchange_info(run_dir)
    except (OSError, ValueError) as exc:
        parser.error(f"RUN_DIR: {exc}")
    host = info.get("host")
    if isinstance(host, str) and host and host != socket.gethostname():
        parser.error(f"RUN_DIR: the executor runs on {host}; its interchange answers on "
                     f"loopback only, so run 'rankpool status' there")
    pid = info.get("pid")
    if isinstance(pid, int) and not _process_alive(pid):
        print(f"rankpool status: error: the executor that wrote {run_dir}/{INTERCHANGE_INFO} "
              f"(process {pid}) has ended", file=sys.stderr)
        return 1
    interactive = not ns.once and sys.stdout.isatty()
    try:
        client = StatusClient(info["command_port"], ns.timeout, info.get("server_key") or "")
    except (OSError, ValueError, RuntimeError) as exc:  # key files unreadable, no CurveZMQ
        print(f"rankpool status: error: cannot use the run's keys: {exc}", file=sys.stderr)
        return 1
    try:
        while True:
            try:
                text = render(run_dir, info, {**client.snapshot(),
                                              "failed_starts": read_failures(run_dir)})
            except TimeoutError as exc:
                print(f"rankpool status: error: {exc}{_stale_hint(info)}", file=sys.stderr)
                return 1
            except RuntimeError as exc:
                print(f"rankpool status: error: {exc}", file=sys.stderr)
                return 1
            if ns.once:
                print(text)
                return 0
            sys.stdout.write(("\x1b[H\x1b[2J" if interactive else "\n") + text + "\n")
            sys.stdout.flush()
            time.sleep(ns.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()


def find_run_dir(path: str, marker: str, parser: argparse.ArgumentParser) -> str:
    """``path``, or the run directory below it (one or two levels: Parsl's ``runinfo/NNN/label``)
    holding ``marker``; among several, the one whose executor is still running. A usage error
    says what is wrong."""
    if not os.path.isdir(path):
        parser.error(f"RUN_DIR: {path!r} is not a directory")
    why = not_yours(path)
    if why:
        parser.error(f"RUN_DIR: {why}")
    if os.path.isfile(os.path.join(path, marker)):
        return path
    root = glob.escape(path)
    files = [f for depth in (("*",), ("*", "*"))
             for f in glob.glob(os.path.join(root, *depth, marker))]
    inside = sorted(os.path.dirname(f) for f in files)
    live = [d for d in inside if _written_by_live_process(os.path.join(d, marker))]
    for found in (inside, live):
        if len(found) == 1:
            return found[0]
    if inside:
        parser.error(f"RUN_DIR: {path!r} holds several executors' run directories"
                     f"{' with a running executor' if live else ''}; name one of "
                     f"{', '.join(live or inside)}")
    parser.error(f"RUN_DIR: no {marker} in {path!r}: not the run directory of a started "
                 f"rankpool executor (rankpool.Executor's run_dir, or <parsl run dir>/<label>)")
    raise AssertionError("unreachable: parser.error exits")


def not_yours(path: str) -> str:
    """Why this user cannot use the run directory ``path`` (it is private to another user),
    or "" when it can."""
    if os.access(path, os.R_OK | os.X_OK):
        return ""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"{path!r} cannot be read: {exc.strerror}"
    owner = f"uid {st.st_uid}"
    try:
        import pwd
        owner = f"{pwd.getpwuid(st.st_uid).pw_name} (uid {st.st_uid})"
    except (ImportError, KeyError):
        pass
    return (f"{path!r} belongs to {owner} and only its owner may enter it (mode "
            f"{st.st_mode & 0o777:04o}); this is uid {os.getuid()}. A run's directory holds "
            "the keys its interchange admits, so only the user who started the executor can "
            "reach it: run 'rankpool status' as that user")


def _written_by_live_process(info_file: str) -> bool:
    try:
        with open(info_file, encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        return False
    pid = info.get("pid") if isinstance(info, dict) else None
    return isinstance(pid, int) and info.get("host") == socket.gethostname() \
        and _process_alive(pid)


def _stale_hint(info: dict[str, Any]) -> str:
    pid = info.get("pid")
    if not isinstance(pid, int):
        return ""
    if _process_alive(pid):
        return f" (the executor's process {pid} is running)"
    return f"; the executor's process {pid} has ended"


def _process_alive(pid: int) -> bool:
    from .interchange.plumbing import process_alive
    return process_alive(pid)


class StatusClient:
    """Asks an interchange's command port for its pools and task counts.

    An encrypted run's command port takes only the front-end's key: ``server_key`` (the
    interchange's public key file, from ``interchange.json``) locates it, beside it.
    """

    def __init__(self, command_port: int, timeout: float, server_key: str = "") -> None:
        import zmq  # only where sockets live
        self.timeout = timeout
        self.address = f"tcp://127.0.0.1:{command_port}"
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        from .protocol.wire import MAX_MESSAGE_SIZE
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_SIZE)
        try:
            if server_key:
                from .security import CurveKeys, client_curve
                keys = CurveKeys.at(os.path.dirname(os.path.abspath(server_key)))
                client_curve(self.sock, server_key, keys.secret("front"))
            self.sock.connect(self.address)
        except BaseException:
            self.close()
            raise
        self.counts = ["queued", "outstanding", "finished"]

    def ask(self, name: str) -> Any:
        """One command's value; TimeoutError when no answer comes within the timeout."""
        from .frontends.client import ask_interchange
        try:
            return ask_interchange(self.sock, name, "", self.timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc} (at {self.address})") from None

    def snapshot(self) -> dict[str, Any]:
        """``pools`` (the interchange's descriptions) and the task counts it keeps."""
        return {"pools": self.ask("pools"), **{name: self.ask(name) for name in self.counts}}

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def render(run_dir: str, info: dict[str, Any], snap: dict[str, Any]) -> str:
    """The status screen: a summary, then one row per pool."""
    pools: list[dict[str, Any]] = snap["pools"]
    ranks = sum(p["ranks"] for p in pools)
    busy = sum(p["busy_ranks"] for p in pools)
    running = sum(p["tasks"] for p in pools)
    blocks = len({p["block_id"] for p in pools})
    tasks = [f"{snap['queued']} queued", f"{running} running", f"{snap['finished']} finished",
             f"{snap['outstanding']} outstanding"]
    lines = [f"rankpool status  {run_dir}  {time.strftime('%H:%M:%S')}",
             f"interchange  pools connect to {info.get('address', '?')} (executor pid "
             f"{info.get('pid', '?')}, rankpool {info.get('rankpool', '?')})",
             f"tasks        {', '.join(tasks)}",
             f"pools        {len(pools)} in {blocks} block{'s' if blocks != 1 else ''}: "
             f"{ranks} worker rank{'s' if ranks != 1 else ''}, {busy} busy, {ranks - busy} idle",
             ""]
    header = ("BLOCK", "POOL", "HOSTS", "RANKS", "BUSY", "IDLE", "TASKS", "STATE", "SEEN")
    rows = [header] + [_pool_row(p) for p in sorted(pools, key=lambda p: (p["block_id"],
                                                                          p["pool_id"]))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if not pools:
        lines.append("(no pool connected)")
    lines += _failed_starts(snap.get("failed_starts") or [])
    return "\n".join(lines)


#: failed starts ``status`` shows (the latest), and lines of what each left
SHOW_FAILED = 3
SHOW_DETAIL = 6


def _failed_starts(failures: list[Any]) -> list[str]:
    """The run's failed block starts: how many, then the latest ones with the words they left."""
    if not failures:
        return []
    lines = ["", f"failed starts  {len(failures)} block{'s' if len(failures) != 1 else ''} "
                 f"ended before their pool registered"
             + (f"; the latest {SHOW_FAILED}:" if len(failures) > SHOW_FAILED else ":")]
    for failure in failures[-SHOW_FAILED:]:
        when = time.strftime("%H:%M:%S", time.localtime(failure.when))
        lines.append(f"  {when}  {failure.summary()}")
        detail = failure.detail.splitlines()
        lines += [f"      {line}" for line in detail[-SHOW_DETAIL:]]
    return lines


def _pool_row(p: dict[str, Any]) -> tuple[str, ...]:
    hosts = list(dict.fromkeys(p["hosts"]))
    where = ",".join(hosts) if len(hosts) <= 2 else f"{hosts[0]},... ({len(hosts)} hosts)"
    nodes = len(p.get("node_ranks", [])) or len(p["hosts"])
    if nodes > 1:
        where += f" [{'+'.join(str(n) for n in p['node_ranks'])}]"
    state = "draining" if p["draining"] else "held" if p["held"] else "active"
    if p.get("stuck_ranks"):
        state += f" (stuck {','.join(map(str, p['stuck_ranks']))})"
    if p.get("lost_ranks"):
        state += f" (lost {','.join(map(str, p['lost_ranks']))})"
    devices = p.get("devices") or {}
    ranks = f"{p['ranks']}({len(devices)}dev)" if devices else str(p["ranks"])  # owners
    return (str(p["block_id"]), str(p["pool_id"]), where, ranks, str(p["busy_ranks"]),
            str(p["ranks"] - p["busy_ranks"]), str(p["tasks"]), state,
            f"{float(p['last_seen_s']):.1f}s ago")


if __name__ == "__main__":  # python -m rankpool.cli
    sys.exit(main())
