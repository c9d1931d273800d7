#!/usr/bin/env bash
# The test command of the README (and of .ci/run): installs everything the suite needs, then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
export VOLTMODELS_SNAPSHOT="${VOLTMODELS_SNAPSHOT:-$(cd .. && pwd)/shared/data}"
if [ ! -f "$VOLTMODELS_SNAPSHOT/mp_electrodes.csv" ]; then
  echo "error: snapshot not found at $VOLTMODELS_SNAPSHOT (set VOLTMODELS_SNAPSHOT to the data folder)" >&2
  exit 1
fi
# torch first, from the CPU wheel: a bare torch requirement would pull a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
export VOLTMODELS_TORCH_THREADS="${VOLTMODELS_TORCH_THREADS:-2}"
python -m pytest -q "$@"
