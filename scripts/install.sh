#!/usr/bin/env bash
# One-step install for a fresh machine: a virtual environment in .venv with a matching
# torch/torchvision pair from the package index, nerfstudio 1.1.5 and this package (editable,
# with test extras). Safe to re-run: existing pieces are kept.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_PAIR=("torch==2.13.0" "torchvision==0.28.0")
PY=${PYTHON:-python3}

# The machine's pip configuration points at a local folder holding a `+cpu` torch wheel that
# PyPI's torchvision cannot load with; resolve from the package index only.
pipi() { env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null .venv/bin/pip install --progress-bar off "$@"; }

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pipi -q --upgrade pip
# torch and torchvision in one resolver call so that they come as a built-for-each-other pair.
pipi -q "${TORCH_PAIR[@]}" "nerfstudio==1.1.5"
pipi -q -e ".[test]"

if ! .venv/bin/python -c "import torchvision.ops; torchvision.ops.nms" 2>/tmp/featurenerf_tv_check.log; then
  echo "ERROR: torchvision.ops does not import in .venv (mismatched torch/torchvision pair):" >&2
  cat /tmp/featurenerf_tv_check.log >&2
  exit 1
fi

# System pieces: open3d (imported lazily by nerfstudio) needs libusb; ns-render needs ffmpeg; the
# viewer's browser test drives Debian's chromium. Only attempted where we may install system packages.
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  need=()
  dpkg -s libusb-1.0-0 >/dev/null 2>&1 || need+=(libusb-1.0-0)
  command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
  [ -x /usr/bin/chromium ] || need+=(chromium chromium-driver)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
echo "featurenerf_ns installed in .venv ($(.venv/bin/python -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'))"
