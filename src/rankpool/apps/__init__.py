"""MPI applications as tasks: launch prefixes, the process tree of a running application,
and :func:`run_mpi`. Nothing here imports mpi4py (spawn mode imports it when used)."""
