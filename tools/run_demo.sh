#!/usr/bin/env bash
# The main job on the embedded demo data, set-up included:
#   1. sets up the environment (idempotent: seconds once it exists),
#   2. trains PSPNet on the demo_textures data set (real photographic
#      textures; generated on first use) with Fast Newton adversarial
#      training,
#   3. evaluates the robustness curves (mIoU under FGSM and BIM-10 while
#      the radius sweeps 0 to 0.04) and writes robustness.{json,csv,png},
#   4. draws clean vs adversarial predictions (BIM-10 at eps 0.03) for the
#      validation image whose prediction the attack changes most.
#
# Usage: bash tools/run_demo.sh [CONFIG] [WORK_DIR]
#   CONFIG    defaults to configs/demo/pspnet_r18_textures_fnm.py; the
#             demo_shapes data set's configs are configs/demo/pspnet_r18_demo_*.py
#   WORK_DIR  defaults to work_dirs/<config name without pspnet_r18_>
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CONFIG="${1:-configs/demo/pspnet_r18_textures_fnm.py}"
NAME="$(basename "$CONFIG" .py)"
WORK_DIR="${2:-work_dirs/${NAME#pspnet_r18_}}"
VENV="${MMSEG_FNM_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

log() { echo "[run_demo] $*" >&2; }

bash tools/setup_env.sh

log "training $CONFIG into $WORK_DIR"
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
CHECKPOINT="$(cat "$WORK_DIR/last_checkpoint")"

log "robustness sweep of $CHECKPOINT"
"$PY" tools/test.py "$CONFIG" "$CHECKPOINT" --work-dir "$WORK_DIR" \
    --robustness
REPORT_DIR="$(dirname "$(ls -t "$WORK_DIR"/*/robustness.json | head -n 1)")"

log "attack picture: the validation image the attack changes most"
"$PY" tools/visualize_attack.py "$CONFIG" "$CHECKPOINT" \
    --out "$REPORT_DIR/attack_example.png"

log "done. Results:"
log "  curves: $REPORT_DIR/robustness.png (table: robustness.csv/json)"
log "  example: $REPORT_DIR/attack_example.png"
