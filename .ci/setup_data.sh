#!/usr/bin/env bash
# Data the accuracy tests, benchmarks/accuracy.py and examples/02 read: Fashion-MNIST from
# Debian's dataset-fashion-mnist (idx files under /usr/share/datasets/fashion-mnist).
# Nothing is downloaded at run time by the Python code; this is the one install step.
# Run as root; idempotent (a second run only checks).
set -euo pipefail

dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/t10k-labels-idx1-ubyte.gz" ]; then
    echo "[setup_data] Fashion-MNIST present in $dir"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "[setup_data] error: run as root (apt-get install -y dataset-fashion-mnist)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The package may already sit in the apt cache; update the lists only when it is unknown.
apt-get install -y -qq dataset-fashion-mnist || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }
test -f "$dir/t10k-labels-idx1-ubyte.gz"
echo "[setup_data] installed Fashion-MNIST into $dir"
