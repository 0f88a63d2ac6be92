"""Launch prefixes for MPI application tasks: Parsl's MPI-mode variables, composed here.

An *application task* (see :mod:`rankpool.mpi_pool.applications`) runs its function once, on
the first of the ranks it holds, with variables that say how to start an MPI program on
exactly those ranks' hosts. The names and meanings are Parsl's MPI mode's
(``PARSL_MPI_PREFIX``, ``PARSL_MPIEXEC_PREFIX``, ``PARSL_SRUN_PREFIX``, ``PARSL_APRUN_PREFIX``,
``PARSL_NUM_RANKS``, ``PARSL_NUM_NODES``, ``PARSL_RANKS_PER_NODE``, ``PARSL_MPI_NODELIST``,
``PARSL_LAUNCHER_OPTIONS``), each also set under a ``RANKPOOL_`` name. ``*_MPI_PREFIX`` uses
the block's own launcher family (:func:`detect_family`) unless the task names one
(``mpi_launcher``).

Hosts come with counts: ``[("n1", 2), ("n2", 2)]``. A uniform layout is written as Parsl
writes it (``mpiexec -n 4 -ppn 2 -hosts n1,n2``); an uneven one names each host's count where
the launcher can say it (``-hosts n1:3,n2:1``; ``srun --distribution arbitrary``) and is refused
where it cannot. Nothing here imports mpi4py: this module is unit-tested on its own.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence

from ..errors import ResourceSpecError

Hosts = Sequence[tuple[str, int]]

#: launcher families an application's prefix may use
FAMILIES = ("mpiexec", "srun", "aprun", "mpirun", "jsrun", "flux")

#: variable that names a pool's family for all its tasks (set it in the pool's environment)
FAMILY_VAR = "RANKPOOL_MPI_LAUNCHER"


def _per_node(hosts: Hosts) -> int | None:
    """The ranks per node when every host holds the same number, else None."""
    counts = {count for _, count in hosts}
    return counts.pop() if len(counts) == 1 else None


def _names(hosts: Hosts) -> str:
    return ",".join(name for name, _ in hosts)


def _mpiexec(hosts: Hosts, total: int, options: str) -> str:
    rpn = _per_node(hosts)
    if rpn is not None:
        words = ["mpiexec", "-n", str(total), "-ppn", str(rpn), "-hosts", _names(hosts)]
    else:
        words = ["mpiexec", "-n", str(total), "-hosts",
                 ",".join(f"{name}:{count}" for name, count in hosts)]
    return _join(words, options)


def _srun(hosts: Hosts, total: int, options: str) -> str:
    # --overlap: the pool's own step holds every CPU of the allocation, and a step started
    # inside it must be allowed to share them
    rpn = _per_node(hosts)
    words = ["srun", "--overlap", "--ntasks", str(total), "--nodes", str(len(hosts))]
    if rpn is not None:
        words += ["--ntasks-per-node", str(rpn), "--nodelist", _names(hosts)]
    else:
        words += ["--distribution", "arbitrary", "--nodelist",
                  ",".join(name for name, count in hosts for _ in range(count))]
    return _join(words, options)


def _aprun(hosts: Hosts, total: int, options: str) -> str:
    rpn = _uniform(hosts, "aprun")
    return _join(["aprun", "-n", str(total), "-N", str(rpn), "-node-list", _names(hosts)], options)


def _mpirun(hosts: Hosts, total: int, options: str) -> str:
    return _join(["mpirun", "-np", str(total), "--host",
                  ",".join(f"{name}:{count}" for name, count in hosts)], options)


def _jsrun(hosts: Hosts, total: int, options: str) -> str:
    # jsrun picks hosts from the LSF allocation itself: the shape is all it can be told
    rpn = _uniform(hosts, "jsrun")
    return _join(["jsrun", "--nrs", str(total), "--rs_per_host", str(rpn), "--tasks_per_rs", "1",
                  "--cpu_per_rs", "1"], options)


def _flux(hosts: Hosts, total: int, options: str) -> str:
    rpn = _uniform(hosts, "flux")
    return _join(["flux", "run", "-n", str(total), "-N", str(len(hosts)),
                  "--tasks-per-node", str(rpn), f"--requires=host:{_names(hosts)}"], options)


def _uniform(hosts: Hosts, family: str) -> int:
    rpn = _per_node(hosts)
    if rpn is None:
        counts = ", ".join(f"{name}: {count}" for name, count in hosts)
        raise ResourceSpecError("ranks_per_node", f"{family} cannot start an uneven layout "
                                f"({counts}); ask for ranks_per_node so that every node holds "
                                "the same number of the task's ranks")
    return rpn


def _join(words: list[str], options: str) -> str:
    line = shlex.join(words)
    return f"{line} {options}" if options else line


COMPOSERS: dict[str, Callable[[Hosts, int, str], str]] = {
    "mpiexec": _mpiexec, "srun": _srun, "aprun": _aprun, "mpirun": _mpirun, "jsrun": _jsrun,
    "flux": _flux,
}

#: the prefixes every task gets whatever its family, as Parsl sets them
ALWAYS = (("MPIEXEC_PREFIX", "mpiexec"), ("SRUN_PREFIX", "srun"), ("APRUN_PREFIX", "aprun"))


def check_family(value: object, key: str = "mpi_launcher") -> str:
    """``value`` as a launcher family name, or an error that names ``key``."""
    if not isinstance(value, str) or value not in FAMILIES:
        raise ResourceSpecError(key, f"unknown MPI launcher {value!r:.60}; known: "
                                f"{', '.join(FAMILIES)}")
    return value


def check_options(value: object) -> str:
    """``launcher_options``: one line of options for the launcher, as Parsl passes them."""
    if not isinstance(value, str) or "\n" in value or "\r" in value or "\0" in value:
        raise ResourceSpecError("launcher_options", f"must be one line of launcher options, "
                                f"got {value!r:.80}")
    return value.strip()


def hosts_with_counts(names: Sequence[str]) -> list[tuple[str, int]]:
    """Each rank's host name, in rank order, as hosts with counts in first-seen order."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return list(counts.items())


def compose(family: str, hosts: Hosts, options: str = "") -> dict[str, str]:
    """Every variable an application task sees, for ranks on ``hosts`` (with counts).

    The chosen ``family`` must compose (an error names the key otherwise); the other
    families' prefixes are set when they can be written, as Parsl does.
    """
    family = check_family(family)
    if not hosts:
        raise ResourceSpecError("num_ranks", "an application task holds no ranks")
    total = sum(count for _, count in hosts)
    rpn = _per_node(hosts)
    plain = {
        "MPI_PREFIX": COMPOSERS[family](hosts, total, options),
        "NUM_RANKS": str(total),
        "NUM_NODES": str(len(hosts)),
        "RANKS_PER_NODE": str(rpn) if rpn is not None
        else ",".join(str(count) for _, count in hosts),
        "MPI_NODELIST": _names(hosts),
        "LAUNCHER_OPTIONS": options,
    }
    for name, other in ALWAYS:
        try:
            plain[name] = COMPOSERS[other](hosts, total, options)
        except ResourceSpecError:
            pass  # that launcher cannot express this layout; the chosen one could
    variables = {f"PARSL_{name}": value for name, value in plain.items()}
    variables.update({f"RANKPOOL_{name}": value for name, value in plain.items()})
    variables[FAMILY_VAR] = family
    return variables


def detect_family(environ: Mapping[str, str]) -> str:
    """The launcher family that started this pool, read from a rank's environment.

    ``RANKPOOL_MPI_LAUNCHER`` wins; then the markers each launcher leaves on its ranks. Hydra
    inside a Slurm job starts its proxies with ``srun``, so Slurm's variables alone do not
    mean ``srun``: Hydra's own ``MPI_LOCALNRANKS`` tells them apart.
    """
    named = environ.get(FAMILY_VAR)
    if named:
        return check_family(named, FAMILY_VAR)
    if "ALPS_APP_PE" in environ:
        return "aprun"
    if "JSM_NAMESPACE_RANK" in environ:
        return "jsrun"
    if "FLUX_TASK_RANK" in environ:
        return "flux"
    if "OMPI_COMM_WORLD_RANK" in environ:
        return "mpirun"
    if "SLURM_STEP_ID" in environ and "MPI_LOCALNRANKS" not in environ \
            and "PALS_RANKID" not in environ:
        return "srun"
    return "mpiexec"


#: variables a launcher sets on the pool's own ranks: a launcher started by the task must not
#: see them, or it would join (or refuse) the pool's job instead of starting its own
_POOL_PREFIXES = ("PMI_", "PMIX_", "PMI2_", "HYDRA_", "HYDI_", "MPI_LOCALNRANKS",
                  "MPI_LOCALRANKID", "MPIR_PROCDESC", "OMPI_COMM_WORLD_", "OMPI_UNIVERSE_SIZE",
                  "OMPI_FIRST_RANKS", "OMPI_APP_CTX_", "OMPI_MCA_ess", "OMPI_MCA_orte_",
                  "OMPI_MCA_pmix", "PRTE_", "PALS_", "ALPS_APP_", "JSM_NAMESPACE_",
                  "FLUX_TASK_", "SLURM_STEP_", "SLURM_STEPID", "SLURM_PROCID", "SLURM_LOCALID",
                  "SLURM_NODEID", "SLURM_TASK_PID", "SLURM_CPU_BIND", "SLURM_NTASKS",
                  "SLURM_NPROCS", "SLURM_TASKS_PER_NODE", "SLURM_DISTRIBUTION",
                  "SLURM_SRUN_COMM_", "SLURM_LAUNCH_NODE_IPADDR", "SLURM_GTIDS",
                  "SLURM_PMI", "SLURM_MPI_TYPE_PMI")
_KEEP = ("PMI_ENABLE_", "PMIX_MCA_")  # user settings, not the launch's


def pool_launch_variables(environ: Mapping[str, str]) -> list[str]:
    """The names in ``environ`` that the pool's launcher set for its ranks."""
    return [name for name in environ
            if name.startswith(_POOL_PREFIXES) and not name.startswith(_KEEP)]
