#!/usr/bin/env bash
# Run every multi-process test (pytest marker `multiprocess`) many times in
# a row and count the failures per test. Not part of CI: a flaky
# multi-process test fails there once in a while; this finds it.
#
# Usage: bash tools/stress_multiprocess_tests.sh [RUNS] [extra pytest args]
#        (RUNS defaults to 30; logs go to $STRESS_LOG_DIR, default
#        work_dirs/stress_multiprocess)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMSEG_FNM_VENV:-$ROOT/.venv}"
RUNS="${1:-30}"
shift || true
LOG_DIR="${STRESS_LOG_DIR:-$ROOT/work_dirs/stress_multiprocess}"
cd "$ROOT"
mkdir -p "$LOG_DIR"

if ! [[ "$RUNS" =~ ^[1-9][0-9]*$ ]]; then
    echo "RUNS must be a positive integer, got '$RUNS'" >&2
    exit 2
fi

for run in $(seq 1 "$RUNS"); do
    log="$LOG_DIR/run_$run.log"
    start=$(date +%s)
    "$VENV/bin/python" -m pytest tests -m multiprocess -q -rA "$@" \
        > "$log" 2>&1
    rc=$?
    echo "[stress] run $run/$RUNS: exit $rc in $(($(date +%s) - start)) s" \
         "($log)"
done

# -rA writes one 'PASSED|FAILED|ERROR path::test' line per test and run.
echo "[stress] results over $RUNS runs (logs in $LOG_DIR):"
grep -hE '^(PASSED|FAILED|ERROR) ' "$LOG_DIR"/run_*.log |
    sed -E 's/ - .*$//' | sort | uniq -c | sort -k3
failed=$(grep -hcE '^(FAILED|ERROR) ' "$LOG_DIR"/run_*.log |
    awk '{s += $1} END {print s + 0}')
passed=$(grep -hcE '^PASSED ' "$LOG_DIR"/run_*.log |
    awk '{s += $1} END {print s + 0}')
echo "[stress] $passed passed, $failed failed"
[[ "$failed" -eq 0 && "$passed" -gt 0 ]]
