#!/usr/bin/env bash
# An aarch64 Debian bookworm Python 3.11 (what 64-bit Raspberry Pi OS ships) that runs on this x86_64
# machine under qemu user-mode emulation, plus an empty venv made by it.
#
# No binfmt_misc, no chroot, nothing installed system-wide: qemu-user-static and debootstrap are
# unpacked from their .debs into the cache (so no postinst registers binfmt handlers), debootstrap
# runs its first stage only (download + unpack, which needs no aarch64 execution), and the venv's
# interpreter is a host-side shell launcher that starts qemu on the rootfs' python3.11. Because the
# launcher is sys.executable, a child `python -m …` re-enters qemu and inherits QEMU_CPU.
#
# Usage: tests/arm/build-rootfs.sh [CACHE_DIR]   (default cache/arm; every step is skipped when done)
# Env:   ARM_MIRROR (Debian mirror for the arm64 packages; debootstrap's default when unset)
set -euo pipefail

CACHE=$(mkdir -p "${1:-cache/arm}" && cd "${1:-cache/arm}" && pwd)
TOOLS=$CACHE/tools
ROOTFS=$CACHE/rootfs
VENV=$CACHE/venv
QEMU=$TOOLS/usr/bin/qemu-aarch64-static

say() { printf 'arm-check: %s\n' "$*" >&2; }
die() { printf 'arm-check: error: %s\n' "$*" >&2; exit 1; }
offline() { printf 'arm-check: error: %s\n' "$*" >&2; exit 3; }  # 3: could not download (check.py may skip)

# 1. qemu-user-static and debootstrap, unpacked (not installed) from Debian's .debs.
if [ ! -x "$QEMU" ] || [ ! -x "$TOOLS/usr/sbin/debootstrap" ]; then
  say "fetching qemu-user-static and debootstrap .debs (unpacked into $TOOLS, not installed)"
  debs=$CACHE/debs
  rm -rf "$debs" "$TOOLS.tmp" && mkdir -p "$debs" "$TOOLS.tmp"
  if ! (cd "$debs" && apt-get download -q qemu-user-static debootstrap >/dev/null 2>&1); then
    [ "$(id -u)" = 0 ] || die "apt-get download qemu-user-static debootstrap failed; run 'sudo apt-get update' and retry"
    apt-get update -qq >/dev/null 2>&1 || true
    (cd "$debs" && apt-get download -q qemu-user-static debootstrap >/dev/null) \
      || offline "cannot download qemu-user-static/debootstrap from the Debian archive (offline?)"
  fi
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$TOOLS.tmp"; done
  find "$TOOLS.tmp/usr/bin" -name 'qemu-*' ! -name qemu-aarch64-static -delete  # the other 30 emulators: 350 MB
  rm -rf "$TOOLS" && mv "$TOOLS.tmp" "$TOOLS" && rm -rf "$debs"
fi
"$QEMU" --version | head -n1 >&2

# 2. The rootfs: debootstrap's first stage, then every downloaded package unpacked by hand (the
#    second stage would need to run aarch64 maintainer scripts in a chroot).
if [ ! -f "$ROOTFS/.complete" ]; then
  say "debootstrap --foreign bookworm arm64 (minbase + python3.11-venv) into $ROOTFS"
  partial=$ROOTFS.tmp
  rm -rf "$partial"
  DEBOOTSTRAP_DIR=$TOOLS/usr/share/debootstrap "$TOOLS/usr/sbin/debootstrap" \
    --foreign --arch=arm64 --variant=minbase --include=python3.11-venv \
    bookworm "$partial" ${ARM_MIRROR:-} >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$CACHE/debootstrap.log" >&2; offline "debootstrap failed (log: $CACHE/debootstrap.log); offline, or set ARM_MIRROR"; }
  for pkg in $(cat "$partial/debootstrap/base"); do
    for deb in "$partial"/var/cache/apt/archives/"${pkg}"_*.deb; do
      dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$partial" --keep-directory-symlink
    done
  done
  rm -f "$partial"/var/cache/apt/archives/*.deb
  # The first stage leaves proc -> /proc, i.e. the host's. onnxruntime parses /proc/cpuinfo on
  # import and crashes on an x86 one, so the rootfs gets its own, describing Cortex-A72 cores (Pi 4).
  rm -rf "$partial/proc" && mkdir "$partial/proc"
  for ((i = 0; i < $(getconf _NPROCESSORS_ONLN); i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
  done >"$partial/proc/cpuinfo"
  [ -x "$partial/usr/bin/python3.11" ] || die "the rootfs has no usr/bin/python3.11 after unpacking"
  touch "$partial/.complete"
  rm -rf "$ROOTFS" && mv "$partial" "$ROOTFS"
fi

# 3. The venv: made by the emulated interpreter, whose bin/python3.11 is then replaced by a launcher.
if [ ! -f "$VENV/.complete" ]; then
  say "creating the aarch64 venv $VENV"
  rm -rf "$VENV"
  "$QEMU" -L "$ROOTFS" "$ROOTFS/usr/bin/python3.11" -m venv --without-pip "$VENV"
  rm -f "$VENV/bin/python3.11"
  # -0 "$0": the emulated python sees the venv path as argv[0], so it finds pyvenv.cfg and reports
  # the launcher as sys.executable.
  cat >"$VENV/bin/python3.11" <<EOF
#!/bin/sh
exec "$QEMU" -L "$ROOTFS" -0 "\$0" "$ROOTFS/usr/bin/python3.11" "\$@"
EOF
  chmod +x "$VENV/bin/python3.11"
  # Host pip configuration (local indexes, constraints) must not leak into the emulated pip.
  env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
    "$VENV/bin/python3.11" -m ensurepip --default-pip >/dev/null
  touch "$VENV/.complete"
fi
arch=$("$VENV/bin/python" -c 'import platform, sys; print(platform.machine(), sys.version.split()[0])')
case $arch in aarch64\ 3.11.*) say "venv ready: $arch" ;; *) die "the venv interpreter reports '$arch', not aarch64 3.11" ;; esac
