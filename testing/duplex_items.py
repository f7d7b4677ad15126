"""A tiny hand-made item set in the duplex evaluation's layout, for tests of the systems and pages.

Three items, 6 s each, the user's speech and the second speaker's being speech-like sound that
silero detects (:mod:`microturn.testing.speechlike`):

- ``smooth_turn_taking/a-0``: the user talks 0.5-2.5 s and yields; the reference answers
  3.0-5.0 s (turn end 2.5 s);
- ``pause_handling/b-0``: the user talks 0.4-1.8 s, pauses 0.5 s, talks 2.3-5.6 s (the window
  ends with the user's turn, as pause items do); the reference stays silent;
- ``user_interruption/c-0``: the reference talks 0.3-3.0 s, the user interrupts 2.0-3.2 s, the
  reference answers 3.8-5.5 s (interrupt 2.0-3.2 s).

Each holds input.wav, reference.wav, reference.json (words at absolute times), its annotation
file and item.json, as ``microturn eval items`` writes them.
"""

from __future__ import annotations

import json
import os

import soundfile

from microturn.schemas.sample import SAMPLE_RATE
from microturn.testing.speechlike import place

__all__ = ["DURATION_S", "ITEMS", "write_items"]

DURATION_S = 6.0
# rel path -> (task, annotation file, annotation, user spans, reference spans, reference words)
ITEMS = {
    "smooth_turn_taking/a-0": ("smooth_turn_taking", "turn_taking.json",
                               [{"text": "so what do you think", "timestamp": [2.5, 3.0]}],
                               [(0.5, 2.5)], [(3.0, 5.0)],
                               [("well", 3.0, 3.4), ("I", 3.5, 3.6), ("think", 3.6, 4.0), ("so", 4.2, 5.0)]),
    "pause_handling/b-0": ("pause_handling", "pause.json", [{"timestamp": [1.8, 2.3]}],
                           [(0.4, 1.8), (2.3, 5.6)], [], []),
    "user_interruption/c-0": ("user_interruption", "interrupt.json",
                              [{"context": "tell me", "interrupt": "no wait", "timestamp": [2.0, 3.2]}],
                              [(2.0, 3.2)], [(0.3, 3.0), (3.8, 5.5)],
                              [("let", 0.3, 0.8), ("me", 0.8, 1.5), ("oh", 3.8, 4.2), ("sorry", 4.3, 5.5)]),
}


def _write_wav(path: str, spans: list[tuple[float, float]], seed: int) -> None:
    soundfile.write(path, place(DURATION_S, spans, seed=seed), SAMPLE_RATE, subtype="PCM_16")


def write_items(root: str) -> list[str]:
    """Write :data:`ITEMS` under ``root``; returns their folders."""
    folders = []
    for k, (rel, (task, name, annotation, user, reference, words)) in enumerate(sorted(ITEMS.items())):
        folder = os.path.join(root, rel)
        os.makedirs(folder, exist_ok=True)
        _write_wav(os.path.join(folder, "input.wav"), user, seed=k)
        _write_wav(os.path.join(folder, "reference.wav"), reference, seed=10 + k)
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            json.dump(annotation, f)
        chunks = [{"text": t, "timestamp": [s, e]} for t, s, e in words]
        with open(os.path.join(folder, "reference.json"), "w", encoding="utf-8") as f:
            json.dump({"text": " ".join(t for t, _, _ in words), "chunks": chunks}, f)
        with open(os.path.join(folder, "item.json"), "w", encoding="utf-8") as f:
            json.dump({"task": task, "conversation_id": rel.split("/")[1].split("-")[0], "split": "test",
                       "source": "synthetic", "layout_version": 1}, f)
        folders.append(folder)
    return folders
