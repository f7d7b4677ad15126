#!/usr/bin/env bash
# Installs everything microturn needs on a fresh Debian/Ubuntu machine: ffmpeg and espeak-ng from
# the system packages, and the Python dependencies (pinned by requirements.lock) into .venv.
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
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip setuptools wheel
  .venv/bin/pip install -q -c requirements.lock -e ".[test]"
  # resemblyzer depends on the original `webrtcvad`, whose import fails on current setuptools;
  # webrtcvad-wheels ships the same module and must be the copy that wins.
  .venv/bin/pip install -q --no-deps --force-reinstall "webrtcvad-wheels==$(grep -i '^webrtcvad-wheels==' requirements.lock | cut -d= -f3)"
  touch "$stamp"
fi
