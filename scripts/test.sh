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
# the TFLite toolchain: litert-torch in .venv, and .venv-tflite (numpy<2) for tflite-support's metadata
# writer, tflite-runtime and MediaPipe Tasks (see the script's header)
./scripts/setup_tflite.sh
# the ONNX project's backend node tests (pinned onnx 1.18.0 wheel, sha256-checked) for the numpy backend
$PY scripts/fetch_onnx_node_tests.py
exec $PY -m pytest -n 2 "$@"
