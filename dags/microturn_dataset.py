"""microturn_dataset: media in, micro-turn training shards and an audit report out.

ingest → fit_timing (the turn-taking timing model, fitted on the ingested records) → synthesize
(generated dialogues and scripts spoken with that timing, plus a remix of the real turns) → shard →
catalog → audit_report.

Each task runs one `microturn` subcommand (README, "Orchestration with Airflow"). A run writes
under ``{output_root}/{run_name or run id}/``: ``ingest/``, ``timing.json``, ``synth/``,
``shards/``; and under ``{local_root or output_root}/{same name}/``: ``catalog.duckdb``,
``report/``. The Beam stages (ingest, synthesize, shard) take ``beam_args`` last, so
``["--runner=DataflowRunner", "--project=P", "--region=R", "--temp_location=gs://B/tmp"]`` with a
``gs://`` output root runs them on Dataflow, the same DAG.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, chain
from airflow.sdk.definitions.param import ParamsDict  # not in airflow.sdk's type stub
from microturn_ops import DEFAULT_MICROTURN, DEFAULT_OUTPUT_ROOT, MicroturnOperator, Run, flag, flags, join


def _strings(description: str) -> Param:
    return Param([], type="array", items={"type": "string"}, description=description)


def _text(default: str, description: str) -> Param:
    return Param(default, type="string", description=description)


# One function per task, named as the task: the params (``p``) and the run's folders in, the
# stage's argv out. Every value goes in as ``--flag=value`` or after ``--``; the extra ``*_args``
# and ``beam_args`` are flags the user wrote, passed as they are.
def ingest(p: dict, run: Run) -> list[str]:
    return [p["microturn"], "ingest", *flags("--input", p["inputs"]), f"--output={run('ingest')}",
            *flag("--config", p["ingest_config"]), *p["ingest_args"], *p["beam_args"]]


def fit_timing(p: dict, run: Run) -> list[str]:
    # `--` ends the options: the positional folder is data, whatever it starts with.
    return [p["microturn"], "synthesize", "fit", f"--output={run('timing.json')}", "--", run("ingest")]


def synthesize(p: dict, run: Run) -> list[str]:
    return [p["microturn"], "synthesize", *flags("--scripts", p["scripts"]), *flag("--generate", p["generate"] or ""),
            *(flag("--remix", run("ingest")) if p["remix"] else []), f"--timing={run('timing.json')}",
            f"--seed={p['seed']}", f"--output={run('synth')}", *flag("--config", p["synthesize_config"]),
            *p["synthesize_args"], *p["beam_args"]]


def shard(p: dict, run: Run) -> list[str]:
    return [p["microturn"], "shard", f"--input={run('ingest')}", f"--input={run('synth')}", f"--output={run('shards')}",
            *flag("--config", p["shard_config"]), *p["shard_args"], *p["beam_args"]]


def catalog(p: dict, run: Run) -> list[str]:
    return [p["microturn"], "catalog", "build", f"--catalog={join(run.local, 'catalog.duckdb')}",
            *flags("--allow-license", p["allow_licenses"]), "--", run("ingest"), run("synth"), run("shards")]


def audit_report(p: dict, run: Run) -> list[str]:
    return [p["microturn"], "audit", "report", f"--catalog={join(run.local, 'catalog.duckdb')}",
            f"--output={join(run.local, 'report')}"]


with DAG(
    dag_id="microturn_dataset",
    description="ingest → fit timing → synthesize + remix → shard → catalog → audit report",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    tags=["microturn"],
    # No automatic retry: "no input matched" or a bad flag fails the same way every time. Every
    # task is safe to retry or clear (its stage replaces its own earlier output); set retries here
    # for runners with transient faults.
    default_args={"retries": 0},
    params=ParamsDict({
        "microturn": _text(DEFAULT_MICROTURN, "the microturn command on the workers (the project's .venv)"),
        "inputs": _strings("media globs or files (absolute paths or Beam URLs), one `ingest --input` each"),
        "output_root": _text(DEFAULT_OUTPUT_ROOT, "absolute path or Beam URL; a run writes under {output_root}/{run}"),
        "local_root": _text("", "local folder for the catalog and report (default: output_root)"),
        "run_name": _text("", "the run's folder name (default: the run id)"),
        "beam_args": _strings("Beam pipeline options for ingest, synthesize and shard, e.g. --runner=DataflowRunner"),
        "ingest_config": _text("", "ingest --config TOML (empty: none)"),
        "ingest_args": _strings("more ingest flags, e.g. --num-speakers=2"),
        "scripts": _strings("dialogue script JSONL globs for synthesize --scripts"),
        "generate": Param(6, type="integer", minimum=0, description="dialogues to generate from the bundled templates"),
        "remix": Param(True, type="boolean", description="also re-time the ingested real turns"),
        "seed": Param(0, type="integer", description="synthesize --seed"),
        "synthesize_config": _text("", "synthesize --config TOML (empty: none)"),
        "synthesize_args": _strings("more synthesize flags, e.g. --noise-snr-db=20"),
        "shard_config": _text("", "shard --config TOML (empty: none)"),
        "shard_args": _strings("more shard flags, e.g. --splits=train=0.9,valid=0.05,test=0.05"),
        "allow_licenses": _strings("catalog build --allow-license values"),
    }),
):
    chain(*(MicroturnOperator(task_id=f.__name__, args=f)
            for f in (ingest, fit_timing, synthesize, shard, catalog, audit_report)))
