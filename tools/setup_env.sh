#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment with the OpenMMLab stack.
#
# Idempotent: a second run only checks the environment and returns within seconds.
# Fails loudly: the "ready" stamp is written last, so a failed run never leaves an
# environment that looks healthy.  An existing torch (e.g. a CUDA build) and an
# existing mmcv with compiled ops are kept as they are.
#
# Usage: bash tools/setup_env.sh            (venv in ./.venv)
#        MMSEG_FNM_VENV=/path bash tools/setup_env.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMSEG_FNM_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3.11}"
STAMP="$VENV/.mmseg_fnm_ready"
# Everything that decides what gets installed; a change invalidates the stamp.
FINGERPRINT="$(cat "$ROOT/tools/setup_env.sh" "$ROOT/setup.cfg" "$ROOT/requirements"/*.txt 2>/dev/null | sha256sum | cut -d' ' -f1)"

log() { echo "[setup_env] $*" >&2; }

check_env() {
    "$VENV/bin/python" - <<'PY'
import mmcv, mmengine, mmseg, mmpretrain, torch  # noqa: F401
from mmcv.ops import nms  # noqa: F401  (needs the compiled ops)
import mmseg.models  # noqa: F401
import mmseg_fnm  # noqa: F401
assert mmcv.__version__ == '2.1.0', mmcv.__version__
PY
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$FINGERPRINT" ]] && check_env 2>/dev/null; then
    log "environment in $VENV is ready"
    exit 0
fi
rm -f "$STAMP"

if [[ ! -x "$VENV/bin/python" ]]; then
    command -v "$PYTHON_BIN" >/dev/null || { log "ERROR: $PYTHON_BIN not found; set PYTHON=/path/to/python3.11"; exit 1; }
    log "creating virtual environment in $VENV"
    "$PYTHON_BIN" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check)

# mmengine 0.10.7 imports pkg_resources (removed in setuptools 81).
"${PIP[@]}" --upgrade "pip" "setuptools<81" wheel ninja psutil packaging

if "$PY" -c 'import torch' 2>/dev/null; then
    log "keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
    # Pinned exactly: an open range pulls a multi-GB CUDA build on CPU machines.
    "${PIP[@]}" "torch==2.13.0"
fi

if "$PY" -c 'import mmcv, mmcv.ops; from mmcv.ops import nms; assert mmcv.__version__ == "2.1.0"' 2>/dev/null; then
    log "keeping installed mmcv with compiled ops"
else
    log "building mmcv 2.1.0 with compiled ops from source (about 12 minutes on 2 cores; cached afterwards)"
    "$PY" -m pip uninstall -y mmcv mmcv-lite >/dev/null 2>&1 || true
    # Without --no-build-isolation pip builds against a fresh torch and silently drops the ops.
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" --no-build-isolation "mmcv==2.1.0"
fi

"${PIP[@]}" -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt"
"${PIP[@]}" --no-build-isolation --no-deps -e "$ROOT"

check_env
echo "$FINGERPRINT" > "$STAMP"
log "environment in $VENV is ready"
