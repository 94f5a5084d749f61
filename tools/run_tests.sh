#!/usr/bin/env bash
# The project's test command: environment, lint, tests.
#
# Usage: bash tools/run_tests.sh [extra pytest args]
#        MMSEG_FNM_VENV=/path bash tools/run_tests.sh
# Lint and tests both run; the exit status is non-zero if either failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMSEG_FNM_VENV:-$ROOT/.venv}"
cd "$ROOT"

log() { echo "[run_tests] $*" >&2; }

# 1. Environment (idempotent: seconds when it is ready).
bash tools/setup_env.sh

# 2. Lint, with the settings in setup.cfg.
LINT_PATHS=(mmseg_fnm tools tests configs)
lint_rc=0
log "flake8 ${LINT_PATHS[*]}"
"$VENV/bin/flake8" "${LINT_PATHS[@]}" || lint_rc=1
log "isort --check-only ${LINT_PATHS[*]}"
"$VENV/bin/isort" --check-only --diff "${LINT_PATHS[@]}" || lint_rc=1

# 3. Tests. No collected tests (pytest exit code 5) is a failure.
log "pytest tests"
test_rc=0
"$VENV/bin/python" -m pytest tests -q "$@" || test_rc=$?
if [[ $test_rc -eq 5 ]]; then
    log "ERROR: pytest collected no tests"
fi

if [[ $lint_rc -ne 0 ]]; then
    log "ERROR: lint failed (flake8/isort output above)"
fi
if [[ $test_rc -ne 0 ]]; then
    log "ERROR: tests failed (pytest exit code $test_rc)"
    exit "$test_rc"
fi
exit "$lint_rc"
