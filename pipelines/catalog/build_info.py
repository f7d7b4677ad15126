"""When, and from which code, a catalog was built (its ``build_info`` table) or a report rendered.

The code is named by the microturn package version and, when the package runs from a git
checkout (an editable install of the repository), the commit of that checkout and whether its
tracked files differ from the commit. Git runs as ``git -C <package source root> ...`` with a
list argv and no shell, without the caller's ``GIT_*`` variables (they could point it at another
repository), and only when that root holds a ``.git``; an installed wheel has none, and then the
commit is NULL. Any failure of git (not installed, not a repository it trusts, a timeout) also
gives NULL: the version still names the code.

Times are UTC, to the second. When ``SOURCE_DATE_EPOCH`` is set (seconds since 1970, the
reproducible-builds convention) it is used instead of the clock, so that two runs that must give
identical files can.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import duckdb

# The repository root when the package runs from a checkout: pipelines/catalog/ is two folders down.
SOURCE_ROOT = Path(__file__).resolve().parents[2]
_GIT_TIMEOUT_S = 20  # `git status` on a large, cold checkout can take seconds; never block a build for long
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # SHA-1 or SHA-256 object names


@dataclass(frozen=True, kw_only=True)
class CodeVersion:
    """The code that ran: package version, and commit and modified flag of its git checkout."""

    microturn_version: str | None
    git_commit: str | None  # None: not a git checkout, or git could not tell
    git_dirty: bool | None  # tracked files differ from the commit; None when the commit is unknown

    def describe(self) -> str:
        """``microturn 0.1.0, commit 0123abcd...`` (with ``, modified`` when dirty)."""
        text = f"microturn {self.microturn_version or '(version unknown)'}"
        if self.git_commit:
            text += f", commit {self.git_commit}" + (" with uncommitted changes" if self.git_dirty else "")
        return text


def utc_now() -> dt.datetime:
    """The current UTC time to the second (naive), or ``SOURCE_DATE_EPOCH`` when it is set."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        if not epoch.strip().isdigit():
            raise ValueError(f"SOURCE_DATE_EPOCH must be a whole number of seconds since 1970, got {epoch!r}")
        return dt.datetime.fromtimestamp(int(epoch), dt.UTC).replace(tzinfo=None)
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def _git(*args: str) -> str | None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        done = subprocess.run(["git", "-C", str(SOURCE_ROOT), *args], capture_output=True, text=True,
                              timeout=_GIT_TIMEOUT_S, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def code_version() -> CodeVersion:
    """The version of the running microturn, with its git commit when it runs from a checkout."""
    try:
        version = metadata.version("microturn")
    except metadata.PackageNotFoundError:
        version = None
    commit = dirty = None
    if (SOURCE_ROOT / ".git").exists():
        head = (_git("rev-parse", "--verify", "HEAD") or "").strip()
        if _COMMIT_RE.match(head):
            commit = head
            status = _git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
            dirty = None if status is None else bool(status.strip())
    return CodeVersion(microturn_version=version, git_commit=commit, git_dirty=dirty)


def write_build_info(con: duckdb.DuckDBPyConnection) -> None:
    """Create the one-row ``build_info`` table: built_at_utc, microturn_version, git_commit,
    git_dirty, duckdb_version."""
    code = code_version()
    con.execute(
        "CREATE TABLE build_info AS SELECT ?::TIMESTAMP AS built_at_utc, ?::VARCHAR AS microturn_version, "
        "?::VARCHAR AS git_commit, ?::BOOLEAN AS git_dirty, ?::VARCHAR AS duckdb_version",
        [utc_now(), code.microturn_version, code.git_commit, code.git_dirty, duckdb.__version__],
    )
