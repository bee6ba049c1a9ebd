#!/usr/bin/env bash
# Set up the CPU environment, bring up the single-node SLURM test cluster (as root), run the tests.
# Usage: bash env/test.sh [pytest arguments]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash env/setup.sh
if [ "$(id -u)" = 0 ] && [ -x slurm/local-cluster.sh ]; then
  bash slurm/local-cluster.sh up
fi
export OMP_NUM_THREADS=1
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
