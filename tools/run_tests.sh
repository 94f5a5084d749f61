#!/usr/bin/env bash
# The project's test command: environment, lint, tests.
#
# Usage: bash tools/run_tests.sh [extra pytest args]
#        MMSEG_FNM_VENV=/path bash tools/run_tests.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMSEG_FNM_VENV:-$ROOT/.venv}"
cd "$ROOT"

log() { echo "[run_tests] $*" >&2; }

# 1. Environment (idempotent: seconds when it is ready).
bash tools/setup_env.sh

# 2. Lint, with the settings in setup.cfg.
LINT_PATHS=(mmseg_fnm tools tests configs)
log "flake8 ${LINT_PATHS[*]}"
"$VENV/bin/flake8" "${LINT_PATHS[@]}"
log "isort --check-only ${LINT_PATHS[*]}"
"$VENV/bin/isort" --check-only --diff "${LINT_PATHS[@]}"

# 3. Tests. No collected tests (exit code 5) is a failure, not a pass.
log "pytest tests"
rc=0
"$VENV/bin/python" -m pytest tests -q "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
    log "ERROR: pytest collected no tests"
fi
exit $rc
