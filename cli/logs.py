"""The project's logging on the command line: one stderr handler, ``--log-level``, Beam's noise off.

Every ``microturn`` command configures logging through :func:`setup` before it imports a stage,
because importing ``apache_beam`` logs "apitools not found ..." on the root logger; with no
handler installed yet, that call runs ``logging.basicConfig``, which puts Beam's format on every
later record and prints the notice before any output of the command. Here the handler exists
first, so no ``basicConfig`` runs, and :class:`DropBeamNotices` drops that notice (and Beam's
other notices that say nothing about the user's run) wherever it is logged.

``--log-level`` sets the level of the project's loggers (``microturn.*``); other libraries stay
at ``warning`` (Beam logs every bundle at ``info``), or follow ``error``. The flag is accepted
anywhere on the ``microturn`` command line and by every command's own parser.
"""

from __future__ import annotations

import argparse
import logging
import sys

LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LEVEL = "info"
FORMAT = "%(levelname)s %(name)s: %(message)s"
FLAG = "--log-level"

# Beam's notices that tell the user nothing about their run, each as the texts its message holds.
# The first is logged at import by apache_beam.io.gcp.internal.clients.bigquery (no BigQuery
# client is installed, none is used); the others by each worker of the DirectRunner's
# multi_processing mode, and relayed to this process by the runner's job service with quotes
# escaped: a worker has no semi-persistent directory, and the runner's own internal flags are not
# worker flags (a user's unknown flag never reaches Beam: the stage refuses it first).
BEAM_NOTICES: tuple[tuple[str, ...], ...] = (
    ("apitools not found, and bigquery client libraries are not available",),
    ("No semi_persistent_directory found",),
    ("Discarding unparseable args", "--direct_runner_use_stacked_bundle", "--pipeline_type_check"),
)


def is_beam_notice(message: str) -> bool:
    """Whether ``message`` is one of :data:`BEAM_NOTICES`."""
    return any(all(part in message for part in notice) for notice in BEAM_NOTICES)


class DropBeamNotices(logging.Filter):
    """Drops the records of :data:`BEAM_NOTICES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not is_beam_notice(record.getMessage())


class _Handler(logging.StreamHandler):
    """The project's handler (a class of its own, so :func:`setup` finds it again)."""

    def __init__(self) -> None:
        super().__init__()  # sys.stderr as it is when a record is written (pytest swaps it)
        self.setFormatter(logging.Formatter(FORMAT))
        self.addFilter(DropBeamNotices())

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup(level: str | None = None) -> None:
    """Install the project's handler on the root logger (once) and set the levels.

    ``level`` is one of :data:`LEVELS`; ``None`` keeps the level set before (or the default,
    :data:`DEFAULT_LEVEL`, on the first call). Safe to call again: a stage's ``main`` called by
    ``microturn`` finds the handler and level that ``microturn`` installed.
    """
    root = logging.getLogger()
    if not any(isinstance(f, DropBeamNotices) for f in root.filters):
        root.addFilter(DropBeamNotices())  # records logged on the root logger itself, for any handler
    project = logging.getLogger("microturn")
    first = not any(isinstance(h, _Handler) for h in root.handlers)
    if first:
        root.addHandler(_Handler())
    if level is None and not first:
        return
    name = level or DEFAULT_LEVEL
    if name not in LEVELS:
        raise ValueError(f"{FLAG} {name!r}: choose from {', '.join(LEVELS)}")
    value = getattr(logging, name.upper())
    project.setLevel(value)
    root.setLevel(max(value, logging.WARNING))


def pop_level(argv: list[str]) -> tuple[str | None, list[str]]:
    """``(level, argv without --log-level)``: the last ``--log-level X`` / ``--log-level=X`` before a
    ``--``. ``ValueError`` for a missing or unknown level."""
    out: list[str] = []
    level = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out.extend(argv[i:])
            break
        if arg == FLAG or arg.startswith(FLAG + "="):
            if arg == FLAG:
                if i + 1 >= len(argv):
                    raise ValueError(f"{FLAG} needs a value: one of {', '.join(LEVELS)}")
                value, i = argv[i + 1], i + 2
            else:
                value, i = arg.split("=", 1)[1], i + 1
            if value.lower() not in LEVELS:
                raise ValueError(f"{FLAG} {value!r}: choose from {', '.join(LEVELS)}")
            level = value.lower()
            continue
        out.append(arg)
        i += 1
    return level, out


def setup_from_argv(prog: str, argv: list[str] | None) -> list[str]:
    """Apply the ``--log-level`` of ``argv`` (``sys.argv[1:]`` when None) and return the rest:
    what every command's ``main`` does first. A bad level is a usage error (exit 2)."""
    from microturn.cli.usage import UsageExit

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        level, rest = pop_level(args)
        setup(level)
    except ValueError as exc:
        raise UsageExit(f"{prog}: error: {exc}") from None
    return rest


def add_level_flag(parser: argparse.ArgumentParser) -> None:
    """Show ``--log-level`` in ``parser``'s help (the flag itself is read by :func:`setup_from_argv`
    before the parser runs)."""
    parser.add_argument(FLAG, choices=LEVELS, metavar="LEVEL", default=argparse.SUPPRESS,
                        help=f"how much the project logs: {', '.join(LEVELS)} (default {DEFAULT_LEVEL}); "
                             "other libraries log warnings and errors only")
