#!/usr/bin/env bash
# Set-up command (2): install everything the tests need into .venv, then run the whole test suite.
# Usage: ./scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # Debian packages the tests use: Fashion-MNIST (trained model's accuracy test)
  apt-get install -y -q dataset-fashion-mnist >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python
$PY -m pip install -q --upgrade pip
$PY -m pip install -q -e ".[dev,convert,onnx,litert,camera,plot]"
# the TFLite toolchain: litert-torch in .venv, and .venv-tflite (numpy<2) for tflite-support's metadata
# writer, tflite-runtime and MediaPipe Tasks (see the script's header)
./scripts/setup_tflite.sh
exec $PY -m pytest -n 2 "$@"
