#!/usr/bin/env bash
# Build the models shipped in the wheel (slidelite/models/) with slidelite's own converter, measure each file
# with the runtime, and record sha256 / size / precision / measured accuracy in slidelite/models/manifest.json.
#
#   scripts/build_shipped_models.sh default   # EfficientNet-Lite0 (ImageNet, a CNN) -> efficientnet_lite0.*
#   scripts/build_shipped_models.sh fmnist    # slide_swin_micro trained on Fashion-MNIST -> slide_swin_micro_fmnist*
#
# Every converter command is printed (prefixed "+") before it runs: that output is the record quoted in the
# model cards (docs/models/). Heavy work runs under `nice`. Environment overrides (for trial runs):
#   OUT=DIR               write the files and a manifest there instead of slidelite/models/
#   FMNIST_CHECKPOINT=P   convert this checkpoint instead of model_zoo/weights/slide_swin_micro_fmnist.pth
#                         (then its .sha256 file is not required)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CONVERT=(nice -n 10 .venv/bin/slidelite convert --quiet --overwrite)
OUT=${OUT:-slidelite/models}
WORK=build/shipped
mkdir -p "$OUT" "$WORK"

run() { echo "+ $*" >&2; "$@"; }

default_model() {
  # Calibration: 6 random crops of each of scikit-image's 19 real photos (seed 0). Evaluation: the full
  # photos + 12 other crops each (seed 1), never used for calibration.
  run $PY scripts/build_shipped_models.py photos $WORK/photos_calib --seed 0 --crops 6
  run $PY scripts/build_shipped_models.py photos $WORK/photos_eval --seed 1 --crops 12 --full
  echo "default: not built yet (see docs/models/efficientnet_lite0.md)" >&2
  exit 1
}

fmnist_model() {
  local ckpt=${FMNIST_CHECKPOINT:-model_zoo/weights/slide_swin_micro_fmnist.pth}
  if [ -z "${FMNIST_CHECKPOINT:-}" ]; then
    # the training recipe wrote "<sha256>  <file>" next to the weights
    (cd "$(dirname "$ckpt")" && run sha256sum -c "$(basename "$ckpt").sha256")
  fi
  # calibration: 20 TRAIN images per class (never the test split)
  run $PY scripts/build_shipped_models.py fmnist-train $WORK/fmnist_calib --per-class 20
  local common=(--model slide_swin_micro --checkpoint "$ckpt" --labels model_zoo/labels/fashion-mnist.txt
                --calib $WORK/fmnist_calib --max-calib-images 200)
  local stem=$OUT/slide_swin_micro_fmnist
  run "${CONVERT[@]}" "${common[@]}" --name slide_swin_micro_fmnist -o $stem.onnx
  run "${CONVERT[@]}" "${common[@]}" --name slide_swin_micro_fmnist_int8 --int8 --int8-recipe dynamic-matmul \
      -o $stem.int8.onnx
  local files=($stem.onnx $stem.int8.onnx)
  # accuracy on the full 10k test split, through the runtime (slidelite.Classifier), per file
  run nice -n 10 $PY benchmarks/fmnist_accuracy.py "${files[@]}" --json $WORK/fmnist_accuracy.json
  local description="Slide-Transformer (slide_swin_micro, Slide attention in stages 1-2, re-parameterized) \
trained here on Fashion-MNIST (28x28 greyscale, 10 classes); see docs/models/slide_swin_micro_fmnist.md"
  for file in "${files[@]}"; do
    local name=slide_swin_micro_fmnist
    case $file in *.int8.*) name=slide_swin_micro_fmnist_int8 ;; esac
    run $PY scripts/build_shipped_models.py manifest "$file" --name $name --description "$description" \
        --measured $WORK/fmnist_accuracy.json
  done
}

case "${1:-}" in
  default) default_model ;;
  fmnist) fmnist_model ;;
  *) echo "usage: $0 default|fmnist" >&2; exit 2 ;;
esac
