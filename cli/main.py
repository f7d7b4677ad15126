"""``microturn``: one console command with a subcommand per stage.

Subcommands import their stage lazily, so ``microturn --help`` is instant and a stage's heavy
dependencies load only when that stage runs. Logging is configured here, before any stage is
imported (:mod:`microturn.cli.logs`), and ``--log-level`` is read from anywhere on the line.
"""

from __future__ import annotations

import sys

from microturn.cli import logs
from microturn.cli.usage import UsageExit, unknown

USAGE = """usage: microturn [--version] [--log-level LEVEL] <command> [options]

commands:
  ingest      diarize and word-time conversational media into record tables (Beam)
  synthesize  speak dialogue scripts / remix real turns into two-stream conversations (Beam);
              `synthesize stats OUT`, `synthesize fit OUT`
  shard       cut records into 200 ms micro-turn samples: WebDataset tars + Parquet manifests (Beam)
  catalog     `catalog build OUT... --catalog FILE.duckdb`: one DuckDB catalog over records and shards
  audit       read-only SQL over the catalog; `audit report` writes an HTML report with plots
  train       train the MoE interaction model on shards with DeepSpeed; `train plot RUN`
  export      `export lhotse OUT --output DIR`: records as Lhotse recordings, supervisions and cuts
  import      `import lhotse CUTS --output OUT`: Lhotse cuts with supervisions as conversation records
  eval        evaluate results: `eval diarization` (DER/JER), `eval words` (word timing)
  session     stream a recording into a trained run 200 ms at a time; write its audio, the conversation, latency
  demo        build a conversational video from the pyannote sample, ingest it, print a summary

global options (accepted anywhere on the line):
  --log-level LEVEL  debug, info, warning or error: how much microturn logs (default info;
              other libraries log warnings and errors only)
  --version   print the version and exit

ingest, synthesize and shard show inputs done out of inputs matched, with rate and time left, on
Beam's DirectRunner (`--progress auto|bar|log|off`). A usage error (a bad flag or setting, inputs
that match nothing) exits with status 2 before any work; a failed run with status 1.
Run `microturn <command> --help` for the options of a command.
"""


def _ingest(argv: list[str]) -> int:
    from microturn.pipelines.ingest.run import main

    return main(argv)


def _synthesize(argv: list[str]) -> int:
    from microturn.pipelines.synthesize.run import main

    return main(argv)


def _shard(argv: list[str]) -> int:
    from microturn.pipelines.shard.run import main

    return main(argv)


def _catalog(argv: list[str]) -> int:
    from microturn.pipelines.catalog.run import catalog_main

    return catalog_main(argv)


def _audit(argv: list[str]) -> int:
    from microturn.pipelines.catalog.run import audit_main

    return audit_main(argv)


def _train(argv: list[str]) -> int:
    from microturn.trainer.run import main

    return main(argv)


def _eval(argv: list[str]) -> int:
    from microturn.cli.evaluate import main

    return main(argv)


def _export(argv: list[str]) -> int:
    from microturn.cli.interop import export_main

    return export_main(argv)


def _import(argv: list[str]) -> int:
    from microturn.cli.interop import import_main

    return import_main(argv)


def _session(argv: list[str]) -> int:
    from microturn.trainer.session_args import main

    return main(argv)


def _demo(argv: list[str]) -> int:
    from microturn.cli.demo import main

    return main(argv)


COMMANDS = {"ingest": _ingest, "synthesize": _synthesize, "shard": _shard, "catalog": _catalog, "audit": _audit,
            "train": _train, "eval": _eval, "export": _export, "import": _import, "session": _session, "demo": _demo}


def version() -> str:
    """The installed distribution's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("microturn")
    except PackageNotFoundError:  # a source tree on sys.path without an install
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = logs.setup_from_argv("microturn", argv)
    except UsageExit as exc:
        print(exc.code, file=sys.stderr)
        return 2
    if argv and argv[0] == "--version":
        print(f"microturn {version()}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        what = "option" if command.startswith("-") else "command"
        print(unknown("microturn", what, command, COMMANDS if what == "command" else ("--version", "--log-level")),
              file=sys.stderr)
        print("Run `microturn --help` for the commands.", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](rest) or 0
    except UsageExit as exc:  # a usage error found by the command: its message, status 2
        print(exc.code, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
