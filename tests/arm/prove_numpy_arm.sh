#!/usr/bin/env bash
# Prove the C-free runtime on 32-bit and 64-bit ARM: slidelite with numpy and pillow from Debian's packages,
# no onnxruntime, no LiteRT, no tflite-runtime (what 32-bit Raspberry Pi OS on Debian 13 / Python 3.13
# can have), classifies the bundled photos with every shipped model, .onnx and .tflite, and agrees with
# x86_64 (same top-5 labels, every score within 1e-4; against LiteRT, files with hybrid int8 ops within 5e-3:
# see proof_cases.HYBRID_SCORE_TOLERANCE) - on an x86_64 Debian/Ubuntu host, through qemu-user.
#
# Usage (as root, from anywhere):   tests/arm/prove_numpy_arm.sh [ARCH ...]      (default: armhf arm64)
#   ARCH          armhf (armv7l, like 32-bit Raspberry Pi OS) or arm64 (aarch64)
#   ROOTS         where the Debian trixie roots live (default /work/cache/arm-roots: ROOTS/trixie-ARCH, made
#                 when missing, reused after, a half-made one resumed); the x86_64 side's files go to
#                 ROOTS/numpy-proof
#   HOST_PYTHON   x86 python with slidelite's dev extras, onnxruntime and ai-edge-litert
#                 (default: <repo>/.venv/bin/python)
#   DEBIAN_MIRROR default http://deb.debian.org/debian
#
# Steps: host packages -> the wheel of this checkout -> the cases and the x86_64 references (numpy backend,
# and onnxruntime / LiteRT; tests/arm/proof_cases.py) -> per ARCH: binfmt_misc, a Debian 13 root with
# python3 python3-numpy python3-pil python3-click (debootstrap), a venv with --system-site-packages and the
# wheel installed with pip (--only-binary=:all:): Debian's numpy and pillow satisfy slidelite's requirements,
# so pip fetches only what Debian's packages cannot give (trixie's python3-click is 8.1.8, slidelite needs
# click >= 8.2: its pure-Python wheel comes from PyPI) -> `slidelite info` (which backend auto picks and
# why) -> `slidelite classify --json --top-k 5` per case with --backend auto -> the comparison.
# Slow (Python and numpy under emulation): not part of CI. docs/install.md records its last output.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/arm/_roots.sh
. "$REPO/tests/arm/_roots.sh"
[ $# -gt 0 ] || set -- armhf arm64
ROOTS=${ROOTS:-/work/cache/arm-roots}
HOST_PYTHON=${HOST_PYTHON:-$REPO/.venv/bin/python}
SUITE=trixie
PACKAGES=python3,python3-venv,python3-pip,python3-numpy,python3-pil,python3-click,ca-certificates
WORK=/opt/slidelite-proof            # inside each root
HOST=$ROOTS/numpy-proof              # the x86_64 side: wheel, photos, cases, references
TOLERANCE=1e-4

need_root_tools
[ "$(uname -m)" = x86_64 ] || echo "note: host is $(uname -m), not x86_64"

step "wheel built from this checkout (git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'))"
rm -rf "$HOST" && mkdir -p "$HOST/dist"
"$HOST_PYTHON" -m pip wheel -q --no-deps "$REPO" -w "$HOST/dist" 2> "$HOST/wheel-build.log" \
  || { cat "$HOST/wheel-build.log"; die "building the wheel failed"; }
ls -l "$HOST/dist"
cp "$REPO"/slidelite/samples/* "$HOST/"

classify_args() {  # MODEL PHOTO BACKEND FOLDER: slidelite classify's arguments, one per line
  [ -z "$1" ] || printf '%s\n' --model "$1"
  printf '%s\n' --backend "$3" --json --top-k 5 "$4/$2"
}

step "cases, and the x86_64 references (numpy backend and the engine, on this host)"
(cd "$REPO" && "$HOST_PYTHON" tests/arm/proof_cases.py numpy-cases "$HOST")
cat "$HOST/cases.txt"
n=0
while IFS='|' read -r model photo _ references; do
  n=$((n + 1))
  for reference in ${references//,/ }; do
    mapfile -t args < <(classify_args "$model" "$photo" "$reference" "$HOST")
    printf 'case %s, x86_64 %s: ' "$n" "$reference"
    (cd "$REPO" && "$HOST_PYTHON" tests/arm/proof_cases.py record "$HOST/case$n.x86_64.$reference.json" \
      "$HOST_PYTHON" -m slidelite classify "${args[@]}")
  done
done < "$HOST/cases.txt"

failed=()
for arch in "$@"; do
  case $arch in armhf) qemu=arm ;; arm64) qemu=aarch64 ;; *) die "unknown ARCH '$arch': armhf or arm64" ;; esac
  root=$ROOTS/$SUITE-$arch
  step "$arch: binfmt_misc runs $arch ELF files through qemu-$qemu-static"
  enable_binfmt "$qemu"
  step "$arch: Debian $SUITE root in $root"
  make_root "$arch" "$SUITE" "$root" "$PACKAGES"
  enter_root "$root"
  in_root "$root" python3 -c 'import platform, sys; print("uname -m:", platform.machine(), "| Python", sys.version.split()[0], "|", *platform.libc_ver())'
  in_root "$root" dpkg-query -W -f '${Package} ${Version} (${Architecture})\n' python3-numpy python3-pil python3-click

  step "$arch: venv over Debian's numpy/pillow/click, then pip install the wheel"
  rm -rf "${root:?}$WORK" && mkdir -p "$root$WORK"
  cp -r "$HOST/dist" "$HOST"/*.jpg "$HOST"/*.png "$root$WORK/"
  in_root "$root" python3 -m venv --system-site-packages --without-pip "$WORK/venv"
  in_root "$root" "$WORK/venv/bin/python" -m pip --disable-pip-version-check install --no-compile \
    --only-binary=:all: "$(ls "$root$WORK"/dist/slidelite-*.whl | sed "s|^$root||")" | grep -E '^(Requirement|Collecting|Successfully)' || true
  in_root "$root" "$WORK/venv/bin/python" -c '
import importlib.metadata as md, importlib.util as iu
for name, module in (("slidelite", "slidelite"), ("numpy", "numpy"), ("pillow", "PIL"), ("click", "click")):
    print(f"{name} {md.version(name)} from {iu.find_spec(module).origin}")
print("engines importable:", [m for m in ("onnxruntime", "ai_edge_litert", "tflite_runtime") if iu.find_spec(m)] or "none")'

  for model in efficientnet_lite0.onnx efficientnet_lite0.tflite; do
    step "$arch: slidelite info $model (which backend auto picks and why; which backends can run it)"
    in_root "$root" "$WORK/venv/bin/slidelite" info "$model" 2>&1 \
      | { grep -v -E '^(labels|provenance|metrics|preprocess|name|input spec|output spec):' || true; }
  done

  step "$arch: slidelite classify --backend auto, one process per case"
  n=0
  while IFS='|' read -r model photo backend _; do
    n=$((n + 1))
    mapfile -t args < <(classify_args "$model" "$photo" "$backend" "$WORK")
    printf '%s case %s: slidelite classify %s\n  ' "$arch" "$n" "${args[*]}"
    "$HOST_PYTHON" "$REPO/tests/arm/proof_cases.py" record "$HOST/case$n.$arch.json" \
      chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 "$WORK/venv/bin/slidelite" classify "${args[@]}"
  done < "$HOST/cases.txt"

  step "$arch: compare with x86_64 (same top-5 labels, scores within $TOLERANCE)"
  "$HOST_PYTHON" "$REPO/tests/arm/proof_cases.py" compare "$HOST" "$TOLERANCE" "$arch" || failed+=("$arch")
done

if [ ${#failed[@]} -eq 0 ]; then
  step "PASS: slidelite classifies on $* with numpy only ($(date -u +%Y-%m-%dT%H:%MZ))"
else
  step "FAIL on ${failed[*]}: see the FAIL lines above ($(date -u +%Y-%m-%dT%H:%MZ))"
  exit 1
fi
