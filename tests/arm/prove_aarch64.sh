#!/usr/bin/env bash
# Prove `pip install slidelite` + a backend + `slidelite classify` on aarch64 Linux, from scratch, on an
# x86_64 Debian/Ubuntu host: an arm64 Debian root made with debootstrap, run through qemu-user-static.
#
# Usage (as root, from anywhere):   tests/arm/prove_aarch64.sh [ROOT]
#   ROOT            the arm64 root folder (default /work/arm64root; created when missing, reused after)
#   DEBIAN_MIRROR   default http://deb.debian.org/debian
#   HOST_PYTHON     x86 python with slidelite's dev+onnx extras (default: <repo>/.venv/bin/python)
#   EXTRA_ONNX      space-separated extra .onnx models (with slidelite metadata) to classify with too
#
# Steps: host packages -> binfmt_misc registration of qemu-aarch64 -> debootstrap (two stages) -> the
# wheel built from this checkout -> a venv inside the root with PyPI's aarch64 wheels (numpy, pillow,
# click, onnxruntime; ai-edge-litert installed and imported) -> `slidelite classify` on the bundled
# sample photos -> top-5 labels and scores compared with x86_64 (same labels, every score within 1e-4).
# The cases (tests/arm/proof_cases.py): the shipped default model, and every shipped float ONNX model
# with onnxruntime and with numpy, when slidelite/models/manifest.json lists any; else the runtime
# tests' fixture ONNX classifier with onnxruntime and numpy.
# Slow (pip and python under emulation): not part of CI. tests/arm/README.md records its last output.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/arm/_roots.sh
. "$REPO/tests/arm/_roots.sh"
ROOT=${1:-/work/arm64root}
HOST_PYTHON=${HOST_PYTHON:-$REPO/.venv/bin/python}
WORK=/opt/slidelite-proof            # inside ROOT
TOLERANCE=1e-4

need_root_tools
[ "$(uname -m)" = x86_64 ] || echo "note: host is $(uname -m), not x86_64"

step "binfmt_misc: run aarch64 ELF files through qemu-aarch64-static"
enable_binfmt aarch64

step "arm64 Debian bookworm root in $ROOT"
make_root arm64 bookworm "$ROOT" python3,python3-venv,python3-pip,ca-certificates
enter_root "$ROOT"
in_root "$ROOT" uname -m
in_root "$ROOT" python3 -c 'import platform, sys; print(platform.machine(), sys.version.split()[0], platform.libc_ver())'

step "wheel built from this checkout"
rm -rf "$ROOT$WORK" && mkdir -p "$ROOT$WORK/dist"
"$HOST_PYTHON" -m pip wheel -q --no-deps "$REPO" -w "$ROOT$WORK/dist"
ls "$ROOT$WORK/dist"
cp "$REPO"/slidelite/samples/* "$ROOT$WORK/"

step "cases, and the x86_64 reference runs"
read -r -a extra <<< "${EXTRA_ONNX:-}"
(cd "$REPO" && "$HOST_PYTHON" tests/arm/proof_cases.py cases "$ROOT$WORK" "${extra[@]}")
cat "$ROOT$WORK/cases.txt"
classify_args() {  # MODEL PHOTO BACKEND [PREFIX]: the classify arguments, one per line
  local model=$1 photo=$2 backend=$3 prefix=${4:-}
  case $model in "") ;; /*) printf '%s\n' --model "$prefix$model" ;; *) printf '%s\n' --model "$model" ;; esac
  printf '%s\n' --backend "$backend" --json --top-k 5 "$prefix$WORK/$photo"
}
n=0
while IFS='|' read -r model photo backend reference; do
  n=$((n + 1))
  mapfile -t args < <(classify_args "$model" "$photo" "$reference" "$ROOT")
  printf 'case %s, x86_64 %s: ' "$n" "$reference"
  (cd "$REPO" && "$HOST_PYTHON" tests/arm/proof_cases.py record "$ROOT$WORK/case$n.x86_64.$reference.json" \
    "$HOST_PYTHON" -m slidelite classify "${args[@]}")
done < "$ROOT$WORK/cases.txt"

step "venv + pip install inside the aarch64 root (PyPI's aarch64 wheels only)"
# Debian's pip drives the venv (--python): no emulated ensurepip, no emulated byte-compiling.
in_root "$ROOT" python3 -m venv --without-pip "$WORK/venv"
venv_pip() { in_root "$ROOT" python3 -m pip --python "$WORK/venv/bin/python" --disable-pip-version-check "$@"; }
venv_pip install -q --no-compile --only-binary=:all: "$(ls "$ROOT$WORK"/dist/slidelite-*.whl | sed "s|^$ROOT||")[onnx,litert]"
venv_pip list --format=freeze | grep -iE '^(slidelite|numpy|pillow|click|onnxruntime|ai-edge-litert)=='
in_root "$ROOT" "$WORK/venv/bin/python" -c \
  'import ai_edge_litert.interpreter as i, onnxruntime, numpy; print("imports ok: ai_edge_litert", i.__name__, "onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__)'

n=0
while IFS='|' read -r model photo backend reference; do
  n=$((n + 1))
  step "aarch64 case $n: slidelite classify ${model:+--model $model }--backend $backend $photo"
  mapfile -t args < <(classify_args "$model" "$photo" "$backend")
  "$HOST_PYTHON" "$REPO/tests/arm/proof_cases.py" record "$ROOT$WORK/case$n.aarch64.json" \
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 "$WORK/venv/bin/slidelite" classify "${args[@]}"
done < "$ROOT$WORK/cases.txt"

step "compare aarch64 with x86_64 (same top-5 labels, scores within $TOLERANCE)"
"$HOST_PYTHON" "$REPO/tests/arm/proof_cases.py" compare "$ROOT$WORK" "$TOLERANCE" aarch64
step "PASS: slidelite installs and classifies on aarch64 ($(date -u +%Y-%m-%dT%H:%MZ))"
