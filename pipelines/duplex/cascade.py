"""The cascade baseline: a VAD-gated system that answers every end of the user's speech with one
fixed utterance, as turn-taking by silence timeout does.

Full-Duplex-Bench compares full-duplex models with cascades (VAD -> ASR -> LLM -> TTS) whose
turn-taking is an endpointer: the system speaks once the user has been silent for a fixed time,
and a barge-in handler cuts it off when the user talks over it. This module is that turn-taking
with nothing else (no ASR, no LLM: the answer is always the same words), so its scores say what
silence-timeout turn-taking alone earns on an item set. The rule, in the user stream's time:

1. The user's speech is found with silero at Full-Duplex-Bench's settings
   (:func:`~microturn.pipelines.duplex.audio.speech_segments`).
2. Endpointing: user segments separated by at most ``endpoint_s`` (0.7 s) of silence are one
   turn (a pause the endpointer waits out); at each turn's end ``e`` the cascade starts its
   answer at ``e + endpoint_s``, when the silence timeout fires. 700 ms is the answer delay of
   the VAD-gated systems this baseline stands for (Full-Duplex-Bench's cascade takes the turn
   1.18 s after the user on average, its full-duplex reference 0.40 s); an answer whose start
   falls at or after the end of the item is never heard and is dropped.
3. Barge-in: when the user's next turn starts at ``b`` while the answer plays, the answer stops
   at ``b + barge_in_s`` (0.25 s): a live VAD confirms speech only after silero's minimum speech
   duration (250 ms at the settings above), so no VAD-gated system can stop earlier. The answer
   is faded out over 10 ms there (no click for the detector to hear) and never resumes; the
   cascade answers again after that turn ends, by rule 2.
4. The answer is ``response_text`` spoken once by the project's TTS (espeak-ng, voice ``en-us``,
   espeak's normal rate): the same samples every time, with espeak's word timings. A word is in
   the cascade's output when it starts before the answer stops; its end is cut at the stop.

Times are seconds as floats, as the duplex metrics have them. Shape suffixes follow
:mod:`microturn.schemas.legend`: N audio samples at 16 kHz.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from microturn.pipelines.duplex.audio import SAMPLE_RATE, Segment, merge_segments, speech_segments

__all__ = ["CascadeConfig", "CascadeOutput", "Response", "Word", "cascade_output", "plan_answers",
           "spoken_response"]

# About 3.9 s at espeak's normal rate: longer than 3 s and 3 words, so an uninterrupted answer
# is a turn taken by Full-Duplex-Bench's rules, never a backchannel.
RESPONSE_TEXT = "Sure, I can help with that. Let me think about it for a moment."
_FADE_S = 0.01

Word = tuple[str, float, float]  # (text, start_s, end_s)


@dataclass(frozen=True, kw_only=True)
class CascadeConfig:
    """The cascade's numbers (module notes): silence timeout, barge-in detection delay, answer."""

    endpoint_s: float = 0.7
    barge_in_s: float = 0.25
    response_text: str = RESPONSE_TEXT
    voice: str = "en-us"

    def __post_init__(self) -> None:
        for name in ("endpoint_s", "barge_in_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 60:
                raise ValueError(f"CascadeConfig.{name} must be seconds in [0, 60), got {value!r}")
        if not isinstance(self.response_text, str) or not self.response_text.split():
            raise ValueError(f"CascadeConfig.response_text must hold at least one word, got {self.response_text!r}")


@dataclass(frozen=True, kw_only=True, eq=False)
class Response:
    """The fixed answer: its samples and its words' times from the start of ``wave_N``."""

    wave_N: np.ndarray
    words: tuple[Word, ...]

    @property
    def duration_s(self) -> float:
        return self.wave_N.size / SAMPLE_RATE


@dataclass(frozen=True, kw_only=True, eq=False)
class CascadeOutput:
    """The cascade's stream for one item: ``wave_N`` as long as the user's, its words in absolute
    time, the answers as ``(start_s, stop_s)`` and the user segments the rule read."""

    wave_N: np.ndarray
    words: tuple[Word, ...]
    answers: tuple[Segment, ...]
    user_segments: tuple[Segment, ...] = field(default=())


@lru_cache(maxsize=4)
def _speak(text: str, voice: str) -> Response:
    from microturn.synth.tts import Voice, get_tts

    speech = get_tts("espeak-ng").speak(text, Voice(name=voice))
    words = tuple((w.text, w.start_ms / 1000, w.end_ms / 1000) for w in speech.words)
    wave_N = np.asarray(speech.wave_N, dtype=np.float32)
    wave_N.setflags(write=False)  # shared by every item through the cache
    return Response(wave_N=wave_N, words=words)


def spoken_response(config: CascadeConfig | None = None) -> Response:
    """The answer of ``config`` spoken by espeak-ng (once per process and text)."""
    config = config or CascadeConfig()
    return _speak(config.response_text, config.voice)


def plan_answers(user_segments: list[Segment], duration_s: float, response_s: float,
                 config: CascadeConfig | None = None) -> list[Segment]:
    """Rules 2 and 3: the ``(start_s, stop_s)`` of every answer, in order, for the user's speech
    ``user_segments`` in an item of ``duration_s``, with an answer ``response_s`` long."""
    config = config or CascadeConfig()
    # + 1 us (under a sample, 62.5 us): a user back exactly when the timeout fires still pauses,
    # whatever the float rounding of end + endpoint_s.
    turns = merge_segments(list(user_segments), config.endpoint_s + 1e-6)
    answers: list[Segment] = []
    for i, (_, end) in enumerate(turns):
        start = end + config.endpoint_s
        if start >= duration_s:
            continue
        stop = min(start + response_s, duration_s)
        if i + 1 < len(turns) and turns[i + 1][0] < stop:
            # merge_segments left a gap over endpoint_s, so the next turn starts after `start`.
            stop = min(stop, turns[i + 1][0] + config.barge_in_s)
        answers.append((start, stop))
    return answers


def cascade_output(input_N: np.ndarray, config: CascadeConfig | None = None, *,
                   response: Response | None = None) -> CascadeOutput:
    """The cascade's stream for the user stream ``input_N`` (16 kHz mono): the module's rule."""
    config = config or CascadeConfig()
    response = response or spoken_response(config)
    user = speech_segments(input_N)
    n = int(input_N.size)
    answers = plan_answers(user, n / SAMPLE_RATE, response.duration_s, config)
    out_N = np.zeros(n, np.float32)
    words: list[Word] = []
    fade = round(_FADE_S * SAMPLE_RATE)
    for start, stop in answers:
        a = round(start * SAMPLE_RATE)
        length = min(round((stop - start) * SAMPLE_RATE), response.wave_N.size, n - a)
        part_N = response.wave_N[:length].copy()
        if length < response.wave_N.size and length > 0:  # cut off: fade out instead of a click
            ramp = min(fade, length)
            part_N[length - ramp:] *= np.linspace(1.0, 0.0, ramp, dtype=np.float32)
        out_N[a:a + length] = part_N
        words += [(text, start + ws, min(start + we, stop)) for text, ws, we in response.words if start + ws < stop]
    return CascadeOutput(wave_N=out_N, words=tuple(words), answers=tuple(answers), user_segments=tuple(user))
