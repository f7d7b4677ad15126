"""``microturn``: one console command with a subcommand per stage.

Subcommands import their stage lazily, so ``microturn --help`` is instant and a stage's heavy
dependencies load only when that stage runs.
"""

from __future__ import annotations

import sys

USAGE = """usage: microturn <command> [options]

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
    from microturn.trainer.session_cli import main

    return main(argv)


def _demo(argv: list[str]) -> int:
    from microturn.cli.demo import main

    return main(argv)


COMMANDS = {"ingest": _ingest, "synthesize": _synthesize, "shard": _shard, "catalog": _catalog, "audit": _audit,
            "train": _train, "eval": _eval, "export": _export, "import": _import, "session": _session, "demo": _demo}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"microturn: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return COMMANDS[command](rest) or 0


if __name__ == "__main__":
    sys.exit(main())
