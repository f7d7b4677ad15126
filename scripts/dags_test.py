"""The DAGs' end-to-end check, run by scripts/dags_test.sh in the Airflow environment (.venv-airflow).

1. Parse: the dags folder loads with no import error into exactly the two DAGs with their task
   graphs, and the DAG files import nothing but Airflow, the standard library and each other; the
   argv a task builds for a gs:// output root and Dataflow's flags is the one expected.
2. microturn_dataset on the demo call (``--inputs``) with ``dag.test()``: every task succeeds and
   leaves its output under ``{output_root}/{run}``.
3. Retry: the same DAG run again (same logical date, so the same run id and folders: every task
   rerun into its own earlier output, as a retry or a cleared task does); the outputs must be
   byte-identical, but for the catalog and the live sessions' records, compared by content.
4. Loud failure: a run whose input matches nothing must fail at ingest, with nothing downstream run.
5. microturn_train on the dataset run's shards (a few tiny-cpu steps), then the same retry check.
"""
# Airflow lives in .venv-airflow, apart from the .venv that pyright reads; its imports cannot resolve there.
# pyright: reportMissingImports=false

from __future__ import annotations

import argparse
import ast
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

CHECKS = 6  # parse, dataset run, its retry, the no-input failure, train run, its retry
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAGS = os.path.join(REPO, "dags")
DAG_MODULES = {"microturn_ops", "microturn_dataset", "microturn_train"}
EXPECTED = {
    "microturn_dataset": [("ingest", "fit_timing"), ("fit_timing", "synthesize"), ("synthesize", "shard"),
                          ("shard", "catalog"), ("catalog", "audit_report")],
    "microturn_train": [("train", "eval_model"), ("eval_model", "eval_interaction"),
                        ("eval_items", "eval_interaction")],
}
# Outputs a rerun rewrites with other bytes but the same content, and how that content is read.
# The catalog: DuckDB's file layout changes with every build; its tables' rows are compared.
CATALOG = "catalog.duckdb"
REPORT = os.path.join("report", "index.html")  # compared without its build and render times
# A live session's records: the compute time of each chunk is measured, so it differs from run to
# run, as do the chunks over budget and the name of the temporary words file; everything else
# (the text, p_speak, the audio beside them) must be identical.
SESSION_FILES = ("session.json", "timeline.jsonl")
MEASURED = {"compute_ms", "chunks_over_budget", "user_text"}


def fail(message: str) -> None:
    print(f"dags-test: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check_imports() -> None:
    """Every import in the DAG files (at any depth) is Airflow, the standard library or a DAG module."""
    allowed = set(sys.stdlib_module_names) | {"__future__", "airflow"} | DAG_MODULES
    for path in sorted(glob.glob(os.path.join(DAGS, "*.py"))):
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                if name.split(".")[0] not in allowed:
                    fail(f"{os.path.relpath(path, REPO)} imports {name}: DAG files import Airflow and the stdlib only")


def load_dags() -> dict:
    from pathlib import Path

    from airflow.dag_processing.dagbag import BundleDagBag

    # As the dag processor and the workers load a bundle: its folder goes on sys.path, so the DAG
    # files import their shared module (microturn_ops) by name.
    bag = BundleDagBag(dag_folder=DAGS, bundle_path=Path(DAGS), bundle_name="dags-folder")
    if bag.import_errors:
        fail(f"the dags folder does not load: {bag.import_errors}")
    if set(bag.dags) != set(EXPECTED):
        fail(f"DAGs {sorted(bag.dags)}, expected {sorted(EXPECTED)}")
    for dag_id, edges in EXPECTED.items():
        dag = bag.dags[dag_id]
        found = sorted((t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids)
        if found != sorted(edges):
            fail(f"{dag_id} has the edges {found}, expected {sorted(edges)}")
        kinds = {type(t).__name__ for t in dag.tasks}
        if kinds != {"MicroturnOperator"}:
            fail(f"{dag_id} runs {kinds}; every task is a MicroturnOperator (an argv, no shell)")
    print(f"dags-test: parsed {sorted(bag.dags)}: edges as expected, imports airflow + stdlib only")
    return bag.dags


def check_argv(dags: dict) -> None:
    """The argv a remote run would get: a gs:// root, Dataflow's flags, a file name like an option."""
    from airflow.sdk.exceptions import AirflowFailException
    from microturn_ops import Run

    params = {**{k: v.value for k, v in dags["microturn_dataset"].params.items()},
              "output_root": "gs://bucket/root", "local_root": "/srv/microturn",
              "inputs": ["gs://bucket/calls/-v *.wav"], "beam_args": ["--runner=DataflowRunner", "--project=p"]}
    run = Run.of(params, "manual__2026-01-01T00:00:00+00:00")
    if (run.out, run.local) != ("gs://bucket/root/manual__2026-01-01T00_00_00_00_00",
                                "/srv/microturn/manual__2026-01-01T00_00_00_00_00"):
        fail(f"run folders {run}")
    tasks = dags["microturn_dataset"].task_dict
    for task_id in ("ingest", "synthesize", "shard"):
        argv = tasks[task_id].args(params, run)
        if argv[-2:] != params["beam_args"] or not all(a.startswith(("gs://", "--", params["microturn"]))
                                                       or a in ("ingest", "synthesize", "shard") for a in argv):
            fail(f"{task_id}'s argv {argv}: beam_args last, every path under the gs:// root")
    if "--input=gs://bucket/calls/-v *.wav" not in tasks["ingest"].args(params, run):
        fail("an input must reach ingest as one --input=VALUE item")
    catalog = tasks["catalog"].args(params, run)
    if catalog[3] != "--catalog=/srv/microturn/manual__2026-01-01T00_00_00_00_00/catalog.duckdb":
        fail(f"the catalog goes under local_root: {catalog}")
    try:
        Run.of({**params, "output_root": "relative/out"}, "r")
    except AirflowFailException:
        pass
    else:
        fail("a relative output_root must fail the task")
    print("dags-test: argv for a gs:// root and Dataflow flags: paths under the root, beam_args last, "
          "a name like an option stays one --input=VALUE item")


def run(dag, when: datetime, conf: dict, *, expect: str = "success"):
    """One DAG run with dag.test(): the same ``when`` gives the same run id, hence the same folders."""
    started = time.monotonic()
    # A manual run's id is made from run_after (logical_date only picks the run that a rerun replaces).
    dr = dag.test(logical_date=when, run_after=when, run_conf=conf)
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    print(f"dags-test: {dag.dag_id} {dr.run_id}: {dr.state} in {time.monotonic() - started:.1f} s; {states}")
    if str(dr.state) != expect:
        fail(f"{dag.dag_id} run {dr.run_id} ended {dr.state}, expected {expect}")
    return dr, states


def folder_of(root: str, run_id: str) -> str:
    """The run folder the DAGs derive from a run id (dags/microturn_ops.run_folder)."""
    return os.path.join(root, re.sub(r"[^A-Za-z0-9._-]", "_", run_id))


def snapshot(folder: str) -> dict[str, str]:
    """sha256 of every file under ``folder`` but the stages' lock files (their content is a pid)."""
    digests = {}
    for base, _, files in os.walk(folder):
        for name in files:
            if name == ".microturn.lock":
                continue
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def session_content(path: str) -> list[dict]:
    """A session.json or timeline.jsonl without the measured fields (MEASURED)."""
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()] if path.endswith(".jsonl") else [json.load(f)]
    return [{k: v for k, v in r.items() if k not in MEASURED} for r in records]


def compare(folder: str, before: dict[str, str], after: dict[str, str], what: str, *, saved: dict) -> None:
    """The rerun's files against the first run's: same names, same bytes or (see above) same content."""
    if set(before) != set(after):
        fail(f"{what}: the rerun changed the file set: +{sorted(set(after) - set(before))} "
             f"-{sorted(set(before) - set(after))}")
    changed = sorted(p for p in before if before[p] != after[p])
    for path in changed:
        if path in saved and saved[path] == read_content(folder, path):
            continue
        fail(f"{what}: the rerun changed {path}")
    shown = ", ".join(changed[:2]) + (", ..." if len(changed) > 2 else "")
    print(f"dags-test: {what}: rerun left {len(before)} file(s), {len(before) - len(changed)} byte-identical"
          + (f", {len(changed)} with the same content ({shown})" if changed else ""))


def content_files(digests: dict[str, str]) -> list[str]:
    """The files whose content, not bytes, a rerun must repeat."""
    return [p for p in digests if p in (CATALOG, REPORT) or os.path.basename(p) in SESSION_FILES]


def read_content(folder: str, path: str) -> object:
    full = os.path.join(folder, path)
    if path == REPORT:
        # The report shows when the catalog was built and when it was rendered, each in a <time>
        # element; everything else on the page must repeat.
        with open(full, encoding="utf-8") as f:
            return re.sub(r"<time>[^<]*</time>", "<time></time>", f.read())
    return catalog_rows(_MICROTURN[0], full) if path == CATALOG else session_content(full)


_MICROTURN: list[str] = []  # the project's command, set by main


def catalog_rows(microturn: str, catalog: str) -> str:
    """Every table's rows, sorted, as CSV: the catalog's content, whatever its file layout."""
    tables = ["sources", "conversations", "segments", "words", "events", "rejects", "samples", "shards"]
    out = []
    for table in tables:
        sql = f"SELECT * FROM {table} ORDER BY ALL"
        out.append(subprocess.run([microturn, "audit", f"--catalog={catalog}", "--format=csv", "--", sql],
                                  check=True, capture_output=True, text=True).stdout)
    return "\n".join(out)


def retried(dag, when: datetime, conf: dict, folder: str) -> None:
    """Run ``dag`` again as it ran at ``when`` (every task into its own earlier output); same outputs."""
    before = snapshot(folder)
    saved = {p: read_content(folder, p) for p in content_files(before)}
    run(dag, when, conf)
    compare(folder, before, snapshot(folder), f"{dag.dag_id} retried", saved=saved)


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--work", required=True, help="scratch folder (outputs of the runs)")
    p.add_argument("--microturn", required=True, help="the project's microturn command")
    p.add_argument("--inputs", required=True, help="folder with the demo call (call.wav + call.stm)")
    args = p.parse_args()
    _MICROTURN.append(args.microturn)
    started = time.monotonic()

    check_imports()
    dags = load_dags()
    check_argv(dags)
    out = os.path.join(args.work, "out")
    common = {"microturn": args.microturn, "output_root": out}
    day = datetime(2026, 1, 1, tzinfo=UTC)

    # A small dataset: the 30 s demo call, its remix and two generated dialogues (the demo makes six).
    dataset_conf = {**common, "inputs": [os.path.join(args.inputs, "*.wav")], "generate": 2,
                    "beam_args": ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]}
    dr, _ = run(dags["microturn_dataset"], day, dataset_conf)
    dataset = folder_of(out, dr.run_id)
    for want in ("ingest/conversations", "timing.json", "synth/conversations", "shards/train",
                 "catalog.duckdb", "report/index.html"):
        if not os.path.exists(os.path.join(dataset, want)):
            fail(f"microturn_dataset left no {want} in {dataset}")
    retried(dags["microturn_dataset"], day, dataset_conf, dataset)

    nothing = {**dataset_conf, "inputs": [os.path.join(args.work, "no-such-folder", "*.wav")]}
    dr, states = run(dags["microturn_dataset"], day + timedelta(days=1), nothing, expect="failed")
    downstream = {t: state for t, state in states.items() if t != "ingest"}
    if states["ingest"] != "failed" or set(downstream.values()) != {"upstream_failed"}:
        fail(f"a run with no input should fail at ingest and run nothing else: {states}")
    if os.path.exists(os.path.join(folder_of(out, dr.run_id), "synth")):
        fail("a run with no input reached synthesize")
    print("dags-test: an input that matches nothing fails the run at ingest (the stage's non-zero exit), "
          "nothing downstream ran")

    # Four conversations give no reliable held-out split: the split is a hash of the conversation
    # id, and synthetic ids depend on the paths of the run (its timing.json), so 1% valid and test
    # splits are almost always empty. The run evaluates on the train split instead: the DAG is the
    # same, only the split params differ. Items: one turn-taking item per conversation.
    train_conf = {**common, "dataset": dataset, "train_overrides": ["train.steps=4", "train.ckpt_every=4"],
                  "eval_split": "train", "items_split": "train",
                  "items_args": ["--tasks=smooth_turn_taking", "--max-per-conversation=1"]}
    dr, _ = run(dags["microturn_train"], day + timedelta(days=2), train_conf)
    trained = folder_of(out, dr.run_id)
    scores = json.load(open(os.path.join(trained, "eval_model.json"), encoding="utf-8"))
    report = json.load(open(os.path.join(trained, "interaction", "report.json"), encoding="utf-8"))
    if scores.get("step") != 4 or not report:
        fail(f"microturn_train: eval_model.json step {scores.get('step')}, interaction report {sorted(report)}")
    retried(dags["microturn_train"], day + timedelta(days=2), train_conf, trained)
    print(f"dags-test: the checks took {time.monotonic() - started:.0f} s")
    # The plain closing line CI reads: the six checks of the docstring (any failure exits above).
    print(f"dags-test: {CHECKS} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
