#!/usr/bin/env bash
# GPU check (under 5 minutes): bf16 training steps of Med-SA on ViT-H SAM vs full fine-tuning; step time, peak memory.
#   bash benchmarks/gpu_check.sh                       # on a CUDA machine
#   bash benchmarks/gpu_check.sh --device cpu --tiny   # CPU smoke test
# Needs torch in the current python. If `import peft_medsa` fails, the repo is pip-installed (editable) into that
# python; if that is impossible (no network), src/ is put on PYTHONPATH and the dependencies must already exist.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
"$PY" -c "import torch" || { echo "gpu_check: torch is required in $PY" >&2; exit 1; }
if ! "$PY" -c "import peft_medsa" 2>/dev/null; then
    echo "gpu_check: peft_medsa not importable; pip install -e . into $PY" >&2
    if ! "$PY" -m pip install --quiet -e .; then
        echo "gpu_check: pip install failed; using PYTHONPATH=src" >&2
        export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
exec timeout 290 "$PY" benchmarks/gpu_check.py "$@"
