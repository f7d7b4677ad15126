#!/usr/bin/env bash
# What the tests need beyond `make setup` (run by `make test`, idempotent):
# - Debian's chromium, which renders the audit report headless (tests/pipelines/test_report_browser.py);
# - .venv-interop: Hugging Face `datasets` and the previous minor release of DuckDB, the tools a
#   user of the shards and the catalog already has (scripts/interop-requirements.txt). It is kept
#   apart from .venv because those pins conflict with the project's lock.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  echo "test-deps: installed chromium ($((SECONDS - started)) s)"
fi

PY=${PYTHON:-python3}
stamp=.venv-interop/.installed
if [ ! -f "$stamp" ] || [ scripts/interop-requirements.txt -nt "$stamp" ] || [ scripts/interop-requirements.lock -nt "$stamp" ]; then
  [ -x .venv-interop/bin/python ] || "$PY" -m venv .venv-interop
  pipi() { .venv-interop/bin/pip install -q --no-cache-dir "$@" >>.venv-interop/install.log 2>&1 \
             || { cat .venv-interop/install.log >&2; exit 1; }; }
  pipi --upgrade pip
  pipi -c scripts/interop-requirements.lock -r scripts/interop-requirements.txt
  touch "$stamp"
  echo "test-deps: installed datasets and duckdb into .venv-interop ($((SECONDS - started)) s)"
fi
