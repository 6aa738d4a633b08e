#!/usr/bin/env bash
# Prove `pip install slidelite` + a backend + `slidelite classify` on aarch64 Linux, from scratch, on an
# x86_64 Debian/Ubuntu host: an arm64 Debian root made with debootstrap, run through qemu-user-static.
#
# Usage (as root, from anywhere):   tests/arm/prove_aarch64.sh [ROOT]
#   ROOT            the arm64 root folder (default /work/arm64root; created when missing, reused after)
#   DEBIAN_MIRROR   default http://deb.debian.org/debian
#   HOST_PYTHON     x86 python with slidelite's dev+onnx extras (default: <repo>/.venv/bin/python)
#
# Steps: host packages -> binfmt_misc registration of qemu-aarch64 -> debootstrap (two stages) -> the
# wheel built from this checkout -> a venv inside the root with PyPI's aarch64 wheels (numpy, pillow,
# click, onnxruntime; ai-edge-litert installed and imported) -> `slidelite classify` on the bundled
# sample photo with the onnxruntime and numpy backends -> top-1 label and scores compared with x86
# onnxruntime (same label, every score within 1e-4). Model: the shipped default model when
# slidelite/models/manifest.json lists one, else the runtime tests' fixture ONNX classifier.
# Slow (pip and python under emulation): not part of CI. tests/arm/README.md records its last output.
set -euo pipefail

ROOT=${1:-/work/arm64root}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_PYTHON=${HOST_PYTHON:-$REPO/.venv/bin/python}
SAMPLE=$REPO/slidelite/samples/chelsea.jpg
WORK=/opt/slidelite-proof            # inside ROOT
TOLERANCE=1e-4

step() { printf '\n== %s\n' "$*"; }
die() { printf 'prove_aarch64: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and binfmt registration need it)"
[ "$(uname -m)" = x86_64 ] || echo "note: host is $(uname -m), not x86_64"

step "host packages"
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null \
   || ! command -v update-binfmts >/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static debootstrap binfmt-support
fi
qemu-aarch64-static --version | head -1

step "binfmt_misc: run aarch64 ELF files through qemu-aarch64-static"
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
  || die "cannot mount binfmt_misc (a container without privileges?): run this on a VM or a privileged container"
update-binfmts --enable qemu-aarch64 || true
grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null \
  || die "qemu-aarch64 is not registered in /proc/sys/fs/binfmt_misc"
grep -E '^(interpreter|flags)' /proc/sys/fs/binfmt_misc/qemu-aarch64

step "arm64 Debian bookworm root in $ROOT"
if [ ! -x "$ROOT/usr/bin/python3" ] || [ ! -e "$ROOT/usr/lib/python3.11/venv/__init__.py" ]; then
  mkdir -p "$ROOT"
  debootstrap --arch=arm64 --foreign --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$ROOT" "$MIRROR"
  cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"
  chroot "$ROOT" /debootstrap/debootstrap --second-stage
else
  echo "reusing the existing root"
fi

cleanup() {
  for m in dev/pts dev proc sys; do mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m"; done; true
}
trap cleanup EXIT
for m in proc sys dev dev/pts; do mountpoint -q "$ROOT/$m" || mount --bind "/$m" "$ROOT/$m"; done
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
in_root uname -m
in_root python3 -c 'import platform, sys; print(platform.machine(), sys.version.split()[0], platform.libc_ver())'

step "wheel built from this checkout"
rm -rf "$ROOT$WORK" && mkdir -p "$ROOT$WORK/dist"
"$HOST_PYTHON" -m pip wheel -q --no-deps "$REPO" -w "$ROOT$WORK/dist"
ls "$ROOT$WORK/dist"
cp "$SAMPLE" "$ROOT$WORK/sample.jpg"

step "model and the x86_64 onnxruntime reference"
DEFAULT=$(cd "$REPO" && "$HOST_PYTHON" -m slidelite models --json \
  | "$HOST_PYTHON" -c 'import json,sys; print(next((m["name"] for m in json.load(sys.stdin)["shipped"] if m.get("default")), ""))')
if [ -n "$DEFAULT" ]; then
  echo "shipped default model: $DEFAULT"
  MODEL_ARGS=()
  HOST_MODEL_ARGS=()
else
  echo "no shipped default model yet: using the runtime tests' fixture ONNX classifier"
  (cd "$REPO" && "$HOST_PYTHON" -c "from tests._runtime_fixtures import make_fixture_onnx; make_fixture_onnx('$ROOT$WORK/model.onnx')")
  MODEL_ARGS=(--model "$WORK/model.onnx")
  HOST_MODEL_ARGS=(--model "$ROOT$WORK/model.onnx")
fi
(cd "$REPO" && "$HOST_PYTHON" -m slidelite classify "${HOST_MODEL_ARGS[@]}" --backend onnxruntime --json --top-k 5 \
  "$ROOT$WORK/sample.jpg") > "$ROOT$WORK/x86_64.onnxruntime.json"
cat "$ROOT$WORK/x86_64.onnxruntime.json"; echo

step "venv + pip install inside the aarch64 root (PyPI's aarch64 wheels only)"
in_root python3 -m venv "$WORK/venv"
in_root "$WORK/venv/bin/pip" install -q --disable-pip-version-check --only-binary=:all: \
  "$(ls "$ROOT$WORK"/dist/slidelite-*.whl | sed "s|^$ROOT||")[onnx,litert]"
in_root "$WORK/venv/bin/pip" list --disable-pip-version-check --format=freeze \
  | grep -iE '^(slidelite|numpy|pillow|click|onnxruntime|ai-edge-litert)=='
in_root "$WORK/venv/bin/python" -c \
  'import ai_edge_litert.interpreter as i, onnxruntime, numpy; print("imports ok: ai_edge_litert", i.__name__, "onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__)'

for backend in onnxruntime numpy; do
  step "aarch64: slidelite classify --backend $backend"
  /usr/bin/time -f "wall %es" chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
    "$WORK/venv/bin/slidelite" classify "${MODEL_ARGS[@]}" --backend "$backend" --json --top-k 5 "$WORK/sample.jpg" \
    > "$ROOT$WORK/aarch64.$backend.json"
  cat "$ROOT$WORK/aarch64.$backend.json"; echo
done

step "compare aarch64 with x86_64 (top-1 label equal, scores within $TOLERANCE)"
"$HOST_PYTHON" - "$ROOT$WORK" "$TOLERANCE" <<'EOF'
import json, sys
from pathlib import Path
work, tolerance = Path(sys.argv[1]), float(sys.argv[2])
def load(name):
    cats = json.loads((work / name).read_text())["categories"]
    return [c["label"] for c in cats], [c["score"] for c in cats]
ref_labels, ref_scores = load("x86_64.onnxruntime.json")
ok = True
for backend in ("onnxruntime", "numpy"):
    labels, scores = load(f"aarch64.{backend}.json")
    diff = max(abs(a - b) for a, b in zip(scores, ref_scores))
    same = labels[0] == ref_labels[0] and labels == ref_labels and diff <= tolerance
    ok &= same
    print(f"aarch64 {backend:11s} top-1 {labels[0]!r} {scores[0]:.6f} | x86_64 onnxruntime top-1 {ref_labels[0]!r} "
          f"{ref_scores[0]:.6f} | max score diff {diff:.2e} -> {'PASS' if same else 'FAIL'}")
sys.exit(0 if ok else 1)
EOF
step "PASS: slidelite installs and classifies on aarch64 ($(date -u +%Y-%m-%dT%H:%MZ))"
