#!/usr/bin/env bash
# A venv of its own for DAPPER, the reference library of the twin benchmarks (not a dependency of diffda).
# Usage: bash env/dapper-venv.sh   -> .dapper-venv/bin/python
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x .dapper-venv/bin/python ] || python3 -m venv .dapper-venv
.dapper-venv/bin/python -c "import dapper" 2>/dev/null || .dapper-venv/bin/python -m pip install -q --disable-pip-version-check "dapper==1.7.1"
