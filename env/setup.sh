#!/usr/bin/env bash
# Create .venv with the pinned CPU environment and install diffda into it (idempotent).
# Usage: bash env/setup.sh            (from anywhere)
#        PYTHON=python3.11 bash env/setup.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python=${PYTHON:-python3}
stamp=.venv/.diffda-env
want="$(cat env/requirements-cpu.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  # Up to date; an editable install made before a new top-level package existed misses it.
  .venv/bin/python -c "import pipeline, jobs" 2>/dev/null \
    || .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    # Debian's python3 ships venv separately.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      rm -rf .venv && "$python" -m venv .venv
    else
      echo "error: '$python -m venv' failed; install python3-venv (apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first and exactly pinned: a looser requirement would pull a multi-GB CUDA build.
"${pip[@]}" torch==2.13.0
"${pip[@]}" -r env/requirements-cpu.txt
"${pip[@]}" --no-deps --no-build-isolation -e . 2>/dev/null || "${pip[@]}" --no-deps -e .
echo "$want" > "$stamp"
echo "diffda environment ready: $root/.venv" >&2
