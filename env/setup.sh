#!/usr/bin/env bash
# Create .venv with the pinned CPU environment and install diffda into it.
# Usage: bash env/setup.sh [--test]   (run from anywhere; idempotent)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first and exactly pinned, so nothing pulls a CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -r env/requirements-cpu.txt
.venv/bin/python -m pip install -q --no-deps -e .
echo "diffda environment ready: $root/.venv"
