#!/usr/bin/env bash
# The main job on the embedded demo data, set-up included:
#   1. sets up the environment (idempotent: seconds once it exists),
#   2. trains PSPNet on the demo_shapes data set with Fast Newton
#      adversarial training (the data set is generated on first use),
#   3. evaluates the robustness curves (mIoU under FGSM and BIM-10 while
#      the radius sweeps 0 to 0.04) and writes robustness.{json,csv,png},
#   4. draws clean vs adversarial predictions for one validation image.
#
# Usage: bash tools/run_demo.sh [CONFIG] [WORK_DIR]
#   CONFIG    defaults to configs/demo/pspnet_r18_demo_fnm.py
#   WORK_DIR  defaults to work_dirs/demo_<config name>
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CONFIG="${1:-configs/demo/pspnet_r18_demo_fnm.py}"
NAME="$(basename "$CONFIG" .py)"
WORK_DIR="${2:-work_dirs/demo_${NAME#pspnet_r18_demo_}}"
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

IMAGE="$(ls data/demo_shapes/img_dir/val/*.png | head -n 1)"
LABEL="${IMAGE/img_dir/ann_dir}"
"$PY" tools/visualize_attack.py "$CONFIG" "$CHECKPOINT" "$IMAGE" \
    --label "$LABEL" --out "$REPORT_DIR/attack_example.png"

log "done. Results:"
log "  curves: $REPORT_DIR/robustness.png (table: robustness.csv/json)"
log "  example: $REPORT_DIR/attack_example.png"
