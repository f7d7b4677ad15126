"""Warnings raised while training runs, kept off the terminal's progress bar.

The loader warns once per sample it skips, tar member it refuses or shard it cannot read
(``microturn.trainer.loader_stream``); printed as they come, a run over a corpus with a bad
shard breaks the progress bar into hundreds of lines. While a :class:`WarningTally` is active
each warning goes, with its step, to a log file (``RUN/warnings.log``; ``warnings-rankN.log``
for the other processes), and is counted by its reason: the text before its first ``": "``
("skipped a sample", "skipped a shard", ...) or, without one, its first 60 characters.
:meth:`WarningTally.summary` gives one line of counts per reason for the end of the run.

The warnings filters in force still decide which warnings are raised (``-W error`` still stops
the run, ``-W ignore`` still silences), except that the loader's own warnings are raised every
time: Python's default filter shows a message once per process, and a resampled stream meets
the same bad sample again, so the counts would otherwise fall short of ``loader/skipped``.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from typing import TextIO

__all__ = ["WarningTally"]

# Reasons longer than this are cut: a warning without a ": " is one sentence, its start names it.
REASON_CHARS = 60


def reason_of(message: str) -> str:
    """The reason a warning is counted under (see the module docstring)."""
    head = message.split(": ", 1)[0].strip() if ": " in message else message.strip()
    head = head.splitlines()[0] if head else type(message).__name__
    return head if len(head) <= REASON_CHARS else head[:REASON_CHARS - 3] + "..."


class WarningTally:
    """A context manager that counts and logs the warnings raised inside it (see the module
    docstring). Set :attr:`step` as the run goes, so each logged warning names its step."""

    def __init__(self, log_path: str):
        self.log_path = log_path
        self.counts: Counter[str] = Counter()
        self.step = 0
        self._file: TextIO | None = None
        self._catch: warnings.catch_warnings | None = None

    def __enter__(self) -> WarningTally:
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        # The loader's warnings are attributed to loader_stream or shard_reader (their stacklevel).
        warnings.filterwarnings("always", module=r"microturn\.trainer\.(loader_stream|shard_reader)\b")
        warnings.showwarning = self._show
        return self

    def __exit__(self, *exc) -> None:
        assert self._catch is not None
        self._catch.__exit__(*exc)
        self._catch = None
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def total(self) -> int:
        """Warnings counted so far."""
        return sum(self.counts.values())

    def _show(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        self.counts[reason_of(text)] += 1
        if self._file is None:
            os.makedirs(os.path.dirname(self.log_path) or ".", exist_ok=True)
            self._file = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed by __exit__)
        # One line per warning, so `grep`, `sort | uniq -c` and `wc -l` work on the file.
        flat = " ".join(text.split())
        self._file.write(f"step {self.step}: {category.__name__}: {flat} ({os.path.basename(filename)}:{lineno})\n")
        self._file.flush()

    def summary(self) -> str | None:
        """One line: how many warnings, by reason (most frequent first), and where the details
        are; ``None`` when there were none."""
        if not self.counts:
            return None
        by_reason = ", ".join(f"{reason} x{n}" for reason, n in sorted(self.counts.items(), key=lambda kv: (-kv[1],
                                                                                                          kv[0])))
        return f"{self.total} warning(s) while training: {by_reason}; one per line in {self.log_path}"
