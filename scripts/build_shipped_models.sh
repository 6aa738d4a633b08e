#!/usr/bin/env bash
# Build the models shipped in the wheel (slidelite/models/) with slidelite's own converter, measure each file
# with the runtime, and record sha256 / size / precision / measured accuracy in slidelite/models/manifest.json.
#
#   scripts/build_shipped_models.sh default   # EfficientNet-Lite0 (ImageNet, a CNN) -> efficientnet_lite0.{onnx,tflite}
#   scripts/build_shipped_models.sh fmnist    # slide_swin_micro trained on Fashion-MNIST -> slide_swin_micro_fmnist*
#
# Every converter command is printed (prefixed "+") before it runs: that output is the record quoted in the
# model cards (docs/models/). Heavy work runs under `nice`. Environment overrides (for trial runs):
#   OUT=DIR               write the files and a manifest there instead of slidelite/models/
#   REPO_ONLY=DIR         where the committed-but-not-in-the-wheel files go (default model_zoo/weights/converted)
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
  # photos + 12 other crops of each (seed 1), never used for calibration.
  run $PY scripts/build_shipped_models.py photos $WORK/photos_calib --seed 0 --crops 6
  run $PY scripts/build_shipped_models.py photos $WORK/photos_eval --seed 1 --crops 12 --full
  local w=$WORK/efficientnet_lite0 model=(--model efficientnet_lite0_imagenet --name efficientnet_lite0)
  local calib=(--calib $WORK/photos_calib --max-calib-images 114)
  # fp32 through the generic path, gated against torch on the 247 evaluation images: the reference
  run "${CONVERT[@]}" "${model[@]}" --calib $WORK/photos_eval --max-calib-images 247 -o $w.fp32.onnx
  run "${CONVERT[@]}" "${model[@]}" --format tflite --calib $WORK/photos_eval --max-calib-images 64 -o $w.fp32.tflite
  # the shipped files: int8 weight storage, fp32 compute (GPTQ-rounded on the calibration crops)
  run "${CONVERT[@]}" "${model[@]}" --int8 --int8-recipe weight-only "${calib[@]}" -o $OUT/efficientnet_lite0.onnx
  run "${CONVERT[@]}" "${model[@]}" --format tflite --int8 --int8-recipe weight-only "${calib[@]}" \
      -o $OUT/efficientnet_lite0.tflite
  # the candidates that do not ship (--force: written even when the agreement gate fails, to be measured)
  run "${CONVERT[@]}" "${model[@]}" --int8 --int8-recipe static-qdq-all "${calib[@]}" --force -o $w.int8.onnx
  run "${CONVERT[@]}" "${model[@]}" --format tflite --int8 --int8-recipe full-int8 "${calib[@]}" --force \
      -o $w.int8.tflite
  run $PY scripts/build_shipped_models.py fp16-weights $w.fp32.onnx $w.fp16w.onnx
  # top-1 agreement with fp32 on the evaluation photos (a shipped file must keep >= 99 %)
  run nice -n 10 $PY benchmarks/shipped_agreement.py $w.fp32.onnx $OUT/efficientnet_lite0.onnx \
      $OUT/efficientnet_lite0.onnx@numpy $OUT/efficientnet_lite0.tflite $w.fp16w.onnx $w.int8.onnx $w.fp32.tflite \
      $w.int8.tflite --images $WORK/photos_eval --json $WORK/default_agreement.json
  local description="EfficientNet-Lite0 (a CNN, not a Slide-Transformer: no Slide ImageNet weights exist), \
ImageNet-1k, int8-stored weights (GPTQ-rounded), fp32 compute; any Slide checkpoint you own converts with slidelite convert"
  for file in $OUT/efficientnet_lite0.onnx $OUT/efficientnet_lite0.tflite; do
    run $PY scripts/build_shipped_models.py manifest "$file" --name efficientnet_lite0 --default \
        --description "$description" --agreement $WORK/default_agreement.json --license Apache-2.0
  done
  # latency side by side per engine (after the manifest: slidelite bench verifies shipped files' sha256)
  run nice -n 10 .venv/bin/slidelite bench --compare --threads 1 --warmup 5 --runs 50 $w.fp32.onnx@onnxruntime \
      $OUT/efficientnet_lite0.onnx@onnxruntime $w.fp16w.onnx@onnxruntime $w.int8.onnx@onnxruntime
  run nice -n 10 .venv/bin/slidelite bench --compare --threads 1 --warmup 5 --runs 50 $w.fp32.tflite@litert \
      $OUT/efficientnet_lite0.tflite@litert $w.int8.tflite@litert
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
  # the int8 ONNX is committed and measured but kept out of the wheel (15 MB limit): it goes to REPO_ONLY,
  # which has its own manifest.json (same schema; SLIDELITE_MODELS_DIR=$REPO_ONLY makes it a shipped name)
  local repo_only=${REPO_ONLY:-model_zoo/weights/converted}
  mkdir -p "$repo_only"
  run "${CONVERT[@]}" "${common[@]}" --name slide_swin_micro_fmnist -o $stem.onnx
  # int8 recipe chosen by measurement (docs/models/slide_swin_micro_fmnist.md): static QDQ of the weight
  # MatMuls keeps top-1 and runs at fp32 speed; dynamic-matmul was ~25x slower on this tiny model
  run "${CONVERT[@]}" "${common[@]}" --name slide_swin_micro_fmnist_int8 --int8 --int8-recipe static-qdq-matmul \
      -o $repo_only/slide_swin_micro_fmnist.int8.onnx
  run "${CONVERT[@]}" "${common[@]}" --name slide_swin_micro_fmnist --format tflite -o $stem.tflite
  # TFLite int8: dynamic-int8 (the converter's default). full-int8 fails the converter's 0.99 agreement gate
  # on this model in the TFLite layout (0.985, cosine 0.76; docs/models/slide_swin_micro_fmnist.md)
  run "${CONVERT[@]}" "${common[@]}" --name slide_swin_micro_fmnist_int8 --format tflite --int8 \
      --int8-recipe dynamic-int8 -o $stem.int8.tflite
  local files=($stem.onnx $repo_only/slide_swin_micro_fmnist.int8.onnx $stem.tflite $stem.int8.tflite)
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
  # latency side by side per engine (after the manifest: slidelite bench verifies shipped files' sha256)
  run nice -n 10 .venv/bin/slidelite bench --compare --threads 1 --warmup 20 --runs 300 $stem.onnx@onnxruntime \
      $repo_only/slide_swin_micro_fmnist.int8.onnx@onnxruntime $stem.onnx@numpy
  run nice -n 10 .venv/bin/slidelite bench --compare --threads 1 --warmup 20 --runs 300 $stem.tflite@litert \
      $stem.int8.tflite@litert
}

case "${1:-}" in
  default) default_model ;;
  fmnist) fmnist_model ;;
  *) echo "usage: $0 default|fmnist" >&2; exit 2 ;;
esac
