#!/usr/bin/env bash
# Set up the aarch64 (HiKey970 CPU class) emulation the `arm` tests run on:
#   1. apt: qemu-user, the aarch64 cross compiler, and llvm-19 (llvm-mca-19: the
#      kernels' performance model, benchmarks/perf_model.py);
#   2. apt: arm64 as a foreign architecture, with its package lists;
#   3. the cache of tvm_mcpruner/arm_sysroot.py (aarch64 sysroot from arm64 .debs,
#      aarch64 TVM/numpy wheels from pip) under .cache/arm/ or $MCPRUNER_ARM_CACHE.
# Emulated (qemu) — correctness only, not device timing.
#
# Run as root; needs network the first time. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[setup_arm] $*"; }
start=$SECONDS

if [ "$(id -u)" != 0 ]; then
    echo "[setup_arm] error: run as root (apt-get install, dpkg --add-architecture)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
# libc6-dev-arm64-cross (crti.o, libc.so for linking) is only a Recommends of the cross
# gcc, which --no-install-recommends leaves out: without it no shared library links.
for package in qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross llvm-19; do
    installed "$package" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "dpkg --add-architecture arm64"
    dpkg --add-architecture arm64
fi
if ! apt-cache show libc6:arm64 >/dev/null 2>&1; then
    log "apt-get update (arm64 package lists)"
    apt-get update -qq
fi

# Run as a file, not `python -m tvm_mcpruner...`: this may run before the requirements
# are installed, and the package's __init__ imports numpy; arm_sysroot needs only stdlib.
python tvm_mcpruner/arm_sysroot.py setup

log "done in $((SECONDS - start)) s"
