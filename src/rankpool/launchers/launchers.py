"""The rankpool launchers: one class per launcher program, each only its data.

For ``nodes_per_block=2, ranks_per_node=4`` and the pool command ``CMD``::

    MpiexecLauncher  mpiexec -n 8 -ppn 4 -disable-auto-cleanup
                         ${PBS_NODEFILE:+-hostfile "$PBS_NODEFILE"} CMD     (one line)
    SrunLauncher     srun --ntasks 8 --ntasks-per-node 4 --nodes 2 --kill-on-bad-exit=0 CMD
    MpirunLauncher   mpirun -np 8 --map-by ppr:4:node CMD
    AprunLauncher    aprun -n 8 -N 4 CMD
    JsrunLauncher    jsrun --nrs 8 --rs_per_host 4 --tasks_per_rs 1 --cpu_per_rs 1
                         --gpu_per_rs 0 CMD                          (one line)
    FluxLauncher     flux run -n 8 -N 2 CMD

Every constructor is keyword-only and checks its arguments at once, naming the bad one.
Shared arguments: ``ranks_per_node`` (every MPI rank on a node, the manager included; the
executor may set it later), ``extra`` (options passed through to the program, before the
command: a string as written, or a sequence of words, each quoted), ``executable`` (the program's
name or path, replacing the default), ``debug`` (echo the launch line in the job script).
"""

from __future__ import annotations

from collections.abc import Sequence

from .template import Kind, Option, RankLauncher, Syntax, check_hostfile_var

#: ``MpiexecLauncher`` flavors: the same launch, spelled by each ``mpiexec``
MPIEXEC_FLAVORS: dict[str, Syntax] = {
    # MPICH's Hydra (also what the bundled mpiexec is); inside Slurm it starts ranks with srun.
    "hydra": Syntax("mpiexec", ("-n {total}", "-ppn {per_node}"), hostfile_flag="-hostfile",
                    options=(Option("cpu_bind", "-bind-to {}", Kind.WORD),), label="hydra",
                    survive=("-disable-auto-cleanup",)),
    # HPE Cray PALS (Polaris, Aurora, PBS-based Cray EX machines).
    "pals": Syntax("mpiexec", ("-n {total}", "--ppn {per_node}"), hostfile_flag="--hostfile",
                   options=(Option("depth", "--depth {}", Kind.POSITIVE),
                            Option("cpu_bind", "--cpu-bind {}", Kind.WORD)), label="pals"),
    # Intel MPI's Hydra: pinning is set with I_MPI_PIN_* variables, not options.
    "intel": Syntax("mpiexec", ("-n {total}", "-ppn {per_node}"), hostfile_flag="-hostfile",
                    label="intel"),
}


class MpiexecLauncher(RankLauncher):
    """``mpiexec -n TOTAL -ppn RPN``: MPICH Hydra, Cray PALS or Intel MPI.

    ``flavor`` picks the spelling (``"hydra"``, ``"pals"``, ``"intel"``). When the environment
    variable ``hostfile_var`` (default ``PBS_NODEFILE``) is set on the node running the job
    script, its file is passed as the hostfile; ``None`` leaves hosts to ``mpiexec``.
    ``cpu_bind`` (hydra ``-bind-to``, PALS ``--cpu-bind``) and ``depth`` (PALS ``--depth``,
    CPUs per rank) are written only when given; a flavor without them refuses them.
    """

    def __init__(self, *, ranks_per_node: int | None = None, flavor: str = "hydra",
                 cpu_bind: str | None = None, depth: int | None = None,
                 hostfile_var: str | None = "PBS_NODEFILE", extra: str | Sequence[str] = "",
                 executable: str | None = None, debug: bool = False) -> None:
        if not isinstance(flavor, str) or flavor not in MPIEXEC_FLAVORS:
            raise ValueError(f"flavor must be one of {sorted(MPIEXEC_FLAVORS)}, got {flavor!r}")
        self.flavor = flavor
        self.hostfile_var = check_hostfile_var(hostfile_var)
        super().__init__(ranks_per_node=ranks_per_node, extra=extra, debug=debug,
                         executable=executable, syntax=MPIEXEC_FLAVORS[flavor],
                         options={"cpu_bind": cpu_bind, "depth": depth})


class SrunLauncher(RankLauncher):
    """``srun --ntasks TOTAL --ntasks-per-node RPN --nodes N``: Slurm.

    ``mpi`` is srun's ``--mpi`` plugin (``"pmi2"``, ``"pmix"``, ...; ``None`` keeps the site's
    default); ``cpus_per_task`` is written as ``--cpus-per-task`` (newer Slurm releases do not
    always pass ``sbatch``'s value on to ``srun``). rankpool's executors submit the block with
    ``tasks_per_node=RPN``, so ``SlurmProvider``'s job asks for ``--ntasks-per-node=RPN`` and
    the step fits on shared and exclusive nodes alike.
    """

    syntax = Syntax("srun", ("--ntasks {total}", "--ntasks-per-node {per_node}", "--nodes {nodes}"),
                    survive=("--kill-on-bad-exit=0",),
                    options=(Option("mpi", "--mpi={}", Kind.WORD),
                             Option("cpus_per_task", "--cpus-per-task {}", Kind.POSITIVE)))

    def __init__(self, *, ranks_per_node: int | None = None, mpi: str | None = None,
                 cpus_per_task: int | None = None, extra: str | Sequence[str] = "",
                 executable: str | None = None, debug: bool = False) -> None:
        super().__init__(ranks_per_node=ranks_per_node, extra=extra, debug=debug,
                         executable=executable,
                         options={"mpi": mpi, "cpus_per_task": cpus_per_task})


class MpirunLauncher(RankLauncher):
    """``mpirun -np TOTAL --map-by ppr:RPN:node``: Open MPI.

    Open MPI reads the hosts of a Slurm, PBS (tm) or LSF allocation by itself; elsewhere pass
    ``--hostfile`` through ``extra``. ``oversubscribe`` allows more ranks than cores.
    """

    syntax = Syntax("mpirun", ("-np {total}", "--map-by ppr:{per_node}:node"),
                    options=(Option("oversubscribe", "--oversubscribe", Kind.FLAG),))

    def __init__(self, *, ranks_per_node: int | None = None, oversubscribe: bool = False,
                 extra: str | Sequence[str] = "", executable: str | None = None,
                 debug: bool = False) -> None:
        super().__init__(ranks_per_node=ranks_per_node, extra=extra, debug=debug,
                         executable=executable, options={"oversubscribe": oversubscribe})


class AprunLauncher(RankLauncher):
    """``aprun -n TOTAL -N RPN``: Cray ALPS.

    ``depth`` is ``-d`` (CPUs per rank) and ``cpu_bind`` is ``-cc``, written only when given.
    """

    syntax = Syntax("aprun", ("-n {total}", "-N {per_node}"),
                    options=(Option("depth", "-d {}", Kind.POSITIVE),
                             Option("cpu_bind", "-cc {}", Kind.WORD)))

    def __init__(self, *, ranks_per_node: int | None = None, depth: int | None = None,
                 cpu_bind: str | None = None, extra: str | Sequence[str] = "",
                 executable: str | None = None, debug: bool = False) -> None:
        super().__init__(ranks_per_node=ranks_per_node, extra=extra, debug=debug,
                         executable=executable, options={"depth": depth, "cpu_bind": cpu_bind})


class JsrunLauncher(RankLauncher):
    """``jsrun --nrs TOTAL --rs_per_host RPN --tasks_per_rs 1``: IBM LSF (Summit, Sierra).

    One resource set per rank, so ``cpus_per_rank`` and ``gpus_per_rank`` are the resource set's
    ``--cpu_per_rs`` and ``--gpu_per_rs``; both are always written, so the line says what each
    rank gets.
    """

    syntax = Syntax("jsrun", ("--nrs {total}", "--rs_per_host {per_node}", "--tasks_per_rs 1"),
                    options=(Option("cpus_per_rank", "--cpu_per_rs {}", Kind.POSITIVE),
                             Option("gpus_per_rank", "--gpu_per_rs {}", Kind.COUNT)))

    def __init__(self, *, ranks_per_node: int | None = None, cpus_per_rank: int = 1,
                 gpus_per_rank: int = 0, extra: str | Sequence[str] = "",
                 executable: str | None = None, debug: bool = False) -> None:
        super().__init__(ranks_per_node=ranks_per_node, extra=extra, debug=debug,
                         executable=executable,
                         options={"cpus_per_rank": cpus_per_rank, "gpus_per_rank": gpus_per_rank})


class FluxLauncher(RankLauncher):
    """``flux run -n TOTAL -N NODES``: Flux, which spreads the tasks evenly, RPN per node.

    Flux refuses ``--tasks-per-node`` next to ``-n``, so the per-node count is implied by
    ``-n``/``-N``; ``cores_per_task`` and ``gpus_per_task`` are Flux's per-task options,
    ``exclusive`` asks for whole nodes. PMI choices (``-o pmi=...``) go in ``extra``.
    """

    syntax = Syntax("flux", ("-n {total}", "-N {nodes}"), subcommand="run",
                    options=(Option("cores_per_task", "--cores-per-task {}", Kind.POSITIVE),
                             Option("gpus_per_task", "--gpus-per-task {}", Kind.POSITIVE),
                             Option("exclusive", "--exclusive", Kind.FLAG)))

    def __init__(self, *, ranks_per_node: int | None = None, cores_per_task: int | None = None,
                 gpus_per_task: int | None = None, exclusive: bool = False,
                 extra: str | Sequence[str] = "", executable: str | None = None,
                 debug: bool = False) -> None:
        super().__init__(ranks_per_node=ranks_per_node, extra=extra, debug=debug,
                         executable=executable,
                         options={"cores_per_task": cores_per_task,
                                  "gpus_per_task": gpus_per_task, "exclusive": exclusive})
