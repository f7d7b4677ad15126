"""Where the second Python environment of the interoperability tests lives.

``.venv-interop`` (made by ``scripts/test_deps.sh``) holds the other tools' packages that must
read what the project writes: Hugging Face ``datasets`` and an older DuckDB. Tests run them in a
subprocess of that environment's interpreter, found by :func:`interop_python`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["interop_python"]

ENV_VAR = "MICROTURN_INTEROP_PYTHON"


def interop_python() -> str:
    """The interop environment's ``python``: ``$MICROTURN_INTEROP_PYTHON`` when set, else
    ``<repo>/.venv-interop/bin/python``. When it is missing the calling test is skipped, except
    under CI (env var ``CI`` set), where it fails so that CI always runs the interop tests."""
    given = os.environ.get(ENV_VAR)
    path = Path(given) if given else Path(__file__).resolve().parents[1] / ".venv-interop" / "bin" / "python"
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    reason = (f"interop python {path} not found; run `bash scripts/test_deps.sh` (or `make test-deps`) to "
              f"create .venv-interop, or set {ENV_VAR}")
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
