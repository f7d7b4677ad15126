"""espeak-ng text-to-speech through its C library (``libespeak-ng.so.1``) and ctypes.

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples, at 16 kHz, or at
espeak's native rate (22050 Hz for its voices) where the name says ``native``.

The code is in four modules: this one (the backend: voices, requests, resampling),
:mod:`~microturn.synth.word_timing` (steps 2-5, pure code testable without espeak),
:mod:`~microturn.synth.espeak_client` and :mod:`~microturn.synth.espeak_worker` (the process
that runs the library, below).

How a text becomes :class:`~microturn.synth.tts.Speech`:

1. espeak-ng synthesises it in synchronous mode (plain UTF-8 text, no SSML); a callback
   collects the int16 samples, the WORD events (character position and length of the word
   in the text, output sample where it starts) and the PHONEME events (sample, mnemonic).
2. Events are mapped to the whitespace tokens of the text by their character positions,
   repairing the positions espeak misreports by 1-2 characters (see
   :func:`~microturn.synth.word_timing.assign_events`).
   Several events inside one token (numbers such as "42" spoken as "forty two", "1990s")
   make one word, starting at the earliest.
3. A word starts at its event. It ends where its energy ends: at the end of the last 10 ms
   frame, before the next word's start, whose RMS lies within ``ENERGY_FLOOR_DB`` of the
   utterance's loudest frame; this leaves out the pause espeak puts after a comma or a full
   stop, which belongs to neither word.
4. Tokens without an event: espeak speaks some pairs of words as one word with one event
   ("on the", "in the", "for the": 4 of 183 tokens of a conversational test text); such a
   unit is split at the PHONEME event where the second word's phonemes begin (counted with
   ``espeak_TextToPhonemes``). Tokens with nothing to say ("-", "...") take the pause after
   the word before them. When neither applies, a token is placed by interpolation, with a
   warning.
5. The audio is resampled to 16 kHz with soxr (linear phase, delay compensated), and cut
   from ``EDGE_MARGIN_MS`` before the first word's energy onset to ``EDGE_MARGIN_MS`` after
   the last word's end (zero-padded where espeak's audio is shorter); word times shift with
   it. The first word starts at its energy onset (espeak's first event is at sample 0,
   before 10-45 ms of leading silence).

Where the library runs. espeak-ng is a process-global C singleton that is not thread-safe,
and it keeps synthesiser state between calls in its C globals (the phase of its pitch
"flutter", the wave phase, an automatic gain): with one initialised library per process,
five repeats of one sentence gave five different waves (64750, 66457, 66466, 66469, 66469
samples long). Reloading a private copy of the library for every call makes the output
repeatable but leaks what ``espeak_Terminate`` does not free: 2.7 kB per call for English,
170 kB per call when a voice switches language inside a text (a German voice reading an
English word loads a second dictionary). So the library runs in a small worker process
(:mod:`microturn.synth.espeak_worker`, a program run by path), started on first use, one per
Python process (:mod:`microturn.synth.espeak_client`), that uses only the standard library and
never initialises espeak itself: for every request it forks a child, which initialises the
library, speaks, sends the samples and events back over a pipe and exits. Every call thus
starts from the same freshly initialised state (bitwise identical output, including the C
``rand()`` behind the breath noise of variants such as ``+whisper``), nothing accumulates
(no memory growth in either process after the first few hundred calls), and a crash inside
the library fails one call instead of the Python process. The fork, initialisation and
voice loading cost about 7 ms per call.
One module-level lock serialises the requests of all threads; nothing native is held by
:class:`EspeakTTS` instances, so they are cheap to build, copy and serialise (Beam ships
DoFns with their attributes).
"""

from __future__ import annotations

import warnings

import numpy as np
import soxr

from microturn.schemas.sample import SAMPLE_RATE
from microturn.synth.espeak_client import (
    EspeakUnavailableError,
    VoiceInfo,
    catalogue,
    request,
)
from microturn.synth.tts import Speech, SpokenWord, Voice
from microturn.synth.word_timing import (
    EDGE_MARGIN_MS,
    ENERGY_FLOOR_DB,
    Events,
    assemble,
    split_tokens,
)

__all__ = ["EspeakTTS", "EspeakUnavailableError", "EDGE_MARGIN_MS", "ENERGY_FLOOR_DB"]


class EspeakTTS:
    """espeak-ng speech with word times from its own WORD events (see the module docstring).

    Cheap to construct and stateless: espeak-ng runs in the worker process of
    :mod:`microturn.synth.espeak_client`, started on first use and shared by all instances
    and threads. Raises :class:`EspeakUnavailableError` (a ``ValueError``) on first use when
    libespeak-ng.so.1 or its data is missing.
    """

    name = "espeak-ng"

    def version(self) -> str:
        """``"espeak-ng <version>"``, e.g. ``"espeak-ng 1.51"``."""
        return f"espeak-ng {catalogue().version}"

    def languages(self) -> tuple[str, ...]:
        """Every language tag of the installed voices (``"en"``, ``"en-us"``, ``"de"``...)."""
        tags = {t.lower() for v in catalogue().voices for _, t in v.languages}
        return tuple(sorted(tags))

    def voices(self) -> tuple[str, ...]:
        """Names usable in :class:`Voice`: the voice file names (``"en-US"``, ``"de"``...)."""
        return tuple(sorted({v.identifier.rsplit("/", 1)[-1] for v in catalogue().voices}))

    def check_voice(self, voice: Voice, *, language: str | None = None) -> None:
        """Raise ``ValueError`` when espeak-ng has no such voice (or variant), or, with
        ``language``, when no voice speaks that language or ``voice`` does not speak it."""
        if not isinstance(voice, Voice):
            raise TypeError(
                f"voice must be a microturn.synth.tts.Voice, got {type(voice).__name__}"
            )
        cat = catalogue()
        base, _, variant = voice.name.partition("+")
        found = _resolve(cat.voices, base)
        if found is None:
            raise ValueError(
                f"espeak-ng has no voice {base!r} (in Voice.name {voice.name!r}); available "
                f"voices include: {_some(list(self.voices()))}"
            )
        if variant and variant.lower() not in cat.variants:
            raise ValueError(
                f"espeak-ng has no voice variant {variant!r} (in Voice.name {voice.name!r}); "
                f"variants include: {_some(sorted(cat.variants, key=lambda n: (len(n), n)))}"
            )
        if language is None:
            return
        if not isinstance(language, str) or not language.strip():
            raise ValueError(f"language must be a language tag such as 'en', got {language!r}")
        speakers = [v for v in cat.voices if _speaks(v, language)]
        if not speakers:
            raise ValueError(
                f"espeak-ng has no voice for language {language!r}; languages include: "
                f"{_some(list(self.languages()), 20)}"
            )
        if not _speaks(found, language):
            names = sorted({v.identifier.rsplit("/", 1)[-1] for v in speakers})
            raise ValueError(
                f"espeak-ng voice {voice.name!r} ({found.name}) speaks "
                f"{', '.join(t for _, t in found.languages)}, not {language!r}; voices for "
                f"{language!r}: {_some(names)}"
            )

    def speak(self, text: str, voice: Voice) -> Speech:
        """Speak ``text`` (UTF-8, plain text, no SSML) with ``voice``.

        Returns 16 kHz float32 audio, trimmed to the speech plus ``EDGE_MARGIN_MS``, and one
        :class:`SpokenWord` per whitespace token. The same text and voice give the same
        samples on every call. Warns when a token has to be placed by interpolation.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        tokens = split_tokens(text)
        if not tokens:
            raise ValueError("text is empty or whitespace only; there is nothing to speak")
        self.check_voice(voice)
        base, plus, variant = voice.name.partition("+")
        # espeak_SetVoiceByName knows voice names and files, not language tags ("en-gb"):
        # give it the file of the voice check_voice resolved.
        resolved = _resolve(catalogue().voices, base)
        assert resolved is not None  # check_voice passed
        pcm_native_N, events = _synthesise(text, tokens, resolved.identifier + plus + variant, voice)
        if not events.words:
            raise ValueError(
                f"espeak-ng spoke no word of {text[:60]!r} with voice {voice.name!r}; give "
                "text with letters or digits in a language the voice speaks"
            )
        wave_N, times, guessed = assemble(tokens, events, _resample(pcm_native_N, events.rate))
        if guessed:
            warnings.warn(
                f"espeak-ng gave no usable word event for {len(guessed)} token(s) "
                f"{_some([repr(tokens[i][2]) for i in guessed], 5)} of {text[:60]!r}; placed "
                "them by interpolation",
                stacklevel=2,
            )
        words = tuple(SpokenWord(tok[2], s, e) for tok, (s, e) in zip(tokens, times, strict=True))
        return Speech(wave_N=wave_N, words=words)


def _synthesise(
    text: str, tokens: list[tuple[int, int, str]], voice_file: str, voice: Voice
) -> tuple[np.ndarray, Events]:
    """Speak ``text`` in a fresh library; count each token's phonemes with it too.

    Returns espeak's int16 samples at its native rate and its events.
    """
    header, payload = request(
        {
            "op": "speak",
            "text": text,
            "voice": voice_file,
            "rate": int(voice.rate),
            "pitch": int(voice.pitch),
            "tokens": [tok for _, _, tok in tokens],
        },
        f"speaking {text[:60]!r} with voice {voice.name!r}",
    )
    pcm_native_N = np.frombuffer(payload, dtype="<i2")
    if len(pcm_native_N) == 0:
        raise ValueError(f"espeak-ng produced no audio for {text[:60]!r}")
    return pcm_native_N, Events(
        rate=int(header["rate"]),
        words=[(int(p), int(n), int(s)) for p, n, s in header["words"]],
        phonemes=[(int(s), str(name)) for s, name in header["phonemes"]],
        phoneme_counts=[int(c) for c in header["counts"]],
    )


def _resample(pcm_native_N: np.ndarray, rate: int) -> np.ndarray:
    """int16 at ``rate`` to float32 at 16 kHz in [-1, 1]."""
    x_native_N = pcm_native_N.astype(np.float32) / 32768.0
    if rate == SAMPLE_RATE:
        return x_native_N
    x_N = soxr.resample(x_native_N, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    return np.clip(x_N, -1.0, 1.0)


# ---------------------------------------------------------------------------- voices and languages


def _resolve(voices: tuple[VoiceInfo, ...], base: str) -> VoiceInfo | None:
    """The voice espeak picks for ``base``: by name, identifier, file name, then language."""
    key = base.lower()
    for match in (
        lambda v: v.name.lower() == key,
        lambda v: v.identifier.lower() == key,
        lambda v: v.identifier.rsplit("/", 1)[-1].lower() == key,
    ):
        for v in voices:
            if match(v):
                return v
    ranked = [
        (prio, k, v)
        for k, v in enumerate(voices)
        for prio, tag in v.languages
        if tag.lower() == key
    ]
    return min(ranked, key=lambda r: (r[0], r[1]))[2] if ranked else None


def _speaks(v: VoiceInfo, language: str) -> bool:
    lang = language.lower()
    return any(t.lower() == lang or t.lower().startswith(lang + "-") for _, t in v.languages)


def _some(names: list[str], k: int = 12) -> str:
    return ", ".join(names[:k]) + (f" (and {len(names) - k} more)" if len(names) > k else "")
