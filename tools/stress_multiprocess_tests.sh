#!/usr/bin/env bash
# Run every multi-process test (pytest marker `multiprocess`) many times in
# a row and count the failures per test. Not part of CI: a flaky
# multi-process test fails there once in a while; this finds it.
#
# Usage: bash tools/stress_multiprocess_tests.sh [RUNS] [extra pytest args]
#        (RUNS defaults to 30; logs go to $STRESS_LOG_DIR, default
#        work_dirs/stress_multiprocess)
#
# Resumable: a run whose log is complete is kept, so the same command after
# a kill goes on with the next run. A log is renamed into place only when
# pytest has finished; a killed run leaves no log and is run again. Start
# from scratch with an empty (or another) STRESS_LOG_DIR.
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

logs=()
for run in $(seq 1 "$RUNS"); do
    log="$LOG_DIR/run_$run.log"
    logs+=("$log")
    if [[ -f "$log" ]]; then
        echo "[stress] run $run/$RUNS: kept from an earlier start ($log)"
        continue
    fi
    start=$(date +%s)
    "$VENV/bin/python" -m pytest tests -m multiprocess -q -rA "$@" \
        > "$log.part" 2>&1
    rc=$?
    echo "exit $rc" >> "$log.part"
    mv "$log.part" "$log"
    echo "[stress] run $run/$RUNS: exit $rc in $(($(date +%s) - start)) s" \
         "($log)"
done

# -rA writes one 'PASSED|FAILED|ERROR path::test' line per test and run; a
# run that ended without any (e.g. collection failed) counts as failed.
echo "[stress] results over $RUNS runs (logs in $LOG_DIR):"
grep -hE '^(PASSED|FAILED|ERROR) ' "${logs[@]}" |
    sed -E 's/ - .*$//' | sort | uniq -c | sort -k3
failed=$(grep -hcE '^(FAILED|ERROR) ' "${logs[@]}" |
    awk '{s += $1} END {print s + 0}')
passed=$(grep -hcE '^PASSED ' "${logs[@]}" |
    awk '{s += $1} END {print s + 0}')
empty=$(grep -LE '^(PASSED|FAILED|ERROR) ' "${logs[@]}" | wc -l)
failed=$((failed + empty))
echo "[stress] $passed passed, $failed failed"
[[ "$failed" -eq 0 && "$passed" -gt 0 ]]
