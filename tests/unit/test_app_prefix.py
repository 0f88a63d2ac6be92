"""Launch prefixes of MPI application tasks (Parsl's MPI-mode variables), the launcher family a
pool detects, the pool variables kept from nested launchers, and the application keys of the
resource specification."""

from __future__ import annotations

import pytest

from rankpool import ResourceSpecError
from rankpool.apps.prefix import (
    FAMILIES,
    compose,
    detect_family,
    hosts_with_counts,
    pool_launch_variables,
)
from rankpool.task.resources import Spec, parse_spec

TWO_BY_TWO = [("n1", 2), ("n2", 2)]


def test_uniform_layouts_are_written_as_parsl_writes_them() -> None:
    env = compose("mpiexec", TWO_BY_TWO)
    assert env["PARSL_MPI_PREFIX"] == "mpiexec -n 4 -ppn 2 -hosts n1,n2"
    assert env["PARSL_MPIEXEC_PREFIX"] == env["PARSL_MPI_PREFIX"]
    assert env["PARSL_APRUN_PREFIX"] == "aprun -n 4 -N 2 -node-list n1,n2"
    assert env["PARSL_SRUN_PREFIX"] == ("srun --overlap --ntasks 4 --nodes 2 "
                                        "--ntasks-per-node 2 --nodelist n1,n2")
    assert (env["PARSL_NUM_RANKS"], env["PARSL_NUM_NODES"], env["PARSL_RANKS_PER_NODE"],
            env["PARSL_MPI_NODELIST"]) == ("4", "2", "2", "n1,n2")
    for name, value in env.items():
        if name.startswith("PARSL_"):
            assert env["RANKPOOL_" + name[6:]] == value
    assert env["RANKPOOL_MPI_LAUNCHER"] == "mpiexec"


def test_the_family_picks_mpi_prefix_and_options_pass_through() -> None:
    srun = compose("srun", TWO_BY_TWO, "--exclusive --mem=0")
    assert srun["PARSL_MPI_PREFIX"] == srun["PARSL_SRUN_PREFIX"]
    assert srun["PARSL_MPI_PREFIX"].endswith("--nodelist n1,n2 --exclusive --mem=0")
    assert srun["PARSL_LAUNCHER_OPTIONS"] == "--exclusive --mem=0"
    assert compose("aprun", TWO_BY_TWO)["PARSL_MPI_PREFIX"].startswith("aprun -n 4 -N 2")
    assert compose("mpirun", TWO_BY_TWO)["PARSL_MPI_PREFIX"] == "mpirun -np 4 --host n1:2,n2:2"
    assert compose("flux", TWO_BY_TWO)["PARSL_MPI_PREFIX"] == (
        "flux run -n 4 -N 2 --tasks-per-node 2 --requires=host:n1,n2")
    assert compose("jsrun", TWO_BY_TWO)["PARSL_MPI_PREFIX"].startswith("jsrun --nrs 4")


def test_uneven_layouts_name_each_host_count_or_are_refused() -> None:
    uneven = [("a", 3), ("b", 1)]
    env = compose("mpiexec", uneven)
    assert env["PARSL_MPI_PREFIX"] == "mpiexec -n 4 -hosts a:3,b:1"
    assert env["PARSL_RANKS_PER_NODE"] == "3,1"
    assert "PARSL_APRUN_PREFIX" not in env  # aprun cannot say it; the chosen family could
    srun = compose("srun", uneven)["PARSL_MPI_PREFIX"]
    assert "--distribution arbitrary --nodelist a,a,a,b" in srun
    for family in ("aprun", "jsrun", "flux"):
        with pytest.raises(ResourceSpecError) as info:
            compose(family, uneven)
        assert info.value.key == "ranks_per_node" and family in str(info.value)


def test_unknown_family_is_refused_naming_the_key() -> None:
    with pytest.raises(ResourceSpecError) as info:
        compose("qsub", TWO_BY_TWO)
    assert info.value.key == "mpi_launcher"
    with pytest.raises(ResourceSpecError) as info:
        detect_family({"RANKPOOL_MPI_LAUNCHER": "nope"})
    assert info.value.key == "RANKPOOL_MPI_LAUNCHER"


def test_hosts_with_counts_keeps_first_seen_order() -> None:
    assert hosts_with_counts(["b", "a", "b", "a", "c"]) == [("b", 2), ("a", 2), ("c", 1)]


@pytest.mark.parametrize(("environ", "family"), [
    ({}, "mpiexec"),
    ({"PMI_RANK": "1", "MPI_LOCALNRANKS": "4"}, "mpiexec"),
    ({"SLURM_STEP_ID": "0", "PMI_RANK": "1"}, "srun"),
    ({"SLURM_STEP_ID": "0", "PMI_RANK": "1", "MPI_LOCALNRANKS": "2"}, "mpiexec"),  # Hydra in Slurm
    ({"SLURM_STEP_ID": "0", "PALS_RANKID": "1"}, "mpiexec"),
    ({"ALPS_APP_PE": "3"}, "aprun"),
    ({"JSM_NAMESPACE_RANK": "3"}, "jsrun"),
    ({"FLUX_TASK_RANK": "3"}, "flux"),
    ({"OMPI_COMM_WORLD_RANK": "3"}, "mpirun"),
    ({"SLURM_STEP_ID": "0", "RANKPOOL_MPI_LAUNCHER": "mpiexec"}, "mpiexec"),
])
def test_detect_family(environ: dict[str, str], family: str) -> None:
    assert detect_family(environ) == family
    assert family in FAMILIES


def test_pool_launch_variables_are_the_launchers_not_the_users() -> None:
    environ = {"PMI_FD": "3", "PMI_RANK": "1", "MPI_LOCALNRANKS": "2", "HYDI_CONTROL_FD": "5",
               "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_JOB_ID": "7",
               "SLURM_NTASKS": "8", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_MCA_btl": "self",
               "MPIR_CVAR_CH4_NETMOD": "ofi", "PMI_ENABLE_X": "1", "HOME": "/root"}
    assert sorted(pool_launch_variables(environ)) == sorted(
        ["PMI_FD", "PMI_RANK", "MPI_LOCALNRANKS", "HYDI_CONTROL_FD", "SLURM_STEP_ID",
         "SLURM_PROCID", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"])


def test_spec_application_keys_are_checked_and_travel() -> None:
    spec = parse_spec({"num_nodes": 2, "ranks_per_node": 2, "launcher_options": " -l ",
                       "mpi_launcher": "srun"})
    assert (spec.num_ranks, spec.launcher_options, spec.mpi_launcher) == (4, "-l", "srun")
    assert Spec.from_wire(spec.to_wire()) == spec
    assert len(spec.to_wire()) == 12
    assert len(parse_spec({"num_ranks": 2, "cwd": "/tmp"}).to_wire()) == 10
    for bad, key in (({"launcher_options": 3}, "launcher_options"),
                     ({"launcher_options": "a\nb"}, "launcher_options"),
                     ({"mpi_launcher": "qsub"}, "mpi_launcher")):
        with pytest.raises(ResourceSpecError) as info:
            parse_spec(bad)
        assert info.value.key == key
