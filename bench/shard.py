"""Benchmark of the shard stage: throughput, writer speed, dMel speed and bytes per hour.

    python bench/shard.py [--conversations 12] [--seconds 300] [--repeats 2]

Corpus: the real two-person call shipped with pyannote.audio, looped to ``--seconds`` per
conversation with a different gain each, its reference diarization (RTTM) and transcript (STM,
words spread over each utterance) looped with it. Half the conversations are mixed recordings
(one channel, gated by the diarization in the shard stage), half per-speaker (the call split
into two channels by the RTTM). Written straight to disk as an ingest output is laid out.

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
import importlib.resources
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf

from microturn.pipelines import media
from microturn.pipelines.shard.run import run as shard
from microturn.pipelines.shard.tar import TarWriter, sample_blob
from microturn.schemas import validate_rows
from microturn.schemas.turns import Turn, turn_events, turn_stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shard_dmel import measure as measure_dmel  # noqa: E402

SAMPLE = importlib.resources.files("pyannote.audio") / "sample"


def _call():
    wave, sr = sf.read(str(SAMPLE / "sample.wav"), dtype="float32")
    names, turns, words = {}, [], []
    with open(str(SAMPLE / "sample.rttm")) as f:
        for line in f:
            p = line.split()
            spk = names.setdefault(p[7], f"SPEAKER_{len(names):02d}")
            s = int(round(float(p[3]) * 1000))
            turns.append((spk, s, s + int(round(float(p[4]) * 1000))))
    stm = {"Diane": "SPEAKER_00", "Sheila": "SPEAKER_01"}
    with open(str(SAMPLE / "sample.stm")) as f:
        for line in f:
            p = line.split(maxsplit=5)
            s, e = int(float(p[3]) * 1000), int(float(p[4]) * 1000)
            toks = p[5].split() if len(p) > 5 else []
            words += [(stm.get(p[2]), t, s + (e - s) * i // len(toks), s + (e - s) * (i + 1) // len(toks))
                      for i, t in enumerate(toks)]
    return wave, turns, words


def build_corpus(root: str, *, conversations: int, seconds: int) -> float:
    """Write the corpus under ``root``; returns its hours of conversation."""
    wave, turns, words = _call()
    period_ms = len(wave) * 1000 // 16000
    tables = {t: [] for t in ("conversations", "segments", "words", "events")}
    for c in range(conversations):
        cid = f"c-{c:016x}"
        reps = -(-seconds * 1000 // period_ms)
        audio = np.tile(wave, reps)[: seconds * 16000] * (0.5 + 0.4 * c / max(1, conversations - 1))
        segs = [Turn(s, a + r * period_ms, min(b + r * period_ms, seconds * 1000), 0)
                for r in range(reps) for s, a, b in turns if a + r * period_ms < seconds * 1000]
        per_speaker = c % 2 == 1
        media_dir = os.path.join(root, "media", cid)
        os.makedirs(media_dir, exist_ok=True)
        speakers = ["SPEAKER_00", "SPEAKER_01"]
        if per_speaker:
            files = []
            for ch, spk in enumerate(speakers):
                mask = np.zeros(audio.shape[0], np.float32)
                for t in segs:
                    if t.speaker == spk:
                        mask[t.start_ms * 16: t.end_ms * 16] = 1
                files.append(f"{spk}.flac")
                with open(os.path.join(media_dir, files[-1]), "wb") as f:
                    f.write(media.encode_flac((audio * mask).astype(np.float32)))
            segs = [Turn(t.speaker, t.start_ms, t.end_ms, speakers.index(t.speaker)) for t in segs]
        else:
            files = ["mix.flac"]
            with open(os.path.join(media_dir, "mix.flac"), "wb") as f:
                f.write(media.encode_flac(audio.astype(np.float32)))
        tables["conversations"].append({
            "conversation_id": cid, "source_uri": f"bench://{cid}", "origin": "real", "duration_ms": seconds * 1000,
            "channels": len(files), "channel_layout": "per_speaker" if per_speaker else "mixed", "has_video": False,
            "media_dir": f"media/{cid}", "audio_files": files, "video_file": None, "speakers": speakers,
            "num_speakers": 2, "backends": [], "license": "CC-BY-4.0", "split": "train",
            "stats": turn_stats(segs, seconds * 1000).as_row(), "provenance": None})
        tables["segments"] += [{"conversation_id": cid, "speaker": t.speaker, "start_ms": t.start_ms,
                                "end_ms": t.end_ms, "channel": t.channel} for t in segs]
        tables["words"] += [{"conversation_id": cid, "speaker": spk, "text": text, "start_ms": s + r * period_ms,
                             "end_ms": e + r * period_ms, "score": 1.0}
                            for r in range(reps) for spk, text, s, e in words if e + r * period_ms <= seconds * 1000]
        tables["events"] += [{"conversation_id": cid, "type": e.type, "speaker": e.speaker, "t_ms": e.t_ms,
                              "payload": json.dumps(e.payload, sort_keys=True)} for e in turn_events(segs)]
    for table, rows in tables.items():
        os.makedirs(os.path.join(root, table), exist_ok=True)
        pq.write_table(validate_rows(table, rows), os.path.join(root, table, "part-00000-of-00001.parquet"))
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
                current.append((m.name, tar.extractfile(m).read()))
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
    root = os.path.join(tmp, "video_rec")
    build_corpus(root, conversations=1, seconds=120)
    src = os.path.join(tmp, "pattern.mp4")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=640x360:rate=25", "-t", "120", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", src], check=True)
    cid = "c-0000000000000000"
    dest = os.path.join(root, "media", cid, "video.mp4")
    media.normalise_video(src, dest, stream=media.probe(src).video)
    table = pq.read_table(os.path.join(root, "conversations")).to_pylist()
    table[0].update(has_video=True, video_file="video.mp4")
    pq.write_table(validate_rows("conversations", table), os.path.join(root, "conversations",
                                                                      "part-00000-of-00001.parquet"))
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
        print(f"   with video: shards {v['tar_mb_per_h']:7.1f} MB/h, FLAC + normalised video {v['media_mb_per_h']:7.1f} "
              f"MB/h -> {v['tar_mb_per_h'] / v['media_mb_per_h']:.2f}x (shard stage {v['realtime']:.0f}x realtime "
              "with video)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
