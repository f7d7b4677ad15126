"""Strict command lines for the Beam stages: the stage's own flags, Beam's flags, and nothing else.

``microturn ingest|synthesize|shard`` pass every flag their own parser does not know to Beam's
``PipelineOptions``. Beam drops what *it* does not know with a log warning, so a misspelt flag
(``--max-duraton-s 1``), the underscore spelling of a stage flag (``--num_speakers 3``) or a stray
value (the ``b c`` of ``--input a b c``) used to leave the run on its defaults with exit 0. Here
the leftover arguments are parsed by one parser holding every Beam option (collected the way
Beam's ``PipelineOptions.get_all_options`` collects them), and anything neither parser accepts
is a usage error: exit 2 before any work, naming the argument.

Stage flags have one spelling, with dashes (``--num-speakers``); the underscore spelling is
refused with a pointer to the right one. Accepting both would make a stage flag shadow a Beam
option of the same underscore name the day Beam adds one.

Beam is imported only when a command line is parsed for a run, never for ``--help``: importing
it takes 1-2 s.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import sys
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

P = TypeVar("P")

# argparse reads these as values, not flags, when no flag of the parser looks like a number.
_NEGATIVE = re.compile(r"^-\d+$|^-\d*\.\d+$")
# How a stage run shows its progress (microturn.pipelines.progress).
PROGRESS_MODES = ("auto", "bar", "log", "off")


class _BeamFlagError(Exception):
    """A Beam option with a bad value (``--direct_num_workers=two``)."""


def beam_option_parser() -> argparse.ArgumentParser:
    """One parser holding the flags of every registered ``PipelineOptions`` subclass.

    Built per call: an option class registered since the last call (a runner module imported
    later) is included, as it is when Beam parses the same flags.
    """
    # The standard option classes (StandardOptions, DirectOptions, GoogleCloudOptions, ...)
    # register as PipelineOptions subclasses when this module is imported; runner-specific ones
    # (Dask's) when theirs is, which Beam requires before their flags can be used anyway.
    from apache_beam.options import pipeline_options as beam_options

    class BeamOptionParser(beam_options._BeamArgumentParser):
        """Beam's parser class (it adds ``add_value_provider_argument``) that raises instead of
        exiting, so the stage's own parser reports the error under its name."""

        def error(self, message):
            raise _BeamFlagError(message)

    parser = BeamOptionParser(add_help=False, allow_abbrev=False)
    classes: dict[str, type] = {}
    for cls in beam_options.PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)  # as Beam does: one class per name
    for cls in classes.values():
        cls._add_argparse_args(parser)  # type: ignore[attr-defined]
    return parser


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """``--progress MODE`` and ``--no-progress`` of the stage commands (dest ``progress``)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--progress", choices=PROGRESS_MODES, default="auto",
                       help="inputs done out of inputs matched, with rate and time left, on the DirectRunner: "
                            "a bar when stderr is a terminal and log lines (every 30 s) otherwise (auto, the "
                            "default), or as given; other runners keep their own reporting")
    group.add_argument("--no-progress", dest="progress", action="store_const", const="off",
                       help="the same as --progress off")


def direct_worker_args(beam_args: list[str]) -> list[str]:
    """``beam_args`` with the DirectRunner's worker processes (``multi_processing``) logging
    warnings and errors only, unless the flags set their level (Beam's default is info: a few
    dozen lines per worker), the project logs at debug level, or another runner runs the
    pipeline (its workers' logs go where that runner keeps them)."""
    import logging

    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from microturn.pipelines.progress import LOCAL_RUNNERS

    runner = PipelineOptions(beam_args).view_as(StandardOptions).runner
    if runner is not None and str(runner).lower() not in LOCAL_RUNNERS:
        return list(beam_args)
    if any(a.split("=", 1)[0] == "--default_sdk_harness_log_level" for a in beam_args):
        return list(beam_args)
    if logging.getLogger("microturn").getEffectiveLevel() <= logging.DEBUG:
        return list(beam_args)
    return [*beam_args, "--default_sdk_harness_log_level=WARNING"]


def finite_float(text: str) -> float:
    """``argparse`` type: a float that is neither ``inf`` nor ``nan`` (``float()`` accepts both)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return [o for action in parser._actions for o in action.option_strings]


def _explain_flag(arg: str, app: list[str], beam: list[str]) -> str:
    name = arg.split("=", 1)[0]
    dashed = "--" + name.lstrip("-").replace("_", "-")
    if "_" in name and dashed in app:
        return f"{name} (flags of this command are spelled with dashes: did you mean {dashed}?)"
    close = difflib.get_close_matches(name, app + beam, n=1, cutoff=0.75)
    return f"{name} (did you mean {close[0]}?)" if close else name


def _join_signed_numbers(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--flag -inf`` / ``--flag -1e3`` → ``--flag=-inf`` for the parser's numeric flags.

    argparse takes a value with a leading ``-`` for a flag unless it looks like ``-5`` or ``-.5``,
    so ``--noise-snr-db -1e3`` or ``-inf`` would be reported as an unknown flag instead of being
    checked (and refused, for ``-inf``) as the flag's value.
    """
    numeric = {o for a in parser._actions if a.type in (int, float, finite_float) and a.nargs is None
               for o in a.option_strings}
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in numeric and arg.startswith("-") and _is_number(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _flag_tokens(argv: list[str]) -> list[str]:
    """The arguments argparse reads as flags: a leading ``-``, not a negative number, no space
    (argparse's own rule); none after ``--``."""
    out = []
    for arg in argv:
        if arg == "--":
            break
        if len(arg) > 1 and arg[0] == "-" and not _NEGATIVE.match(arg) and " " not in arg.split("=", 1)[0]:
            out.append(arg)
    return out


def _flag_before(value: str, argv: list[str]) -> str | None:
    """The nearest flag left of ``value``'s first place in ``argv`` (for a stray value's message)."""
    if value not in argv:
        return None
    flags = [a for a in argv[:argv.index(value)] if a.startswith("-")]
    return flags[-1].split("=", 1)[0] if flags else None


def split_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Parse ``argv`` into the stage's flags and the Beam flags, refusing everything else.

    Returns the stage's namespace and the Beam arguments in their original order and form
    (``--runner DirectRunner`` and ``--direct_num_workers=2`` both work). Unknown flags, stray
    values and bad Beam values end in ``parser.error`` (exit status 2, before any work).
    """
    argv = _join_signed_numbers(parser, list(sys.argv[1:] if argv is None else argv))
    if any(a in ("-h", "--help") for a in _flag_tokens(argv)):
        parser.print_help()  # before Beam's parser is built: that imports Beam
        raise SystemExit(0)
    beam = beam_option_parser()
    app_flags, beam_flags = _option_strings(parser), _option_strings(beam)

    def refuse(flags: list[str]) -> None:
        named = "; ".join(_explain_flag(f, app_flags, beam_flags) for f in flags)
        parser.error(f"unrecognized flag(s): {named}. See `{parser.prog} --help`; other flags must be "
                     "Beam pipeline options (--runner, --direct_num_workers, ...)")

    # Unknown flags first, so `--out o` is named as such rather than reported as a missing --output.
    known = set(app_flags) | set(beam_flags)
    unknown_flags = [a for a in _flag_tokens(argv) if a.split("=", 1)[0] not in known]
    if unknown_flags:
        refuse(unknown_flags)
    # A one-value flag given twice keeps only the last value in argparse (`--output a --output b`).
    single = {o for a in parser._actions if isinstance(a, argparse._StoreAction) for o in a.option_strings}
    names = [a.split("=", 1)[0] for a in _flag_tokens(argv)]
    twice = sorted({n for n in names if n in single and names.count(n) > 1})
    if twice:
        many = [o for a in parser._actions if isinstance(a, argparse._AppendAction) for o in a.option_strings]
        hint = f" (only {' / '.join(many)} may be repeated)" if many else ""
        parser.error(f"{', '.join(twice)} given more than once: give it once{hint}")
    if "--" in argv:  # no command here takes positional arguments, so nothing may follow `--`
        stray = " ".join(repr(a) for a in argv[argv.index("--"):])
        parser.error(f"unexpected value(s) {stray}: this command takes flags only")
    args, rest = parser.parse_known_args(argv)
    try:
        _, unknown = beam.parse_known_args(rest)
    except _BeamFlagError as exc:
        parser.error(f"Beam pipeline option: {exc}")
    flags = [u for u in unknown if u.startswith("-") and u != "--"]
    if flags:
        refuse(flags)
    if unknown:
        parser.error(_explain_stray(parser, unknown, argv))
    return args, rest


def _explain_stray(parser: argparse.ArgumentParser, stray: list[str], argv: list[str]) -> str:
    values = " ".join(repr(u) for u in stray)
    after = _flag_before(stray[0], argv)
    if after is None:
        return f"unexpected value(s) {values}: this command takes flags only"
    actions = {o: a for a in parser._actions for o in a.option_strings}
    action = actions.get(after)
    if isinstance(action, argparse._AppendAction):
        why = f"{after} takes one value; repeat it for each ({after} A {after} B)"
    elif action is not None and action.nargs == 0:
        why = f"{after} takes no value"
    else:
        why = f"{after} takes one value"
    return f"unexpected value(s) {values} after {after}: {why}"


def require_file(flag: str, path: str) -> None:
    """``ValueError`` naming ``flag`` unless ``path`` is an existing file (any Beam filesystem)."""
    from apache_beam.io.filesystems import FileSystems

    if "://" not in path and os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a folder, not a file")
    if not FileSystems.exists(path):
        raise ValueError(f"{flag} {path}: no such file")


def require_records(flag: str, root: str, table: str) -> None:
    """``ValueError`` naming ``flag`` unless ``root`` holds ``table`` as a stage writes it
    (``root/<table>/*.parquet``; every stage writes each of its tables, empty ones too)."""
    from apache_beam.io.filesystems import FileSystems

    if "://" not in root and not os.path.isdir(root):
        raise ValueError(f"{flag} {root}: no such folder")
    pattern = FileSystems.join(root, table, "*.parquet")
    if not FileSystems.match([pattern])[0].metadata_list:
        raise ValueError(f"{flag} {root}: no {table} records there ({pattern} matches nothing); "
                         "give the output directory of `microturn ingest` or `microturn synthesize`")


def refuse_folder(flag: str, path: str) -> None:
    """``ValueError`` when an output file path names an existing folder."""
    if "://" not in path and os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a folder; give a file name")


def config_values(cls: type, args: argparse.Namespace, *, cli_only: Collection[str],
                  renamed: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The values of stage config ``cls`` that ``--config`` (a named TOML file) and the flags
    give, flags winning: the keyword arguments to build the config with.

    The file's keys and types are checked against ``cls`` (fields in ``cli_only`` are the
    command line's alone, so a file naming them is refused); the rules that need every value run
    when the caller builds the config. Flags left unset (None) do not override the file;
    ``renamed`` maps a flag's dest to its field (``input`` -> ``inputs``); repeatable flags
    (lists) become tuples.
    """
    from microturn.schemas.config import load_toml, parse_partial

    values: dict[str, Any] = {}
    if args.config:
        require_file("--config", args.config)
        values = parse_partial(cls, load_toml(args.config), where=args.config, exclude=cli_only)
    for dest, value in vars(args).items():
        if dest == "config" or value is None:
            continue
        values[(renamed or {}).get(dest, dest)] = tuple(value) if isinstance(value, list) else value
    return values


def run_stage(prog: str, argv: list[str], prepare: Callable[[list[str]], P], execute: Callable[[P], Any]) -> int:
    """The two halves of a stage command (ingest, synthesize, shard): ``prepare`` checks the
    command line, inputs and output before any work, and a ``ValueError`` there is a usage error
    (:class:`microturn.cli.usage.UsageExit`, status 2); ``execute`` runs the pipeline, and a
    failure there (a bad run, an output fault, a locked output, nothing written) exits 1 with
    one line. Returns 0."""
    from microturn.cli.usage import UsageExit

    try:
        plan = prepare(argv)
    except ValueError as exc:
        raise UsageExit(f"{prog}: error: {exc}") from None
    from microturn.pipelines.outputs import NothingWritten, OutputError, OutputInUse, quiet_output_faults

    quiet_output_faults()
    try:
        execute(plan)
    except (ValueError, OutputError, OutputInUse, NothingWritten) as exc:
        raise SystemExit(f"{prog}: error: {exc}") from None
    return 0
