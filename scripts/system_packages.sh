#!/usr/bin/env bash
# Install the Debian packages the tests need, before anything else runs.
# As root: apt-get. Otherwise: sudo apt-get when sudo is there; else stop with the one command to run.
# Usage: scripts/system_packages.sh   (idempotent; prints nothing when everything is installed)
set -euo pipefail
# dataset-fashion-mnist: the trained model's accuracy test; libusb-1.0-0: tflite-support's native modules;
# chromium: the browser the `slidelite web` tests drive with Playwright
PACKAGES=(dataset-fashion-mnist libusb-1.0-0 chromium)
command -v dpkg-query >/dev/null 2>&1 || { echo "warning: not a Debian system; install the equivalents of: ${PACKAGES[*]}" >&2; exit 0; }
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "error: the tests need Debian packages that are not installed: ${missing[*]}" >&2
  echo "run this once, then again: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
"${SUDO[@]}" apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
  "${SUDO[@]}" apt-get update -q >/dev/null
  "${SUDO[@]}" apt-get install -y -q "${missing[@]}" >/dev/null
}
