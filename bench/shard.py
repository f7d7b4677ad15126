"""Benchmark of the shard stage: throughput, writer speed, dMel speed and bytes per hour.

    python bench/shard.py [--conversations 12] [--seconds 300] [--repeats 2]

Corpus: the real two-person call shipped with pyannote.audio, looped to ``--seconds`` per
conversation with a different gain each, its reference diarization (RTTM) and transcript (STM,
words spread over each utterance) looped with it. Half the conversations are mixed recordings
(one channel, gated by the diarization in the shard stage), half per-speaker (the call split
into two channels by the RTTM). Written straight to disk as an ingest output is laid out
(:func:`microturn.testing.records.real_call`, :func:`~microturn.testing.records.write_records`).

1. Shard throughput (audio only): ``microturn shard`` end to end (Beam start included) in
   conversation seconds per wall second and tar MB/s, best of ``--repeats``. Baseline in the
   same run: writing the same sample bytes (read back from the shards) with plain ``tarfile``;
   the writer figure is the project's ``TarWriter`` (fixed metadata, offsets, two SHA-256) on
   those bytes against that baseline. Goals: at least 300x realtime; writer at least 0.7.
2. dMel against torchaudio's MelSpectrogram with the same parameters (``bench/shard_dmel.py``).
   Goal: at most 1.2x its time.
3. Bytes per hour of conversation, audio only and with video (a 640x360 test pattern, 10 fps
   normalised, default patch budget), against the media they came from (16 kHz FLAC plus the
   normalised video).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings

from microturn.pipelines import media
from microturn.pipelines.shard.run import run as shard
from microturn.pipelines.shard.tar import TarWriter, sample_blob
from microturn.testing.records import real_call, write_records

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shard_dmel import measure as measure_dmel  # noqa: E402


def build_corpus(root: str, *, conversations: int, seconds: int) -> float:
    """Write the corpus under ``root``; returns its hours of conversation."""
    write_records(root, (real_call(f"c-{c:016x}", seconds=seconds, gain=0.5 + 0.4 * c / max(1, conversations - 1),
                                   per_speaker=c % 2 == 1) for c in range(conversations)))
    return conversations * seconds / 3600


def dir_bytes(root: str, suffixes: tuple[str, ...]) -> int:
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(root) for n in names
               if n.endswith(suffixes))


def read_members(tars: list[str]) -> list[list[tuple[str, bytes]]]:
    """Samples (lists of members) of the shards, for the writer baseline."""
    samples, current, key = [], [], None
    for path in tars:
        with tarfile.open(path) as tar:
            for m in tar:
                k = m.name.split(".", 1)[0]
                if k != key and current:
                    samples.append(current)
                    current = []
                key = k
                member = tar.extractfile(m)
                assert member is not None, m.name  # the shard writer writes regular files only
                current.append((m.name, member.read()))
    if current:
        samples.append(current)
    return samples


def time_writers(samples, tmp: str, repeats: int) -> dict:
    total = sum(len(d) for s in samples for _, d in s)

    def plain():
        with tarfile.open(os.path.join(tmp, "plain.tar"), "w") as tar:
            for s in samples:
                for name, data in s:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))

    blobs = [sample_blob(s) for s in samples]

    def writer():
        # What WriteShard does: append the samples' blobs (made in MakeSamples), hash the file.
        with open(os.path.join(tmp, "ours.tar"), "wb") as f:
            w = TarWriter(f)
            for b in blobs:
                w.add_blob(b)
            w.close()

    def whole():
        # Writer plus the work moved into MakeSamples: headers, blobs and per-sample SHA-256.
        with open(os.path.join(tmp, "ours.tar"), "wb") as f:
            w = TarWriter(f)
            for s in samples:
                w.add(s)
            w.close()

    best = {"plain": float("inf"), "writer": float("inf"), "whole": float("inf")}
    for _ in range(repeats * 3):
        for name, fn in (("plain", plain), ("writer", writer), ("whole", whole)):
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    mb = total / 1e6
    return {"payload_mb": mb, "plain_mb_s": mb / best["plain"], "writer_mb_s": mb / best["writer"],
            "whole_mb_s": mb / best["whole"], "writer_ratio": best["plain"] / best["writer"],
            "whole_ratio": best["plain"] / best["whole"]}


def video_bytes(tmp: str) -> dict:
    """Bytes per hour with video: one 120 s record with a normalised 640x360 test-pattern video."""
    src, normalised = os.path.join(tmp, "pattern.mp4"), os.path.join(tmp, "pattern-10fps.mp4")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=640x360:rate=25", "-t", "120", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", src], check=True)
    stream = media.probe(src).video
    assert stream is not None, "ffmpeg's test pattern has a video stream"
    media.normalise_video(src, normalised, stream=stream)
    cid = "c-0000000000000000"
    root = write_records(os.path.join(tmp, "video_rec"), [real_call(cid, seconds=120, gain=0.5)],
                         video={cid: normalised})
    out = os.path.join(tmp, "video_shards")
    started = time.perf_counter()
    shard(["--input", root, "--output", out, "--splits", "train=1"], print_summary=False)
    wall = time.perf_counter() - started
    hours = 120 / 3600
    return {"tar_mb_per_h": dir_bytes(out, (".tar",)) / 1e6 / hours,
            "media_mb_per_h": dir_bytes(os.path.join(root, "media"), (".flac", ".mp4")) / 1e6 / hours,
            "realtime": 120 / wall}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conversations", type=int, default=12)
    p.add_argument("--seconds", type=int, default=300)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--dmel-seconds", type=float, default=600.0)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="bench-shard-") as tmp:
        rec = os.path.join(tmp, "records")
        hours = build_corpus(rec, conversations=args.conversations, seconds=args.seconds)
        print(f"corpus: {args.conversations} conversations x {args.seconds} s = {hours:.2f} h "
              f"({dir_bytes(rec, ('.flac',)) / 1e6:.1f} MB of FLAC)")
        runs = {"in-process": [], "multi_threading x2": ["--direct_num_workers=2",
                                                         "--direct_running_mode=multi_threading"]}
        best = {}
        for _ in range(args.repeats):
            for label, extra in runs.items():
                out = os.path.join(tmp, "shards")
                started = time.perf_counter()
                shard(["--input", rec, "--output", out, "--splits", "train=1", *extra], print_summary=False)
                wall = time.perf_counter() - started
                best[label] = min(best.get(label, float("inf")), wall)
        tar_bytes = dir_bytes(os.path.join(tmp, "shards"), (".tar",))
        print("\n1. shard throughput (audio only, end to end, best of", args.repeats, "runs)")
        for label, wall in best.items():
            print(f"   {label:<20} {hours * 3600 / wall:7.0f}x realtime  {tar_bytes / 1e6 / wall:7.1f} MB/s of tar "
                  f"({wall:.1f} s)")
        tars = sorted(os.path.join(d, n) for d, _, names in os.walk(os.path.join(tmp, "shards"))
                      for n in names if n.endswith(".tar"))
        w = time_writers(read_members(tars), tmp, args.repeats)
        print(f"   writing the same {w['payload_mb']:.0f} MB of samples: plain tarfile {w['plain_mb_s']:.0f} MB/s; "
              f"shard writer {w['writer_mb_s']:.0f} MB/s -> {w['writer_ratio']:.2f} of plain (goal >= 0.7); "
              f"with blob assembly and per-sample SHA-256 {w['whole_mb_s']:.0f} MB/s -> {w['whole_ratio']:.2f}")
        d = measure_dmel(args.dmel_seconds, repeats=5)
        print(f"\n2. dMel on {d['audio_s']:.0f} s of audio: {d['dmel_s'] * 1000:.1f} ms, torchaudio MelSpectrogram "
              f"{d['torchaudio_s'] * 1000:.1f} ms -> {d['ratio']:.2f}x its time (goal <= 1.2)")
        flac_h = dir_bytes(os.path.join(rec, "media"), (".flac",)) / 1e6 / hours
        print(f"\n3. bytes per hour of conversation\n   audio only: shards {tar_bytes / 1e6 / hours:7.1f} MB/h, "
              f"its 16 kHz FLAC {flac_h:7.1f} MB/h -> {tar_bytes / 1e6 / hours / flac_h:.2f}x")
        v = video_bytes(tmp)
        print(f"   with video: shards {v['tar_mb_per_h']:7.1f} MB/h, FLAC + normalised video "
              f"{v['media_mb_per_h']:7.1f} MB/h -> {v['tar_mb_per_h'] / v['media_mb_per_h']:.2f}x "
              f"(shard stage {v['realtime']:.0f}x realtime with video)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
