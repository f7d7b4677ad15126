"""Benchmark of the command line: wall time of ``microturn <command> --help`` for every command.

    python bench/cli.py [--repeats 7] [--json report.json]

Each command runs as a new process, as a user types it (``python -m microturn.cli.main ...``,
the console script's code path), ``--repeats`` times; the median and the fastest run are
printed beside the median of ``python -c pass`` measured in the same run, and their ratio to it:
the interpreter's own start-up is the floor no command can go under, and the ratio shows what a
command adds whatever the machine's load. Goal: every median under 0.5 s (the parsers import
neither Beam, torch nor DuckDB; ``tests/test_cli.py`` checks that laziness itself).

The load average is printed at the start and the end: the figures are only as quiet as the
machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# Every command and subcommand, as typed after `microturn`.
COMMANDS = (
    (), ("ingest",), ("synthesize",), ("synthesize", "stats"), ("synthesize", "fit"), ("shard",),
    ("catalog",), ("catalog", "build"), ("audit",), ("audit", "report"), ("train",), ("train", "plot"),
    ("eval",), ("eval", "diarization"), ("eval", "words"), ("eval", "model"), ("eval", "duplex"),
    ("eval", "interaction"), ("eval", "items"), ("export",), ("export", "lhotse"), ("import",),
    ("import", "lhotse"), ("session",), ("demo",),
)
GOAL_S = 0.5


def _time(argv: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    p.add_argument("--repeats", type=int, default=7, help="runs per command (default 7)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    base = statistics.median(_time([sys.executable, "-c", "pass"], args.repeats))
    print(f"python -c pass: median {base:.3f} s\n")
    print(f"{'command':<40} {'median s':>9} {'fastest s':>10} {'x start-up':>11}")
    rows = []
    for command in COMMANDS:
        times = _time([sys.executable, "-m", "microturn.cli.main", *command, "--help"], args.repeats)
        median = statistics.median(times)
        name = " ".join(("microturn", *command, "--help"))
        rows.append({"command": name, "median_s": median, "fastest_s": min(times), "ratio": median / base})
        mark = "" if median < GOAL_S else f"  over {GOAL_S} s"
        print(f"{name:<40} {median:>9.3f} {min(times):>10.3f} {median / base:>11.1f}{mark}")
    worst = max(rows, key=lambda r: r["median_s"])
    print(f"\nslowest: {worst['command']} {worst['median_s']:.3f} s (goal: under {GOAL_S} s)")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"python_start_s": base, "commands": rows}, f, indent=1)
    return 0 if worst["median_s"] < GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
