#!/usr/bin/env bash
# make dags-test: installs Airflow into its own environment (.venv-airflow: Airflow's pins conflict
# with the project's, so the two never share one), then runs both DAGs of dags/ end to end with
# dag.test() on the demo call (scripts/dags_test.py says what is checked). Airflow's state (its
# home and sqlite db) and every output live in a scratch folder that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

[ -x .venv/bin/microturn ] || { echo "dags-test: .venv/bin/microturn is missing; run 'make setup'" >&2; exit 2; }
mkdir -p build

PY=${PYTHON:-python3}
stamp=.venv-airflow/.installed
if [ ! -f "$stamp" ] || [ dags/requirements.txt -nt "$stamp" ]; then
  [ -x .venv-airflow/bin/python ] || "$PY" -m venv .venv-airflow
  # No pip cache, as scripts/setup.sh: CI machines can be short of disk. pip's chatter goes to a
  # log that is shown only when the install fails.
  pipi() { .venv-airflow/bin/pip install -q --no-cache-dir "$@" >>.venv-airflow/install.log 2>&1 \
             || { cat .venv-airflow/install.log >&2; exit 1; }; }
  pipi --upgrade pip
  pipi -r dags/requirements.txt
  touch "$stamp"
  echo "dags-test: installed Airflow into .venv-airflow ($((SECONDS - started)) s)"
fi

# The DAG files (and scripts/dags_test.py) type-checked against the Airflow they run with: the
# project's lint gate reads .venv, which has no Airflow (dags/pyrightconfig.json points at .venv-airflow).
PYRIGHT_PYTHON_IGNORE_WARNINGS=1 .venv/bin/pyright -p dags/pyrightconfig.json >build/dags-pyright.log 2>&1 \
  || { cat build/dags-pyright.log >&2; echo "dags-test: FAILED: pyright on dags/" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/microturn-dags-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
export AIRFLOW_HOME="$work/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# dag.test() records its runs in a database: a fresh sqlite one in the scratch folder.
.venv-airflow/bin/airflow db migrate >"$work/db-migrate.log" 2>&1 || { cat "$work/db-migrate.log" >&2; exit 1; }

# The demo's real call (pyannote.audio's sample, 30 s) with its STM transcript beside it, as the
# sidecar ingest reads; the demo wraps it in a test-picture video, left out here to keep this short.
mkdir -p "$work/inputs"
.venv/bin/python - "$work/inputs" <<'EOF'
import shutil
import sys

from microturn.cli.demo import sample_files

files = sample_files()
for ext in ("wav", "stm"):
    shutil.copyfile(files[ext], f"{sys.argv[1]}/call.{ext}")
EOF

# Airflow logs every task's output: thousands of lines. They go to build/dags-test.log (kept for
# reading); the console gets the check's own lines, or the log's end when it fails.
log=build/dags-test.log
if ! .venv-airflow/bin/python scripts/dags_test.py --work "$work" --microturn "$PWD/.venv/bin/microturn" \
     --inputs "$work/inputs" >"$log" 2>&1; then
  tail -n 150 "$log" >&2
  echo "dags-test: FAILED (the whole log: $log)" >&2
  exit 1
fi
echo "dags-test: done in $((SECONDS - started)) s, set-up included"
grep '^dags-test:' "$log"  # its last line is the count of checks passed
