"""Benchmark of the stages at corpus scale: peak memory of the shard stage per worker and of
``catalog build`` as the corpus grows, and shard throughput on the portable runner.

    python bench/scale.py [--hours 1,10,50] [--throughput-hours 10] [--shard-bytes 16MiB] [--work DIR]

Corpus (cheap to make): one record of the real two-person call shipped with pyannote.audio,
looped to 300 s (:func:`microturn.testing.records.real_call`), written once; every other
conversation is a copy of its rows under a new id whose media are hard links to the same FLAC.
The shard stage does the full work for each (decode, dMel, windows, tars); only making the
corpus is cheap.

1. Memory against corpus size. For each size: the shard stage on the PortableRunner (a local job
   service and an external pool with one SDK worker, :mod:`microturn.testing.portable`): the
   worker's peak resident memory (``VmHWM``) and the job service's, and ``microturn catalog build``
   over the records and the shards (peak RSS of that process). Shards of ``--shard-bytes``
   (16 MiB, so writer buckets of 64 MiB: a 50 h corpus at the default 512 MiB would fill 5 shards
   and never leave the first bucket). Goal: the worker's and the catalog's peak stay within
   1.5x from the smallest corpus to the largest. The job service stands in for a cluster's
   shuffle service and holds every PCollection in memory; it is reported, not a goal.
2. Shard throughput on ``--throughput-hours``: the DirectRunner (in process, the baseline), the
   portable runner with 1 worker and with 2 workers, as conversation seconds per wall second
   and as ratios to the DirectRunner, in the same run.

Writes ``scale.json`` and ``scale.png`` (memory against hours) under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import pyarrow.parquet as pq

from microturn.pipelines.media import encode_flac
from microturn.pipelines.tables import ROW_GROUP_ROWS
from microturn.schemas import validate_rows
from microturn.testing.files import tree
from microturn.testing.portable import portable_runner, watch_workers
from microturn.testing.records import real_call

CONVERSATION_S = 300
MICROTURN = os.path.join(os.path.dirname(sys.executable), "microturn")


def build_corpus(root: str, hours: float) -> int:
    """Write ``hours`` of conversations of 300 s under ``root``; returns how many. Tables are
    written a conversation at a time in row groups of the stages' size
    (:data:`microturn.pipelines.tables.ROW_GROUP_ROWS`), as an ingest output of that size would
    be, and this process never holds more than one conversation's rows."""
    n = max(1, round(hours * 3600 / CONVERSATION_S))
    template = real_call("c-template", seconds=CONVERSATION_S)
    os.makedirs(os.path.join(root, "media"), exist_ok=True)
    flac = os.path.join(root, "template.flac")
    with open(flac, "wb") as f:
        f.write(encode_flac(template["audio"]["mix.flac"]))
    writers: dict[str, pq.ParquetWriter] = {}
    pending: dict[str, list[dict]] = {t: [] for t in ("conversations", "segments", "words", "events")}

    def flush(table: str, force: bool = False) -> None:
        rows = pending[table]
        while len(rows) >= ROW_GROUP_ROWS or (force and rows):
            part = validate_rows(table, rows[:ROW_GROUP_ROWS])
            if table not in writers:
                os.makedirs(os.path.join(root, table))
                writers[table] = pq.ParquetWriter(os.path.join(root, table, "part-00000-of-00001.parquet"), part.schema)
            writers[table].write_table(part, row_group_size=ROW_GROUP_ROWS)
            del rows[:ROW_GROUP_ROWS]

    for c in range(n):
        cid = f"c-{c:016x}"
        conv = {**template["conversation"], "conversation_id": cid, "source_uri": f"file:///{cid}",
                "media_dir": f"media/{cid}"}
        os.makedirs(os.path.join(root, conv["media_dir"]))
        os.link(flac, os.path.join(root, conv["media_dir"], "mix.flac"))
        pending["conversations"].append(conv)
        for table in ("segments", "words", "events"):
            pending[table] += [{**row, "conversation_id": cid} for row in template[table]]
        for table in pending:
            flush(table)
    for table in pending:
        flush(table, force=True)
        writers[table].close()
    return n


def _peak(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def run_measured(argv: list[str]) -> tuple[float, int]:
    """Run a command (no shell); returns (wall seconds, its peak resident memory in bytes).

    The peak is the process's own ``VmHWM``, read every 20 ms while it runs (not ``ru_maxrss``,
    which on Linux also counts the memory of the parent it was forked from)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    err = b""
    reader = threading.Thread(target=lambda: _drain(proc, chunks), daemon=True)
    chunks: list[bytes] = []
    reader.start()
    while proc.poll() is None:
        peak = max(peak, _peak(proc.pid) or 0)
        time.sleep(0.02)
    wall = time.perf_counter() - started
    reader.join()
    err = b"".join(chunks)
    if proc.returncode:
        raise SystemExit(f"{argv[:3]} failed ({proc.returncode}):\n{err.decode(errors='replace')[-3000:]}")
    return wall, peak


def _drain(proc: subprocess.Popen, chunks: list[bytes]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        chunks.append(line)


def job_service_peak(pid: int) -> int:
    peak = _peak(pid)
    if peak is None:
        raise RuntimeError(f"the job service (pid {pid}) is gone")
    return peak


def shard_portable(records: str, out: str, *, workers: int, shard_bytes: str) -> dict:
    with portable_runner(workers=workers) as cluster:
        with watch_workers(cluster) as seen:
            wall, _ = run_measured([MICROTURN, "shard", "--input", records, "--output", out, "--no-video",
                                    "--shard-bytes", shard_bytes, *cluster.flags])
        return {"wall_s": wall, "workers_seen": seen.max_alive,
                "worker_peak_rss": max(seen.peak_rss.values(), default=0),
                "job_service_peak_rss": job_service_peak(cluster.job_service.pid)}


def plot(results: list[dict], path: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    hours = [r["hours"] for r in results]
    for key, label in (("worker_peak_rss", "shard: SDK worker"), ("catalog_peak_rss", "catalog build"),
                       ("job_service_peak_rss", "shard: job service (runner)")):
        ax.plot(hours, [r[key] / 2**20 for r in results], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("corpus (hours of conversation)")
    ax.set_ylabel("peak resident memory (MiB)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--hours", default="1,10,50", help="corpus sizes in hours (default 1,10,50)")
    p.add_argument("--throughput-hours", type=float, default=10.0, help="corpus of the throughput runs")
    p.add_argument("--shard-bytes", default="16MiB", help="target shard size (default 16MiB)")
    p.add_argument("--work", help="working folder (default: a temporary one, removed)")
    args = p.parse_args(argv)
    sizes = sorted(float(h) for h in args.hours.split(","))
    with tempfile.TemporaryDirectory(prefix="microturn-scale-") as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        results = []
        for hours in sizes:
            base = os.path.join(work, f"{hours:g}h")
            n = build_corpus(os.path.join(base, "records"), hours)
            shard = shard_portable(os.path.join(base, "records"), os.path.join(base, "shards"), workers=1,
                                   shard_bytes=args.shard_bytes)
            _, catalog_rss = run_measured([MICROTURN, "catalog", "build", "--catalog",
                                           os.path.join(base, "catalog.duckdb"), os.path.join(base, "records"),
                                           os.path.join(base, "shards")])
            row = {"hours": n * CONVERSATION_S / 3600, "conversations": n, **shard, "catalog_peak_rss": catalog_rss,
                   "realtime_x": n * CONVERSATION_S / shard["wall_s"]}
            results.append(row)
            print(f"{row['hours']:6.1f} h  shard worker {row['worker_peak_rss'] / 2**20:7.0f} MiB  "
                  f"job service {row['job_service_peak_rss'] / 2**20:7.0f} MiB  "
                  f"catalog build {catalog_rss / 2**20:6.0f} MiB  ({row['realtime_x']:.0f}x realtime, 1 worker)",
                  flush=True)
        first, last = results[0], results[-1]
        growth = {k: last[k] / first[k] for k in ("worker_peak_rss", "catalog_peak_rss", "job_service_peak_rss")}
        print(f"peak memory {last['hours']:g} h / {first['hours']:g} h: shard worker {growth['worker_peak_rss']:.2f}x, "
              f"catalog build {growth['catalog_peak_rss']:.2f}x (goal <= 1.5x both); "
              f"job service {growth['job_service_peak_rss']:.2f}x (not a goal)")

        base = os.path.join(work, "throughput")
        n = build_corpus(os.path.join(base, "records"), args.throughput_hours)
        seconds = n * CONVERSATION_S
        direct_s, direct_rss = run_measured([MICROTURN, "shard", "--input", os.path.join(base, "records"), "--output",
                                             os.path.join(base, "direct"), "--no-video", "--shard-bytes",
                                             args.shard_bytes])
        through = {"hours": seconds / 3600, "direct": {"wall_s": direct_s, "realtime_x": seconds / direct_s,
                                                       "peak_rss": direct_rss}}
        print(f"throughput on {seconds / 3600:g} h: DirectRunner {seconds / direct_s:.0f}x realtime "
              f"(peak {direct_rss / 2**20:.0f} MiB, runner and worker in one process)", flush=True)
        for workers in (1, 2):
            r = shard_portable(os.path.join(base, "records"), os.path.join(base, f"portable{workers}"),
                               workers=workers, shard_bytes=args.shard_bytes)
            r["realtime_x"] = seconds / r["wall_s"]
            through[f"portable_{workers}"] = r
            print(f"  portable, {workers} worker(s) (seen {r['workers_seen']}): {r['realtime_x']:.0f}x realtime, "
                  f"{direct_s / r['wall_s']:.2f}x the DirectRunner's speed", flush=True)
        same = all(_same_tree(os.path.join(base, "direct"), os.path.join(base, f"portable{w}")) for w in (1, 2))
        print(f"  shards and tables byte-identical across the three runs: {same}")
        report = {"memory": results, "growth": growth, "throughput": through, "byte_identical": same,
                  "shard_bytes": args.shard_bytes}
        with open(os.path.join(work, "scale.json"), "w") as f:
            json.dump(report, f, indent=1)
        plot(results, os.path.join(work, "scale.png"))
        print(f"wrote {os.path.join(work, 'scale.json')} and scale.png")
    return 0


def _same_tree(a: str, b: str) -> bool:
    return tree(a) == tree(b)


if __name__ == "__main__":
    raise SystemExit(main())
