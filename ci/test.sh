#!/usr/bin/env bash
# Install what the tests need and run the whole suite: the README's test command and CI's.
#
#   bash ci/test.sh [pytest args...]
#
# Creates .venv (if missing) with rankpool, its test extras and the bundled MPICH, lints the
# code (ruff) and type-checks src/ (mypy; both set in pyproject.toml), starts a one-machine
# Slurm cluster with two fake nodes (Debian packages; needs root or sudo) for tests/slurm,
# builds the documentation (warnings are errors) and runs pytest. Set RANKPOOL_NO_SLURM=1 to
# skip Slurm (its tests then skip with a reason that says so).
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
exec .venv/bin/python -m pytest "$@"
