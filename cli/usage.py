"""Usage errors of the ``microturn`` commands: exit status 2, one line, a "did you mean" where one fits.

The rule across commands: a mistake in the command line or in the settings it names, found
before any work (an unknown subcommand or flag, a bad value, a missing ``--config`` file, inputs
that match nothing, an output folder the stage must not write) exits with status 2; a failure
during the work (an input or output fault, a locked output, nothing written) with status 1.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable


class UsageExit(SystemExit):
    """A usage error: ``code`` is the one-line message, as for a ``SystemExit("message")``.

    Raised by a command's ``main``. Python ends a process on an uncaught ``SystemExit`` with a
    message with status 1, so the entry points (``microturn`` and the ``python -m`` modules)
    catch this class, print the message and exit with status 2 (:func:`exit_status`); a caller
    of ``main`` in process sees a ``SystemExit`` carrying the message, as before.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


def exit_status(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a command's ``main`` as a process entry point: its status, 2 after a :class:`UsageExit`."""
    try:
        return main(argv) or 0
    except UsageExit as exc:
        print(exc.code, file=sys.stderr)
        return 2


def suggestion(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` most likely misspells, or None."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown(prog: str, what: str, word: str, choices: Iterable[str], *, hint: str = "") -> str:
    """The one-line message for an unknown ``what`` (command, subcommand) ``word`` of ``prog``."""
    choices = list(choices)
    close = suggestion(word, choices)
    guess = f" (did you mean {close!r}?)" if close else f" (choose from {', '.join(choices)})"
    return f"{prog}: unknown {what} {word!r}{guess}{hint}"


def looks_like_subcommand(word: str) -> bool:
    """Whether a first argument reads as a subcommand's name: a plain word, not a flag, path,
    override (``a.b=c``) or SQL statement."""
    return bool(word) and word.replace("-", "").replace("_", "").isalpha() and not word.startswith("-")
