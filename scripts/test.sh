#!/usr/bin/env bash
# Set-up command (2): install everything the tests need into .venv, then run the whole test suite.
# Usage: ./scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages first (root: apt-get; else sudo; else stop here with the one command to run)
./scripts/system_packages.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python
$PY -m pip install -q --upgrade pip
$PY -m pip install -q -e ".[dev,convert,onnx,litert,camera,plot]"
# real third-party model code for the converter tests (tests/_torch_classifiers.py). --no-deps: their declared torch
# would pull a CUDA build; torchvision's compiled ops are never loaded (its model files are imported as they are)
$PY -m pip install -q --no-deps "torchvision==0.28.0" "timm==1.0.31"
# the TFLite toolchain: litert-torch in .venv, and .venv-tflite (numpy<2) for tflite-support's metadata
# writer, tflite-runtime and MediaPipe Tasks (see the script's header)
./scripts/setup_tflite.sh
# the ONNX project's backend node tests (pinned onnx 1.18.0 wheel, sha256-checked) for the numpy backend
$PY scripts/fetch_onnx_node_tests.py
exec $PY -m pytest -n 2 "$@"
