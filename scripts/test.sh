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
# The production stack (PostgreSQL, moto S3, headless Chromium): installed if missing, started (or
# reused) and exported as VOLTMODELS_TEST_* for tests/test_production_stack.py and test_registry_ui.py.
# Services started here are stopped on exit (VOLTMODELS_KEEP_SERVICES=1 keeps them); VOLTMODELS_SERVICES=0
# skips all this (those tests then skip).
if [ "${VOLTMODELS_SERVICES:-1}" != 0 ]; then
  bash scripts/services.sh running 2>/dev/null && services_were_up=1 || services_were_up=0
  services_env="$(bash scripts/services.sh start)"
  eval "$services_env"
  if [ "$services_were_up" = 0 ] && [ "${VOLTMODELS_KEEP_SERVICES:-0}" != 1 ]; then
    trap 'bash scripts/services.sh stop' EXIT
  fi
fi
# The 15 slowest tests close every log: the whole run must stay under 30 minutes on 2 cores.
python -m pytest -q --durations=15 "$@"
