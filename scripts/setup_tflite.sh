#!/usr/bin/env bash
# Set up the TFLite toolchain (issue 7). Idempotent; run from anywhere. Debian packages via scripts/system_packages.sh.
#
# 1. .venv (the main env, numpy 2, torch 2.13 CPU): the PyTorch -> TFLite converter litert-torch and the LiteRT
#    runtime. litert-torch's declared requirements pull transformers, kagglehub, sentencepiece, a different
#    typing_extensions, ... that the conversion never imports, so its wheel is installed with --no-deps plus the
#    modules it really imports (pinned in pyproject's `tflite-convert` extra).
# 2. .venv-tflite (numpy<2, protobuf<4): packages that cannot live beside numpy 2 / onnx's protobuf:
#    tflite-support (the TFLite Metadata writer; MediaPipe 1.2's writer ships without its native helper),
#    tflite-runtime 2.14 (the `tflite` backend) and MediaPipe Tasks (the ImageClassifier check), plus slidelite
#    itself (no deps) so the runtime can be exercised with tflite-runtime there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
./scripts/system_packages.sh  # libusb-1.0-0: tflite-support's native modules link it
$PY -m pip install -q --no-deps "litert-torch==0.10.0" "litert-converter==0.5.0" "ai-edge-litert==2.3.0" \
  "ai-edge-quantizer==0.10.0" "torchao==0.18.0" "jax==0.10.2" "jaxlib==0.10.2" "opt_einsum==3.4.0" \
  "rich==15.0.0" "absl-py==2.5.1" "immutabledict==4.3.1" "backports.strenum==1.2.8"
VENV=.venv-tflite
BASE=$($PY -c 'import sys; print(sys._base_executable)')
[ -x $VENV/bin/python ] || "$BASE" -m venv $VENV
$VENV/bin/python -m pip install -q --upgrade pip
$VENV/bin/python -m pip install -q "numpy==1.26.4" "tflite-support==0.4.4" "tflite-runtime==2.14.0" \
  "pillow>=9.1" "click>=8.2" "opencv-python-headless==4.10.0.84" "matplotlib==3.9.4"
# MediaPipe 1.2.3 --no-deps: it asks for opencv-contrib-python, whose cv2 would clash with opencv-python-headless;
# what it imports (cv2, matplotlib, absl, flatbuffers, certifi) is installed here
$VENV/bin/python -m pip install -q --no-deps "mediapipe==1.2.3" "certifi"
$VENV/bin/python -m pip install -q --no-deps -e .
