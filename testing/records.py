"""Conversation records written straight to disk, laid out as an ingest output (tables + media).

A record is a dict: ``conversation`` (its ``conversations`` row), ``segments``, ``words`` and
``events`` (lists of rows) and ``audio`` (file name → float32 16 kHz wave [N]). Every row passes
the record schemas. Builders:

- :func:`real_call`: the pyannote sample call (:mod:`.sample_call`) as a mixed recording, or
  split into one channel per speaker by its reference turns, optionally looped to any length
  at another gain (the shard benchmark's corpus);
- :func:`two_streams`: a per-speaker record with noise bursts where each speaker talks;
- :func:`mixed_record`: any one-channel recording with reference turns (e.g. an RTTM's), no words.

:func:`write_records` writes records as an output directory that the shard stage reads.

Array suffix: N audio samples (16 kHz).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow.parquet as pq

from microturn.schemas import validate_rows
from microturn.schemas.sample import SAMPLE_RATE
from microturn.schemas.turns import Turn, turn_events, turn_stats
from microturn.testing.sample_call import sample_call

__all__ = ["mixed_record", "real_call", "two_streams", "write_records"]

_PER_MS = SAMPLE_RATE // 1000


def _conversation(cid: str, *, duration_ms: int, speakers: list[str], layout: str, files: list[str],
                  turns: Sequence[Turn], origin: str = "real", license: str = "CC-BY-4.0",
                  video_file: str | None = None, provenance: str | None = None) -> dict:
    return {
        "conversation_id": cid, "source_uri": f"file:///{cid}", "origin": origin, "duration_ms": duration_ms,
        "channels": len(files), "channel_layout": layout, "has_video": video_file is not None,
        "media_dir": f"media/{cid}", "audio_files": files, "video_file": video_file, "speakers": speakers,
        "num_speakers": len(speakers), "backends": [("diarization", "reference")], "license": license,
        "split": "train", "stats": turn_stats(list(turns), duration_ms).as_row(), "provenance": provenance,
    }


def _segments(cid: str, turns: Sequence[Turn]) -> list[dict]:
    return [{"conversation_id": cid, "speaker": t.speaker, "start_ms": t.start_ms, "end_ms": t.end_ms,
             "channel": t.channel} for t in turns]


def _events(cid: str, turns: Sequence[Turn]) -> list[dict]:
    return [{"conversation_id": cid, "type": e.type, "speaker": e.speaker, "t_ms": e.t_ms,
             "payload": json.dumps(e.payload, sort_keys=True)} for e in turn_events(list(turns))]


def real_call(cid: str = "c-00000000000000a1", *, seconds: int | None = None, gain: float = 1.0,
              per_speaker: bool = False) -> dict:
    """The pyannote sample call with its reference turns and words (2 speakers, ``real``).

    ``seconds``: the call looped (audio, turns and words) and cut to that length; the call's
    own 30 s when None. ``gain`` scales the audio. ``per_speaker``: two channels
    (``SPEAKER_00.flac``, ``SPEAKER_01.flac``), each the call where that speaker's reference
    turns are and silence elsewhere; otherwise one mixed channel (``mix.flac``).
    """
    call = sample_call()
    period_ms = call.duration_ms
    duration_ms = period_ms if seconds is None else seconds * 1000
    loops = -(-duration_ms // period_ms)
    wave_N = (np.tile(call.wave_N, loops)[: duration_ms * _PER_MS] * np.float32(gain)).astype(np.float32)
    turns = [Turn(t.speaker, t.start_ms + k * period_ms, min(t.end_ms + k * period_ms, duration_ms), 0)
             for k in range(loops) for t in call.turns if t.start_ms + k * period_ms < duration_ms]
    words = [{"conversation_id": cid, "speaker": speaker, "text": text, "start_ms": s + k * period_ms,
              "end_ms": e + k * period_ms, "score": 0.9}
             for k in range(loops) for speaker, text, s, e in call.words if e + k * period_ms <= duration_ms]
    speakers = sorted({t.speaker for t in turns})
    if per_speaker:
        audio = {}
        for speaker in speakers:
            mask_N = np.zeros_like(wave_N)
            for t in turns:
                if t.speaker == speaker:
                    mask_N[t.start_ms * _PER_MS: t.end_ms * _PER_MS] = 1
            audio[f"{speaker}.flac"] = wave_N * mask_N
        turns = [Turn(t.speaker, t.start_ms, t.end_ms, speakers.index(t.speaker)) for t in turns]
        layout = "per_speaker"
    else:
        audio, layout = {"mix.flac": wave_N}, "mixed"
    conv = _conversation(cid, duration_ms=duration_ms, speakers=speakers, layout=layout, files=list(audio),
                         turns=turns)
    return {"conversation": conv, "segments": _segments(cid, turns), "words": words,
            "events": _events(cid, turns), "audio": audio}


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
    n = duration_ms * _PER_MS
    audio = {f"{s}.flac": np.zeros(n, np.float32) for s in "AB"}
    for tr in turns:
        wave_N = audio[f"{tr.speaker}.flac"]
        wave_N[tr.start_ms * _PER_MS: tr.end_ms * _PER_MS] += (
            0.1 * rng.standard_normal(_PER_MS * (tr.end_ms - tr.start_ms))).astype(np.float32)
    words = []
    for tr in turns:
        for ws in range(tr.start_ms, tr.end_ms - 150, 350):
            words.append({"conversation_id": cid, "speaker": tr.speaker, "text": f"w{ws}", "start_ms": ws,
                          "end_ms": min(tr.end_ms, ws + 300), "score": 1.0})
    conv = _conversation(cid, duration_ms=duration_ms, speakers=["A", "B"], layout="per_speaker",
                         files=["A.flac", "B.flac"], turns=turns, origin=origin, license="Apache-2.0",
                         provenance=provenance)
    return {"conversation": conv, "segments": _segments(cid, turns), "words": words, "events": _events(cid, turns),
            "audio": audio}


def mixed_record(cid: str, wave_N: np.ndarray, turns: Sequence[Turn], *, license: str = "CC-BY-4.0") -> dict:
    """A real one-channel recording (``mix.flac``) with reference ``turns`` and no words: what an
    ingest with a perfect diarizer and no transcript would write (e.g. from an RTTM)."""
    if not turns:
        raise ValueError(f"{cid}: a record needs at least one speaker turn")
    duration_ms = len(wave_N) // _PER_MS
    turns = sorted((Turn(t.speaker, t.start_ms, min(t.end_ms, duration_ms), 0) for t in turns
                    if t.start_ms < min(t.end_ms, duration_ms)), key=lambda t: (t.start_ms, t.end_ms, t.speaker))
    speakers = sorted({t.speaker for t in turns})
    conv = _conversation(cid, duration_ms=duration_ms, speakers=speakers, layout="mixed", files=["mix.flac"],
                         turns=turns, license=license)
    return {"conversation": conv, "segments": _segments(cid, turns), "words": [], "events": _events(cid, turns),
            "audio": {"mix.flac": np.asarray(wave_N, np.float32)}}


def write_records(root: str, records: Iterable[dict], *, video: dict[str, str] | None = None) -> str:
    """Write ``records`` as an output directory at ``root`` (tables + media) and return ``root``.

    ``video`` maps a conversation id to a normalised video file, copied in as ``video.mp4``.
    Records are consumed one at a time, so a generator keeps one record's audio in memory.
    """
    from microturn.pipelines.media import encode_flac

    tables: dict[str, list[dict]] = {"conversations": [], "segments": [], "words": [], "events": []}
    for rec in records:
        conv = dict(rec["conversation"])
        media_dir = os.path.join(root, conv["media_dir"])
        os.makedirs(media_dir, exist_ok=True)
        for name, wave_N in rec["audio"].items():
            with open(os.path.join(media_dir, name), "wb") as f:
                f.write(encode_flac(wave_N))
        if video and conv["conversation_id"] in video:
            with open(video[conv["conversation_id"]], "rb") as src, \
                    open(os.path.join(media_dir, "video.mp4"), "wb") as dst:
                dst.write(src.read())
            conv["has_video"], conv["video_file"] = True, "video.mp4"
        tables["conversations"].append(conv)
        for table in ("segments", "words", "events"):
            tables[table] += rec[table]
    for table, rows in tables.items():
        os.makedirs(os.path.join(root, table), exist_ok=True)
        pq.write_table(validate_rows(table, rows), os.path.join(root, table, "part-00000-of-00001.parquet"))
    return root
