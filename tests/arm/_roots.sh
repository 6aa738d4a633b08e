# Shared by the ARM proofs (sourced, not run): a Debian root of a foreign architecture, made with debootstrap
# and run through qemu-user-static via binfmt_misc, on an x86_64 Debian/Ubuntu host, as root.
#
#   need_root_tools                  install qemu-user-static, debootstrap, binfmt-support when missing
#   enable_binfmt QEMU_ARCH          register qemu-QEMU_ARCH (arm, aarch64) in binfmt_misc
#   make_root DEB_ARCH SUITE ROOT PACKAGES
#                                    debootstrap ROOT (both stages) unless it is a finished root; a root whose
#                                    second stage stopped half-way resumes it
#   enter_root ROOT                  bind /sys /dev /dev/pts (no /proc: see tests/arm/README.md), copy the
#                                    host's resolv.conf and CA bundle; unmounted when the script exits
#   in_root ROOT CMD...              run CMD inside ROOT with a clean environment
# DEBIAN_MIRROR (default http://deb.debian.org/debian) picks the mirror.

die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }

need_root_tools() {
  [ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and binfmt registration need it)"
  if ! command -v qemu-aarch64-static >/dev/null || ! command -v qemu-arm-static >/dev/null \
     || ! command -v debootstrap >/dev/null || ! command -v update-binfmts >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static debootstrap binfmt-support
  fi
  qemu-aarch64-static --version | head -1
}

enable_binfmt() {
  local qemu=$1
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "cannot mount binfmt_misc (a container without privileges?): run this on a VM or a privileged container"
  update-binfmts --enable "qemu-$qemu" || true
  grep -q enabled "/proc/sys/fs/binfmt_misc/qemu-$qemu" 2>/dev/null \
    || die "qemu-$qemu is not registered in /proc/sys/fs/binfmt_misc"
  # flags F: the interpreter is opened at registration, so it also runs inside the chroot
  grep -E '^(interpreter|flags)' "/proc/sys/fs/binfmt_misc/qemu-$qemu"
}

make_root() {
  local arch=$1 suite=$2 root=$3 packages=$4
  local qemu; qemu=$(case $arch in armhf|armel) echo arm ;; arm64) echo aarch64 ;; *) die "unknown arch $arch" ;; esac)
  # the second stage deletes ROOT/debootstrap when it succeeds
  if [ -e "$root/.slidelite-root-complete" ] || { [ -x "$root/usr/bin/python3" ] && [ ! -e "$root/debootstrap" ]; }; then
    touch "$root/.slidelite-root-complete"
    echo "reusing the existing $suite $arch root $root"; return
  fi
  if [ -x "$root/debootstrap/debootstrap" ]; then
    echo "resuming the second stage in $root"
  elif [ -n "$(ls -A "$root" 2>/dev/null)" ]; then
    die "$root is neither a finished root nor a resumable one: remove it and run again"
  else
    mkdir -p "$root"
    debootstrap --arch="$arch" --foreign --variant=minbase --include="$packages" "$suite" "$root" \
      "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  fi
  cp "/usr/bin/qemu-$qemu-static" "$root/usr/bin/"
  chroot "$root" /debootstrap/debootstrap --second-stage \
    || die "the second stage failed in $root (see $root/debootstrap/debootstrap.log); remove $root and run again"
  touch "$root/.slidelite-root-complete"
}

_mounted_roots=()
_unmount_roots() {
  local root m
  for root in "${_mounted_roots[@]}"; do
    for m in dev/pts dev sys; do mountpoint -q "$root/$m" && umount -l "$root/$m"; done
  done
  true
}
trap _unmount_roots EXIT

enter_root() {
  local root=$1 m
  # No /proc on purpose: qemu-user 7.2 shows the emulated program the x86 host's /proc/cpuinfo, and
  # onnxruntime's CPU detection (pytorch/cpuinfo) segfaults parsing it. A real ARM board has its own.
  for m in sys dev dev/pts; do mountpoint -q "$root/$m" || mount --bind "/$m" "$root/$m"; done
  _mounted_roots+=("$root")
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  # pip inside the root trusts what the host trusts (including a TLS-inspecting proxy's CA, if there is one)
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/host-ca-certificates.crt"
}

in_root() {
  local root=$1; shift
  chroot "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/host-ca-certificates.crt "$@"
}
