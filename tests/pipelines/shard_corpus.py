"""Conversation records written straight to disk for the shard tests.

``real_call`` is the 30 s phone call shipped with pyannote.audio as a mixed recording with its
reference diarization (RTTM) and transcript (STM, words spread over each utterance);
``two_streams`` is a per-speaker record with noise bursts where each speaker talks. Both pass
the record schemas; ``write_records`` writes them as an ingest output would be laid out.
"""

from __future__ import annotations

import importlib.resources
import json
import os

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf

from microturn.pipelines.media import encode_flac
from microturn.schemas import validate_rows
from microturn.schemas.turns import Turn, turn_events, turn_stats

SAMPLE = importlib.resources.files("pyannote.audio") / "sample"
SAMPLE_WAV = str(SAMPLE / "sample.wav")


def _conversation(cid: str, *, duration_ms: int, speakers: list[str], layout: str, files: list[str],
                  turns: list[Turn], origin: str = "real", license: str = "CC-BY-4.0",
                  video_file: str | None = None, provenance: str | None = None) -> dict:
    return {
        "conversation_id": cid, "source_uri": f"file:///{cid}", "origin": origin, "duration_ms": duration_ms,
        "channels": len(files), "channel_layout": layout, "has_video": video_file is not None,
        "media_dir": f"media/{cid}", "audio_files": files, "video_file": video_file, "speakers": speakers,
        "num_speakers": len(speakers), "backends": [("diarization", "reference")], "license": license,
        "split": "train", "stats": turn_stats(turns, duration_ms).as_row(), "provenance": provenance,
    }


def _events(cid: str, turns: list[Turn]) -> list[dict]:
    return [{"conversation_id": cid, "type": e.type, "speaker": e.speaker, "t_ms": e.t_ms,
             "payload": json.dumps(e.payload, sort_keys=True)} for e in turn_events(turns)]


def real_call(cid: str = "c-00000000000000a1") -> dict:
    """The pyannote sample call: mixed mono, 2 speakers, reference segments and words."""
    wave, sr = sf.read(SAMPLE_WAV, dtype="float32")
    assert sr == 16000
    names = {}
    turns = []
    with open(str(SAMPLE / "sample.rttm")) as f:
        for line in f:
            p = line.split()
            spk = names.setdefault(p[7], f"SPEAKER_{len(names):02d}")
            s = int(round(float(p[3]) * 1000))
            turns.append(Turn(spk, s, s + int(round(float(p[4]) * 1000)), 0))
    words = []
    stm_names = {"Diane": "SPEAKER_00", "Sheila": "SPEAKER_01"}
    with open(str(SAMPLE / "sample.stm")) as f:
        for line in f:
            p = line.split(maxsplit=5)
            s, e = int(float(p[3]) * 1000), int(float(p[4]) * 1000)
            tokens = p[5].split() if len(p) > 5 else []
            for i, tok in enumerate(tokens):
                ws = s + (e - s) * i // len(tokens)
                we = s + (e - s) * (i + 1) // len(tokens)
                words.append({"conversation_id": cid, "speaker": stm_names.get(p[2]), "text": tok,
                              "start_ms": ws, "end_ms": we, "score": 0.9})
    duration_ms = len(wave) * 1000 // sr
    conv = _conversation(cid, duration_ms=duration_ms, speakers=sorted({t.speaker for t in turns}),
                         layout="mixed", files=["mix.flac"], turns=turns)
    segs = [{"conversation_id": cid, "speaker": t.speaker, "start_ms": t.start_ms, "end_ms": t.end_ms,
             "channel": 0} for t in turns]
    return {"conversation": conv, "segments": segs, "words": words, "events": _events(cid, turns),
            "audio": {"mix.flac": wave}}


def two_streams(cid: str = "s-00000000000000b2", *, seconds: float = 41.3, seed: int = 0,
                origin: str = "synthetic", provenance: str | None = None) -> dict:
    """A per-speaker record: speakers A and B alternate with overlaps; noise bursts where they talk."""
    rng = np.random.default_rng(seed)
    duration_ms = int(seconds * 1000)
    turns, t, spk = [], 300, 0
    while t < duration_ms - 1500:
        length = int(rng.integers(700, 4000))
        end = min(duration_ms - 200, t + length)
        turns.append(Turn("AB"[spk], t, end, spk))
        t = end + int(rng.integers(-400, 600))
        spk ^= 1
    n = duration_ms * 16
    audio = {f"{s}.flac": np.zeros(n, np.float32) for s in "AB"}
    for tr in turns:
        a = audio[f"{tr.speaker}.flac"]
        a[tr.start_ms * 16: tr.end_ms * 16] += (0.1 * rng.standard_normal(16 * (tr.end_ms - tr.start_ms))).astype(
            np.float32)
    words = []
    for tr in turns:
        for ws in range(tr.start_ms, tr.end_ms - 150, 350):
            words.append({"conversation_id": cid, "speaker": tr.speaker, "text": f"w{ws}", "start_ms": ws,
                          "end_ms": min(tr.end_ms, ws + 300), "score": 1.0})
    conv = _conversation(cid, duration_ms=duration_ms, speakers=["A", "B"], layout="per_speaker",
                         files=["A.flac", "B.flac"], turns=turns, origin=origin, license="Apache-2.0",
                         provenance=provenance)
    segs = [{"conversation_id": cid, "speaker": tr.speaker, "start_ms": tr.start_ms, "end_ms": tr.end_ms,
             "channel": tr.channel} for tr in turns]
    return {"conversation": conv, "segments": segs, "words": words, "events": _events(cid, turns), "audio": audio}


def write_records(root: str, records: list[dict], *, video: dict[str, str] | None = None) -> str:
    """Write ``records`` as an output directory at ``root`` (tables + media); ``video`` maps a
    conversation id to a normalised video file to copy in as ``video.mp4``."""
    tables: dict[str, list[dict]] = {"conversations": [], "segments": [], "words": [], "events": []}
    for rec in records:
        conv = dict(rec["conversation"])
        media_dir = os.path.join(root, conv["media_dir"])
        os.makedirs(media_dir, exist_ok=True)
        for name, wave in rec["audio"].items():
            with open(os.path.join(media_dir, name), "wb") as f:
                f.write(encode_flac(wave))
        if video and conv["conversation_id"] in video:
            with open(video[conv["conversation_id"]], "rb") as src, open(os.path.join(media_dir, "video.mp4"),
                                                                         "wb") as dst:
                dst.write(src.read())
            conv["has_video"], conv["video_file"] = True, "video.mp4"
        tables["conversations"].append(conv)
        for t in ("segments", "words", "events"):
            tables[t] += rec[t]
    for table, rows in tables.items():
        os.makedirs(os.path.join(root, table), exist_ok=True)
        pq.write_table(validate_rows(table, rows), os.path.join(root, table, "part-00000-of-00001.parquet"))
    return root
