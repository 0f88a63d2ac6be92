"""The launchers' exact command lines, their argument checks, and launcher recognition.

One test runs the generated ``mpiexec`` line for real with the bundled MPICH.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys

import pytest
from parsl import launchers as parsl_launchers
from parsl.launchers.base import Launcher
from parsl.utils import RepresentationMixin

from rankpool.launchers import (
    AprunLauncher,
    BlockShape,
    FluxLauncher,
    JsrunLauncher,
    LaunchStyle,
    MpiexecLauncher,
    MpirunLauncher,
    RankLauncher,
    SrunLauncher,
    configure_launcher,
    describe,
    is_per_node_launcher,
    launch_style,
    wrap_command,
)

CMD = "/opt/py/bin/python3 -m rankpool.mpi_pool --interchange tcp://10.1.2.3:55001 --block-id 7"
HOSTS = '${PBS_NODEFILE:+-hostfile "$PBS_NODEFILE"}'
PALS_HOSTS = '${PBS_NODEFILE:+--hostfile "$PBS_NODEFILE"}'


# -- exact command lines ------------------------------------------------------------------------
LINES = [
    # (launcher, nodes_per_block, expected line)
    (MpiexecLauncher(ranks_per_node=1), 4,
     f"mpiexec -n 4 -ppn 1 -disable-auto-cleanup {HOSTS} {CMD}"),
    (MpiexecLauncher(ranks_per_node=8), 1,
     f"mpiexec -n 8 -ppn 8 -disable-auto-cleanup {HOSTS} {CMD}"),
    (MpiexecLauncher(ranks_per_node=8), 4,
     f"mpiexec -n 32 -ppn 8 -disable-auto-cleanup {HOSTS} {CMD}"),
    (MpiexecLauncher(ranks_per_node=4), 2,
     f"mpiexec -n 8 -ppn 4 -disable-auto-cleanup {HOSTS} {CMD}"),
    (MpiexecLauncher(ranks_per_node=8, hostfile_var=None), 4,
     f"mpiexec -n 32 -ppn 8 -disable-auto-cleanup {CMD}"),
    (MpiexecLauncher(ranks_per_node=2, hostfile_var="COBALT_NODEFILE"), 2,
     f'mpiexec -n 4 -ppn 2 -disable-auto-cleanup '
     f'${{COBALT_NODEFILE:+-hostfile "$COBALT_NODEFILE"}} {CMD}'),
    (MpiexecLauncher(ranks_per_node=8, cpu_bind="core", extra="-genv FOO 1"), 4,
     f"mpiexec -n 32 -ppn 8 -disable-auto-cleanup {HOSTS} -bind-to core -genv FOO 1 {CMD}"),
    (MpiexecLauncher(ranks_per_node=8, extra=["-genv", "A", "x y"]), 1,
     f"mpiexec -n 8 -ppn 8 -disable-auto-cleanup {HOSTS} -genv A 'x y' {CMD}"),
    (MpiexecLauncher(ranks_per_node=32, flavor="pals", depth=2, cpu_bind="depth"), 4,
     f"mpiexec -n 128 --ppn 32 {PALS_HOSTS} --depth 2 --cpu-bind depth {CMD}"),
    (MpiexecLauncher(ranks_per_node=4, flavor="pals"), 2,
     f"mpiexec -n 8 --ppn 4 {PALS_HOSTS} {CMD}"),
    (MpiexecLauncher(ranks_per_node=8, flavor="intel", extra="-genv I_MPI_PIN_DOMAIN core"), 4,
     f"mpiexec -n 32 -ppn 8 {HOSTS} -genv I_MPI_PIN_DOMAIN core {CMD}"),
    (MpiexecLauncher(ranks_per_node=3, executable="/opt/my mpi/bin/mpiexec"), 1,
     f"'/opt/my mpi/bin/mpiexec' -n 3 -ppn 3 -disable-auto-cleanup {HOSTS} {CMD}"),
    (SrunLauncher(ranks_per_node=1), 4,
     f"srun --ntasks 4 --ntasks-per-node 1 --nodes 4 --kill-on-bad-exit=0 {CMD}"),
    (SrunLauncher(ranks_per_node=8), 1,
     f"srun --ntasks 8 --ntasks-per-node 8 --nodes 1 --kill-on-bad-exit=0 {CMD}"),
    (SrunLauncher(ranks_per_node=4), 2,
     f"srun --ntasks 8 --ntasks-per-node 4 --nodes 2 --kill-on-bad-exit=0 {CMD}"),
    (SrunLauncher(ranks_per_node=8, mpi="pmi2"), 4,
     f"srun --ntasks 32 --ntasks-per-node 8 --nodes 4 --kill-on-bad-exit=0 --mpi=pmi2 {CMD}"),
    (SrunLauncher(ranks_per_node=8, mpi="pmix", cpus_per_task=4, extra="--cpu-bind=cores"), 4,
     f"srun --ntasks 32 --ntasks-per-node 8 --nodes 4 --kill-on-bad-exit=0 --mpi=pmix "
     f"--cpus-per-task 4 --cpu-bind=cores {CMD}"),
    (MpirunLauncher(ranks_per_node=1), 4, f"mpirun -np 4 --map-by ppr:1:node {CMD}"),
    (MpirunLauncher(ranks_per_node=8), 4, f"mpirun -np 32 --map-by ppr:8:node {CMD}"),
    (MpirunLauncher(ranks_per_node=4), 2, f"mpirun -np 8 --map-by ppr:4:node {CMD}"),
    (MpirunLauncher(ranks_per_node=8, oversubscribe=True, extra="--bind-to none"), 1,
     f"mpirun -np 8 --map-by ppr:8:node --oversubscribe --bind-to none {CMD}"),
    (AprunLauncher(ranks_per_node=1), 4, f"aprun -n 4 -N 1 {CMD}"),
    (AprunLauncher(ranks_per_node=4), 2, f"aprun -n 8 -N 4 {CMD}"),
    (AprunLauncher(ranks_per_node=8, depth=4, cpu_bind="depth"), 4,
     f"aprun -n 32 -N 8 -d 4 -cc depth {CMD}"),
    (JsrunLauncher(ranks_per_node=4), 2,
     f"jsrun --nrs 8 --rs_per_host 4 --tasks_per_rs 1 --cpu_per_rs 1 --gpu_per_rs 0 {CMD}"),
    (JsrunLauncher(ranks_per_node=6, cpus_per_rank=7, gpus_per_rank=1, extra="--bind packed:7"),
     4, f"jsrun --nrs 24 --rs_per_host 6 --tasks_per_rs 1 --cpu_per_rs 7 --gpu_per_rs 1 "
        f"--bind packed:7 {CMD}"),
    (FluxLauncher(ranks_per_node=8), 1, f"flux run -n 8 -N 1 {CMD}"),
    (FluxLauncher(ranks_per_node=4), 2, f"flux run -n 8 -N 2 {CMD}"),
    (FluxLauncher(ranks_per_node=8, cores_per_task=2, gpus_per_task=1, exclusive=True,
                  extra="-o pmi=pmix"), 4,
     f"flux run -n 32 -N 4 --cores-per-task 2 --gpus-per-task 1 --exclusive -o pmi=pmix {CMD}"),
]


@pytest.mark.parametrize("launcher, nodes, expected", LINES,
                         ids=[f"{type(launcher).__name__}-{n}" for launcher, n, _ in LINES])
def test_exact_command_line(launcher: RankLauncher, nodes: int, expected: str) -> None:
    assert launcher(CMD, 1, nodes) == expected
    assert launcher(CMD, 1, nodes, "/scripts") == expected     # script_dir changes nothing
    assert "  " not in expected.replace(CMD, "")


def test_debug_echoes_the_launch_line_first() -> None:
    script = SrunLauncher(ranks_per_node=2, debug=True)(CMD, 1, 2)
    line = f"srun --ntasks 4 --ntasks-per-node 2 --nodes 2 --kill-on-bad-exit=0 {CMD}"
    assert script.splitlines() == [f"echo {shlex.quote('rankpool launch: ' + line)}", line]


def test_tasks_per_node_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    launcher = MpirunLauncher(ranks_per_node=4)
    with caplog.at_level(logging.WARNING, logger="rankpool.launchers"):
        assert launcher(CMD, 3, 2) == launcher(CMD, 1, 2)
    assert "ignores tasks_per_node=3" in caplog.text


# -- the pool command as the last argument ------------------------------------------------------
@pytest.mark.parametrize("command, expected", [
    (CMD, CMD),
    ("python -c 'print(1)'", "python -c 'print(1)'"),                   # canonical quoting kept
    ('python -c "print(1)"', "/bin/sh -c 'python -c \"print(1)\"'"),
    ("cd /tmp && python x.py", "/bin/sh -c 'cd /tmp && python x.py'"),
    ("FOO=1 python x.py", "/bin/sh -c 'FOO=1 python x.py'"),
    ("python x.py > out", "/bin/sh -c 'python x.py > out'"),
    ("python  x.py", "/bin/sh -c 'python  x.py'"),
    ("echo 'it''s'", "/bin/sh -c 'echo '\"'\"'it'\"'\"''\"'\"'s'\"'\"''"),
    ("python 'unbalanced", "/bin/sh -c 'python '\"'\"'unbalanced'"),
])
def test_wrap_command(command: str, expected: str) -> None:
    assert wrap_command(command) == expected
    if expected != command:
        assert shlex.split(expected)[2] == command       # sh -c gets the command intact


@pytest.mark.parametrize("command", ["", "   ", None])
def test_empty_command_is_refused(command: object) -> None:
    with pytest.raises(ValueError, match="command"):
        MpiexecLauncher(ranks_per_node=2)(command, 1, 1)  # type: ignore[arg-type]


# -- argument checks ----------------------------------------------------------------------------
@pytest.mark.parametrize("make, name", [
    (lambda: MpiexecLauncher(ranks_per_node=0), "ranks_per_node"),
    (lambda: SrunLauncher(ranks_per_node=-2), "ranks_per_node"),
    (lambda: MpirunLauncher(ranks_per_node=2.5), "ranks_per_node"),
    (lambda: AprunLauncher(ranks_per_node=True), "ranks_per_node"),
    (lambda: FluxLauncher(ranks_per_node="4"), "ranks_per_node"),
    (lambda: MpiexecLauncher(ranks_per_node=2, flavor="openmpi"), "flavor"),
    (lambda: MpiexecLauncher(ranks_per_node=2, flavor=None), "flavor"),
    (lambda: MpiexecLauncher(ranks_per_node=2, flavor="intel", cpu_bind="core"), "cpu_bind"),
    (lambda: MpiexecLauncher(ranks_per_node=2, depth=4), "depth"),
    (lambda: MpiexecLauncher(ranks_per_node=2, flavor="pals", depth=0), "depth"),
    (lambda: MpiexecLauncher(ranks_per_node=2, cpu_bind=""), "cpu_bind"),
    (lambda: MpiexecLauncher(ranks_per_node=2, hostfile_var="1X"), "hostfile_var"),
    (lambda: MpiexecLauncher(ranks_per_node=2, hostfile_var="$PBS_NODEFILE"), "hostfile_var"),
    (lambda: MpiexecLauncher(ranks_per_node=2, executable=""), "executable"),
    (lambda: SrunLauncher(ranks_per_node=2, mpi="pmi 2"), "mpi"),
    (lambda: SrunLauncher(ranks_per_node=2, mpi=2), "mpi"),
    (lambda: SrunLauncher(ranks_per_node=2, cpus_per_task=0), "cpus_per_task"),
    (lambda: MpirunLauncher(ranks_per_node=2, oversubscribe="yes"), "oversubscribe"),
    (lambda: AprunLauncher(ranks_per_node=2, depth=-1), "depth"),
    (lambda: JsrunLauncher(ranks_per_node=2, cpus_per_rank=0), "cpus_per_rank"),
    (lambda: JsrunLauncher(ranks_per_node=2, gpus_per_rank=-1), "gpus_per_rank"),
    (lambda: FluxLauncher(ranks_per_node=2, gpus_per_task=0), "gpus_per_task"),
    (lambda: FluxLauncher(ranks_per_node=2, exclusive=1), "exclusive"),
    (lambda: SrunLauncher(ranks_per_node=2, extra="--a\n--b"), "extra"),
    (lambda: SrunLauncher(ranks_per_node=2, extra=["--a", 3]), "extra"),
    (lambda: SrunLauncher(ranks_per_node=2, extra=5), "extra"),
    (lambda: SrunLauncher(ranks_per_node=2, debug="yes"), "debug"),
])
def test_bad_arguments_are_refused_at_construction(make, name: str) -> None:
    with pytest.raises((ValueError, TypeError), match=name):
        make()


def test_launchers_take_keyword_arguments_only() -> None:
    with pytest.raises(TypeError):
        SrunLauncher(4)  # type: ignore[misc]


def test_shape_checks_at_call_time() -> None:
    unset = SrunLauncher()
    with pytest.raises(ValueError, match="ranks_per_node is not set"):
        unset(CMD, 1, 2)
    with pytest.raises(ValueError, match="nodes_per_block"):
        SrunLauncher(ranks_per_node=2)(CMD, 1, 0)
    with pytest.raises(ValueError, match="manager"):          # 1 node x 1 rank: no worker
        MpiexecLauncher(ranks_per_node=1)(CMD, 1, 1)


def test_ranks_per_node_is_set_later_and_checked() -> None:
    launcher = MpiexecLauncher()
    assert launcher.ranks_per_node is None
    launcher.ranks_per_node = 4
    assert launcher(CMD, 1, 2) == f"mpiexec -n 8 -ppn 4 -disable-auto-cleanup {HOSTS} {CMD}"
    with pytest.raises(ValueError, match="ranks_per_node"):
        launcher.ranks_per_node = 0
    assert launcher.ranks_per_node == 4


@pytest.mark.parametrize("nodes, rpn, shape", [
    (1, 8, BlockShape(1, 8, 8, 7, 7)),
    (4, 8, BlockShape(4, 8, 32, 31, 8)),
    (4, 1, BlockShape(4, 1, 4, 3, 1)),
    (1, 2, BlockShape(1, 2, 2, 1, 1)),
])
def test_block_shape(nodes: int, rpn: int, shape: BlockShape) -> None:
    assert SrunLauncher(ranks_per_node=rpn).block_shape(nodes) == shape


def test_parsl_sees_a_launcher_with_an_honest_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RepresentationMixin, "_validate_repr", True)
    launcher = MpiexecLauncher(ranks_per_node=4, flavor="pals", depth=2)
    assert isinstance(launcher, Launcher)
    text = repr(launcher)
    assert text.startswith("MpiexecLauncher(") and "flavor='pals'" in text
    assert "ranks_per_node=4" in text and "depth=2" in text
    for cls in (SrunLauncher, MpirunLauncher, AprunLauncher, JsrunLauncher, FluxLauncher):
        assert "ranks_per_node=3" in repr(cls(ranks_per_node=3))


# -- recognising launchers ----------------------------------------------------------------------
PARSL_PER_NODE = [parsl_launchers.SrunLauncher(), parsl_launchers.SrunMPILauncher(),
                  parsl_launchers.MpiExecLauncher(), parsl_launchers.MpiRunLauncher(),
                  parsl_launchers.AprunLauncher(), parsl_launchers.JsrunLauncher(),
                  parsl_launchers.SingleNodeLauncher(), parsl_launchers.GnuParallelLauncher()]
OURS = [MpiexecLauncher(ranks_per_node=2), SrunLauncher(), MpirunLauncher(ranks_per_node=2),
        AprunLauncher(), JsrunLauncher(), FluxLauncher()]


@pytest.mark.parametrize("launcher", PARSL_PER_NODE, ids=lambda launcher: type(launcher).__name__)
def test_parsl_launchers_start_a_pool_per_node(launcher: Launcher) -> None:
    assert is_per_node_launcher(launcher)
    assert launch_style(launcher) is LaunchStyle.PER_SLOT
    assert "rankpool.launchers." in describe(launcher)
    with pytest.raises(ValueError, match="one MPI application") as err:
        configure_launcher(launcher, ranks_per_node=4)
    assert type(launcher).__name__ in str(err.value)
    assert configure_launcher(launcher, ranks_per_node=4, allow_per_node=True) == 4


@pytest.mark.parametrize("launcher", OURS, ids=lambda launcher: type(launcher).__name__)
def test_ours_start_one_application(launcher: RankLauncher) -> None:
    assert not is_per_node_launcher(launcher)
    assert launch_style(launcher) is LaunchStyle.ONE_APPLICATION
    assert "one MPI application" in describe(launcher)


def test_simple_and_unknown_launchers() -> None:
    simple = parsl_launchers.SimpleLauncher()
    assert not is_per_node_launcher(simple)
    assert launch_style(simple) is LaunchStyle.SINGLE_PROCESS
    with pytest.raises(ValueError, match="no worker ranks"):
        configure_launcher(simple, ranks_per_node=4)
    wrapped = parsl_launchers.WrappedLauncher(prepend="mpiexec -n 8")
    assert not is_per_node_launcher(wrapped)
    assert launch_style(wrapped) is LaunchStyle.UNKNOWN
    assert configure_launcher(wrapped, ranks_per_node=4) == 4
    assert launch_style(object()) is LaunchStyle.UNKNOWN


def test_configure_launcher_reconciles_ranks_per_node() -> None:
    launcher = SrunLauncher()
    assert "ranks_per_node not set" in describe(launcher)
    assert configure_launcher(launcher, ranks_per_node=4) == 4
    assert launcher.ranks_per_node == 4
    assert "nodes_per_block x 4 ranks" in describe(launcher)
    assert configure_launcher(launcher, ranks_per_node=None) == 4     # the launcher's own
    assert configure_launcher(launcher, ranks_per_node=4) == 4        # agreeing is fine
    with pytest.raises(ValueError, match="disagrees"):
        configure_launcher(launcher, ranks_per_node=8)
    with pytest.raises(ValueError, match="ranks_per_node is not set"):
        configure_launcher(FluxLauncher(), ranks_per_node=None)
    with pytest.raises(ValueError, match="ranks_per_node"):
        configure_launcher(FluxLauncher(), ranks_per_node=0)


# -- for real, with the bundled mpiexec ---------------------------------------------------------
def _bundled_mpiexec() -> str:
    from rankpool.launchers.mpiexec import MpiexecNotFound, find_mpiexec
    pytest.importorskip("mpi4py")
    try:
        return find_mpiexec()
    except MpiexecNotFound as exc:
        pytest.skip(str(exc))


SIZE_CODE = "from mpi4py import MPI; print(MPI.COMM_WORLD.size)"


@pytest.mark.mpi
@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", [
    f'{shlex.quote(sys.executable)} -c "{SIZE_CODE}"',      # runs under /bin/sh -c
    shlex.join([sys.executable, "-c", SIZE_CODE]),           # appended as is
], ids=["wrapped", "plain"])
@pytest.mark.parametrize("nodefile", [False, True], ids=["no-nodefile", "nodefile"])
def test_mpiexec_line_starts_one_application(command: str, nodefile: bool, tmp_path) -> None:
    launcher = MpiexecLauncher(ranks_per_node=3, executable=_bundled_mpiexec())
    line = launcher(command, 1, 1)
    env = {k: v for k, v in os.environ.items() if k != "PBS_NODEFILE"}
    if nodefile:
        (tmp_path / "nodes").write_text("localhost\n")
        env["PBS_NODEFILE"] = str(tmp_path / "nodes")
    proc = subprocess.run(["/bin/bash", "-c", line], capture_output=True, text=True, timeout=90,
                          env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{line}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    # each rank prints "3\n"; mpiexec may interleave the ranks' lines, never their characters
    assert "".join(proc.stdout.split()) == "333", proc.stdout
