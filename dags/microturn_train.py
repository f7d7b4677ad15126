"""microturn_train: train on a dataset run's shards, then evaluate the model.

train → eval_model (held-out loss per head and shift/hold scores) → eval_interaction (the model
against a VAD-gated cascade and the reference speaker on duplex items), with eval_items (the
items, cut from the dataset's records) beside train.

``dataset`` is a run folder of microturn_dataset (``ingest/``, ``synth/``, ``shards/``). A run
writes under ``{output_root}/{run_name or run id}/``: ``run/`` (metrics, checkpoints),
``eval_model.json``, ``items/``, ``interaction/`` (report.json, report.html). ``train_launcher``
replaces ``microturn train`` with another launcher of the same trainer, e.g.
``["/repo/.venv/bin/torchrun", "--nproc_per_node=8", "-m", "microturn.trainer"]``.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, chain
from airflow.sdk.definitions.param import ParamsDict  # not in airflow.sdk's type stub
from microturn_ops import DEFAULT_MICROTURN, DEFAULT_OUTPUT_ROOT, MicroturnOperator, Run, absolute, flag, join


def _strings(description: str) -> Param:
    return Param([], type="array", items={"type": "string"}, description=description)


def _text(default: str, description: str) -> Param:
    return Param(default, type="string", description=description)


def _shards(p: dict, split: str) -> str:
    return join(absolute(p["dataset"], "dataset"), "shards", split, "*.tar")


# One function per task, as in microturn_dataset: the params and the run's folders in, the argv out.
def train(p: dict, run: Run) -> list[str]:
    launcher = p["train_launcher"] or [p["microturn"], "train"]
    # Overrides are `section.key=value` positionals; `--` keeps one that starts with a dash from
    # being read as a flag. A rerun resumes from the run's latest checkpoint: a finished run
    # trains no further step and keeps its outputs.
    return [*launcher, f"--config={p['train_config']}", f"--shards={_shards(p, p['train_split'])}",
            f"--output={run('run')}", "--no-progress", "--", *p["train_overrides"]]


def eval_model(p: dict, run: Run) -> list[str]:
    return [p["microturn"], "eval", "model", f"--checkpoint={run('run')}",
            f"--shards={_shards(p, p['eval_split'])}", "--json", *p["eval_model_args"]]


def eval_items(p: dict, run: Run) -> list[str]:
    dataset = absolute(p["dataset"], "dataset")
    return [p["microturn"], "eval", "items", f"--output={run('items')}", f"--split={p['items_split']}",
            *p["items_args"], "--records", join(dataset, "ingest"), join(dataset, "synth")]


def eval_interaction(p: dict, run: Run) -> list[str]:
    return [p["microturn"], "eval", "interaction", f"--checkpoint={run('run')}", f"--items={run('items')}",
            f"--output={run('interaction')}", f"--seed={p['seed']}", "--no-progress",
            *flag("--config", p["interaction_config"]), *flag("--systems", p["systems"])]


with DAG(
    dag_id="microturn_train",
    description="train → eval model → interaction evaluation, on a microturn_dataset run",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    tags=["microturn"],
    default_args={"retries": 0},  # as in microturn_dataset: safe to retry, none by default
    params=ParamsDict({
        "microturn": _text(DEFAULT_MICROTURN, "the microturn command on the workers (the project's .venv)"),
        "dataset": _text("", "a microturn_dataset run folder (absolute path), holding ingest/, synth/, shards/"),
        "output_root": _text(DEFAULT_OUTPUT_ROOT, "absolute local path; a run writes under {output_root}/{run}"),
        "run_name": _text("", "the run's folder name (default: the run id)"),
        "train_launcher": _strings("argv that replaces `microturn train` (e.g. torchrun ... -m microturn.trainer)"),
        "train_config": _text("tiny-cpu", "named config (tiny-cpu, turn-taking-cpu, small-gpu) or a TOML path"),
        "train_overrides": _strings("section.key=value overrides, e.g. train.steps=200"),
        "train_split": _text("train", "the shard split trained on"),
        "eval_split": _text("valid", "the held-out shard split of eval model"),
        "eval_model_args": _strings("more eval model flags, e.g. --without-user-text"),
        "items_split": _text("test", "the records' split the duplex items come from"),
        "items_args": _strings("more eval items flags, e.g. --max-per-conversation=2 --splits=..."),
        "interaction_config": _text("", "the session's settings TOML for eval interaction (empty: defaults)"),
        "systems": _text("", "eval interaction --systems (empty: model,cascade,reference)"),
        "seed": Param(0, type="integer", description="the session's seed in eval interaction"),
    }),
):
    trained = MicroturnOperator(task_id="train", args=train)
    scored = MicroturnOperator(task_id="eval_model", args=eval_model, stdout_to="eval_model.json")
    items = MicroturnOperator(task_id="eval_items", args=eval_items)
    interaction = MicroturnOperator(task_id="eval_interaction", args=eval_interaction)
    chain(trained, scored, interaction)
    interaction.set_upstream(items)
