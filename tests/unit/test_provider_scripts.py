"""The job scripts Parsl's providers would submit with rankpool's launchers, without a scheduler.

Each block's job must hold the slots its launch line uses (``ranks_per_node`` tasks per node),
however the provider takes them: ``tasks_per_node`` (Slurm, Torque) or its own options (PBS
Pro's ``mpiprocs``). Parsl's executors submit ``tasks_per_node=1``, which on shared nodes makes
Slurm refuse the block's ``srun``.

Every cluster provider writes its script into ``script_dir`` and then runs the submit command
(``qsub``/``sbatch``/``bsub``) through ``ClusterProvider.execute_wait``; ``LocalProvider`` runs
its script through ``parsl.utils.execute_wait``. The ``submitted`` fixture replaces both with a
fake scheduler that records the command, answers like the real one and runs nothing, so the
test reads back exactly the script that would have been submitted. The site examples under
``examples/`` are checked the same way.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from parsl.providers import (
    LocalProvider,
    LSFProvider,
    PBSProProvider,
    SlurmProvider,
    TorqueProvider,
)
from parsl.providers.cluster_provider import ClusterProvider

from rankpool.launchers import (
    FluxLauncher,
    JsrunLauncher,
    MpiexecLauncher,
    RankLauncher,
    SrunLauncher,
)
from rankpool.launchers.shape import block_shape

CMD = "/opt/py/bin/python3 -m rankpool.mpi_pool --interchange tcp://10.1.2.3:55001 --block-id 0"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: what each submit program prints on success
ANSWERS = {"qsub": "4242.pbs01\n", "sbatch": "Submitted batch job 4242\n",
           "bsub": "Job <4242> is submitted to queue <batch>.\n"}


class FakeScheduler:
    """Records submit commands and answers them; the script is the command's last word."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def execute_wait(self, cmd: str, timeout: Any = None) -> tuple[int, str, str]:
        self.commands.append(cmd)
        program = shlex.split(cmd)[0]
        if program in ANSWERS:
            return 0, ANSWERS[program], ""
        if "bash" in program:                            # LocalProvider's background launch
            return 0, "PID:4242\n", ""
        if program == "sacct":                           # SlurmProvider probes it when built
            return 0, "", ""
        raise AssertionError(f"unexpected scheduler command: {cmd}")

    def script(self) -> str:
        """The text of the last script submitted."""
        last = self.commands[-1]
        path = re.search(r"(/\S+?\.sh)\b", last) if "bash" in last else None
        return Path(path.group(1) if path else shlex.split(last)[-1]).read_text()


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[Any], str]:
    """``submitted(provider)``: the job script ``provider`` would submit for the pool command."""
    fake = FakeScheduler()

    def method(self: Any, cmd: str, timeout: Any = None) -> tuple[int, str, str]:
        return fake.execute_wait(cmd, timeout)

    monkeypatch.setattr(ClusterProvider, "execute_wait", method)
    monkeypatch.setattr("parsl.providers.local.local.execute_wait", fake.execute_wait)

    def submit(provider: Any) -> str:
        provider.script_dir = str(tmp_path)
        # what the executor submits a block with (and fits the provider's options to)
        tasks = block_shape(provider, None, None).tasks_per_node
        job_id = provider.submit(CMD, tasks, "rankpool-block")
        assert job_id == "4242.pbs01" if isinstance(provider, TorqueProvider) else job_id == "4242"
        return fake.script()

    submit.fake = fake  # type: ignore[attr-defined]
    return submit


def lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.strip()]


def test_pbspro_with_mpiexec(submitted: Callable[[Any], str]) -> None:
    launcher = MpiexecLauncher(ranks_per_node=8)
    provider = PBSProProvider(account="proj", queue="debug", nodes_per_block=4, cpus_per_node=64,
                              select_options="ngpus=4", walltime="01:00:00",
                              scheduler_options="#PBS -l filesystems=home",
                              worker_init="source env/bin/activate", launcher=launcher)
    script = lines(submitted(provider))
    assert "#PBS -l select=4:ncpus=64:ngpus=4:mpiprocs=8" in script
    assert "#PBS -l walltime=01:00:00" in script
    assert "#PBS -l filesystems=home" in script
    assert script.index("source env/bin/activate") < len(script) - 1
    assert script[-1] == (f'mpiexec -n 32 -ppn 8 -disable-auto-cleanup '
                          f'${{PBS_NODEFILE:+-hostfile "$PBS_NODEFILE"}} {CMD}')
    submit_command = submitted.fake.commands[-1]  # type: ignore[attr-defined]
    assert submit_command.startswith("qsub  -q debug -A proj /")


def test_pbspro_with_cray_pals(submitted: Callable[[Any], str]) -> None:
    launcher = MpiexecLauncher(ranks_per_node=32, flavor="pals", depth=2, cpu_bind="depth")
    script = lines(submitted(PBSProProvider(nodes_per_block=2, cpus_per_node=64,
                                            launcher=launcher)))
    assert "#PBS -l select=2:ncpus=64:mpiprocs=32" in script
    assert script[-1] == ('mpiexec -n 64 --ppn 32 ${PBS_NODEFILE:+--hostfile "$PBS_NODEFILE"} '
                          f"--depth 2 --cpu-bind depth {CMD}")


def test_torque_with_mpiexec(submitted: Callable[[Any], str]) -> None:
    provider = TorqueProvider(queue="batch", nodes_per_block=2, walltime="00:10:00",
                              launcher=MpiexecLauncher(ranks_per_node=4, debug=True))
    script = lines(submitted(provider))
    assert "#PBS -l nodes=2:ppn=4" in script  # the slots -ppn 4 places ranks in
    assert "#PBS -l walltime=00:10:00" in script
    line = (f'mpiexec -n 8 -ppn 4 -disable-auto-cleanup '
            f'${{PBS_NODEFILE:+-hostfile "$PBS_NODEFILE"}} {CMD}')
    assert script[-2:] == [f"echo {shlex.quote('rankpool launch: ' + line)}", line]


def test_slurm_with_srun(submitted: Callable[[Any], str]) -> None:
    provider = SlurmProvider(partition="debug", account="proj", nodes_per_block=2,
                             walltime="00:30:00",
                             launcher=SrunLauncher(ranks_per_node=4, mpi="pmix"))
    script = lines(submitted(provider))
    for header in ("#SBATCH --nodes=2", "#SBATCH --time=30", "#SBATCH --ntasks-per-node=4",
                   "#SBATCH --exclusive", "#SBATCH --partition=debug", "#SBATCH --account=proj"):
        assert header in script
    assert script[-1] == (f"srun --ntasks 8 --ntasks-per-node 4 --nodes 2 --kill-on-bad-exit=0 "
                          f"--mpi=pmix {CMD}")


def test_slurm_shared_nodes_hold_the_launch(submitted: Callable[[Any], str]) -> None:
    """Without --exclusive only --ntasks-per-node gives the job the step's 4 tasks per node."""
    provider = SlurmProvider(nodes_per_block=2, exclusive=False,
                             launcher=SrunLauncher(ranks_per_node=4))
    script = lines(submitted(provider))
    assert "#SBATCH --exclusive" not in script
    assert [h for h in script if h.startswith("#SBATCH --ntasks")] \
        == ["#SBATCH --ntasks-per-node=4"]
    assert script[-1] == f"srun --ntasks 8 --ntasks-per-node 4 --nodes 2 --kill-on-bad-exit=0 {CMD}"


def test_slurm_cores_per_node_split_between_the_ranks(submitted: Callable[[Any], str]) -> None:
    provider = SlurmProvider(nodes_per_block=1, cores_per_node=8,
                             launcher=SrunLauncher(ranks_per_node=4))
    script = lines(submitted(provider))
    assert "#SBATCH --ntasks-per-node=4" in script
    assert any(line.startswith("#SBATCH --cpus-per-task=2") for line in script)


def test_slurm_fewer_cores_than_ranks_is_refused() -> None:
    provider = SlurmProvider(nodes_per_block=1, cores_per_node=2,
                             launcher=SrunLauncher(ranks_per_node=4))
    with pytest.raises(ValueError, match=r"cores_per_node=2\) is fewer cores than the 4 tasks"):
        block_shape(provider, None, None)


def test_pbspro_conflicting_mpiprocs_is_refused_and_fitting_is_idempotent() -> None:
    launcher = MpiexecLauncher(ranks_per_node=8)
    with pytest.raises(ValueError, match=r"mpiprocs=4, but a block launches 8 ranks per node"):
        block_shape(PBSProProvider(select_options="ngpus=4:mpiprocs=4", cpus_per_node=64,
                                   launcher=launcher), None, None)
    provider = PBSProProvider(select_options="mpiprocs=8", cpus_per_node=64, launcher=launcher)
    block_shape(provider, None, None)
    block_shape(provider, None, None)
    assert provider.select_options == "mpiprocs=8"
    bare = PBSProProvider(cpus_per_node=64, launcher=MpiexecLauncher(ranks_per_node=8))
    block_shape(bare, None, None)
    block_shape(bare, None, None)
    assert bare.select_options == ":mpiprocs=8"


def test_lsf_by_cores_needs_the_ranks_per_node() -> None:
    provider = LSFProvider(request_by_nodes=False, cores_per_block=8, cores_per_node=4,
                           launcher=JsrunLauncher(ranks_per_node=6))
    with pytest.raises(ValueError, match=r"LSFProvider\(cores_per_node=4\)"):
        block_shape(provider, None, None)


def test_grid_engine_without_parallel_environment_warns(caplog: pytest.LogCaptureFixture) -> None:
    from parsl.providers import GridEngineProvider

    from rankpool.launchers import MpirunLauncher
    with caplog.at_level("WARNING", logger="rankpool.launchers.allocation"):
        block_shape(GridEngineProvider(launcher=MpirunLauncher(ranks_per_node=4)), None, None)
    assert "no parallel environment" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="rankpool.launchers.allocation"):
        block_shape(GridEngineProvider(scheduler_options="#$ -pe mpi 4",
                                       launcher=MpirunLauncher(ranks_per_node=4)), None, None)
    assert "no parallel environment" not in caplog.text


def test_slurm_with_mpiexec_has_no_hostfile_at_run_time(submitted: Callable[[Any], str]) -> None:
    script = submitted(SlurmProvider(nodes_per_block=2,
                                     launcher=MpiexecLauncher(ranks_per_node=4)))
    assert lines(script)[-1].startswith(
        "mpiexec -n 8 -ppn 4 -disable-auto-cleanup ${PBS_NODEFILE:+")


def test_lsf_with_jsrun(submitted: Callable[[Any], str]) -> None:
    provider = LSFProvider(project="proj", queue="batch", nodes_per_block=2,
                           launcher=JsrunLauncher(ranks_per_node=6, cpus_per_rank=7,
                                                  gpus_per_rank=1))
    script = lines(submitted(provider))
    assert "#BSUB -nnodes 2" in script and "#BSUB -P proj" in script
    assert script[-1] == ("jsrun --nrs 12 --rs_per_host 6 --tasks_per_rs 1 --cpu_per_rs 7 "
                          f"--gpu_per_rs 1 {CMD}")


def test_local_provider_with_flux(submitted: Callable[[Any], str]) -> None:
    provider = LocalProvider(nodes_per_block=2, worker_init="source env/bin/activate",
                             launcher=FluxLauncher(ranks_per_node=8))
    script = lines(submitted(provider))
    assert script[0] == "source env/bin/activate"
    assert script[-1] == f"flux run -n 16 -N 2 {CMD}"


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_local_provider_really_starts_one_application(tmp_path: Path) -> None:
    """Parsl's own script around our line, run for real: 3 ranks of one ``COMM_WORLD``."""
    pytest.importorskip("mpi4py")
    from rankpool.launchers.mpiexec import MpiexecNotFound, find_mpiexec
    try:
        mpiexec = find_mpiexec()
    except MpiexecNotFound as exc:
        pytest.skip(str(exc))
    provider = LocalProvider(nodes_per_block=1, worker_init="unset PBS_NODEFILE",
                             launcher=MpiexecLauncher(ranks_per_node=3, executable=mpiexec))
    provider.script_dir = str(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    code = (f"from mpi4py import MPI; c = MPI.COMM_WORLD; "
            f"open({str(out / 'rank')!r} + str(c.rank), 'w').write(str(c.size))")
    job = provider.submit(shlex.join([sys.executable, "-c", code]), 1, "rankpool-test")
    deadline = time.monotonic() + 90
    while not provider.status([job])[0].terminal:
        if time.monotonic() > deadline:
            provider.cancel([job])
            raise AssertionError("the job did not finish within 90 s")
        time.sleep(0.1)
    status = provider.status([job])[0]
    assert status.exit_code == 0, (status, status.stdout, status.stderr)
    assert sorted(p.name for p in out.iterdir()) == ["rank0", "rank1", "rank2"]
    assert {p.read_text() for p in out.iterdir()} == {"3"}


# -- the site examples --------------------------------------------------------------------------
def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path; importing must start nothing."""
    spec = importlib.util.spec_from_file_location(f"_rankpool_example_{name}",
                                                  EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLE_LINES = {
    "site_pbs_polaris": ('mpiexec -n 64 --ppn 32 ${PBS_NODEFILE:+--hostfile "$PBS_NODEFILE"} '
                         f"--depth 2 --cpu-bind depth {CMD}"),
    "site_lsf_summit": ("jsrun --nrs 12 --rs_per_host 6 --tasks_per_rs 1 --cpu_per_rs 7 "
                        f"--gpu_per_rs 1 --bind packed:7 {CMD}"),
    "site_flux": f"flux run -n 16 -N 2 --exclusive {CMD}",
    "site_slurm": (f"srun --ntasks 32 --ntasks-per-node 16 --nodes 2 --kill-on-bad-exit=0 "
                   f"--mpi=pmi2 {CMD}"),
}


@pytest.mark.parametrize("name", sorted(EXAMPLE_LINES))
def test_site_example(name: str, submitted: Callable[[Any], str]) -> None:
    module = load_example(name)
    assert callable(module.config) and callable(module.provider)
    provider = module.provider()
    assert isinstance(provider.launcher, RankLauncher)
    assert provider.launcher.ranks_per_node == module.RANKS_PER_NODE
    assert provider.nodes_per_block == module.NODES_PER_BLOCK
    assert lines(submitted(provider))[-1] == EXAMPLE_LINES[name]
    assert submitted.fake.commands  # type: ignore[attr-defined]
