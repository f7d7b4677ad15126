"""Real recordings with reference diarization as conversation records, for the turn-taking figures.

::

    python bench/rttm_records.py --input ../shared/data/ami-dev --output OUT

Each ``{uri}.flac`` / ``.wav`` with an ``{uri}.rttm`` beside it becomes one real, one-channel
conversation whose segments are the RTTM's speaker turns (no words): what an ingest with a
perfect diarizer and no transcript writes. The shard stage then labels it with the same VOICED
rule as every other record (speech activity inside each speaker's segments), so that the
shift/hold events of real meetings can be counted and scored against reference speaker turns,
independently of the diarizer's errors on far-field meetings (``microturn ingest`` on ami-dev
with the embedded diarizer finds 14 of its 33 speakers).

Then::

    microturn shard --input OUT --output SHARDS --window-chunks 50 --splits test=1 --no-video
    microturn eval model --checkpoint RUN --shards 'SHARDS/test/*.tar'   # n_shift, n_hold, scores

Array suffix: N audio samples (16 kHz).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import sys

import numpy as np

from microturn.pipelines.duplex.audio import read_mono_N
from microturn.schemas.ids import conversation_id
from microturn.schemas.turns import Turn
from microturn.testing.records import mixed_record, write_records


def read_rttm(path: str) -> list[Turn]:
    """The SPEAKER lines of an RTTM file as turns (ms)."""
    turns = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0] != "SPEAKER":
                continue
            if len(parts) < 8:
                raise ValueError(f"{path}:{n}: an RTTM SPEAKER line has at least 8 fields, got {len(parts)}")
            start, duration = float(parts[3]), float(parts[4])
            turns.append(Turn(parts[7], round(start * 1000), round((start + duration) * 1000), 0))
    return turns


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0], allow_abbrev=False)
    p.add_argument("--input", required=True, help="a folder of {uri}.flac/.wav with {uri}.rttm beside each")
    p.add_argument("--output", required=True, help="records folder to write (must not exist)")
    args = p.parse_args(argv)
    if os.path.exists(args.output):
        print(f"--output {args.output} exists; give a new folder", file=sys.stderr)
        return 2
    rttms = sorted(glob.glob(os.path.join(glob.escape(args.input), "*.rttm")))
    if not rttms:
        print(f"--input {args.input} holds no .rttm file", file=sys.stderr)
        return 2
    records = []
    for rttm in rttms:
        stem = rttm[: -len(".rttm")]
        audio = next((stem + ext for ext in (".flac", ".wav") if os.path.isfile(stem + ext)), None)
        if audio is None:
            print(f"{rttm}: no .flac or .wav beside it", file=sys.stderr)
            return 2
        with open(audio, "rb") as f:
            cid = conversation_id(hashlib.sha256(f.read()).hexdigest())
        wave_N = read_mono_N(audio)
        records.append(mixed_record(cid, np.asarray(wave_N, np.float32), read_rttm(rttm)))
        print(f"{os.path.basename(stem)} -> {cid}: {len(records[-1]['conversation']['speakers'])} speakers, "
              f"{len(records[-1]['segments'])} turns")
    write_records(args.output, records)
    print(f"wrote {len(records)} conversations to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
