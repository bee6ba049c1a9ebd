#!/usr/bin/env bash
# Set up the CPU environment, bring up the single-node SLURM test cluster (as root), run the tests.
# Usage: bash env/test.sh [pytest arguments]   (DIFFDA_TEST_WORKERS=N: pytest-xdist workers, default 2)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash env/setup.sh
if [ "$(id -u)" = 0 ] && [ -x slurm/local-cluster.sh ]; then
  bash slurm/local-cluster.sh up
fi
export OMP_NUM_THREADS=1
# Two workers (pytest-xdist), whole files per worker: module fixtures are built once, and the SLURM
# tests (one file) run one after another on one worker while the other runs the rest.
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${DIFFDA_TEST_WORKERS:-2}" --dist loadfile "$@"
