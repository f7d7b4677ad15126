"""espeak-ng text-to-speech through its C library (``libespeak-ng.so.1``) and ctypes.

Shape legend (suffixes on array names):
    M  audio samples at espeak's native rate (22050 Hz for its voices)
    N  audio samples at 16 kHz
    F  10 ms analysis frames
    P  PHONEME events
    E, T  WORD events, whitespace tokens (the event-to-token cost matrix)

How a text becomes :class:`~microturn.synth.tts.Speech`:

1. espeak-ng synthesises it in synchronous mode (plain UTF-8 text, no SSML); a callback
   collects the int16 samples, the WORD events (character position and length of the word
   in the text, output sample where it starts) and the PHONEME events (sample, mnemonic).
2. Events are mapped to the whitespace tokens of the text by their character positions,
   repairing the positions espeak misreports by 1-2 characters (see ``_assign_events``).
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
English word loads a second dictionary). So the library runs in a small worker process,
started on first use, one per Python process, that uses only the standard library and
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

import atexit
import json
import os
import re
import subprocess
import sys
import sysconfig
import threading
import warnings
from dataclasses import dataclass

import numpy as np
import soxr

from microturn.synth.tts import SAMPLE_RATE, Speech, SpokenWord, Voice

__all__ = ["EspeakTTS", "EspeakUnavailableError", "EDGE_MARGIN_MS", "ENERGY_FLOOR_DB"]

# ---------------------------------------------------------------------------------- tuning

FRAME_MS = 10
# Frames quieter than this relative to the utterance's loudest 10 ms frame count as silence.
# espeak's pauses are digital zeros (below -100 dB). Against pocketsphinx on 144 words (two
# voices), the median error of word ends is 12 ms for every floor from -30 to -50 dB; -40 dB
# sits in the middle of that plateau.
ENERGY_FLOOR_DB = -40.0
# Audio kept before the first word's energy onset and after the last word's end: one 10 ms
# analysis frame, for the attack and decay below the floor. What the cut removed from 24
# test utterances (3 voices) peaked at -42 dB re the utterance's peak sample.
EDGE_MARGIN_MS = 10

_LIBRARY_NAME = "libespeak-ng.so.1"
_INSTALL_HINT = (
    "install the espeak-ng Debian package (apt-get install espeak-ng), which provides "
    f"{_LIBRARY_NAME} and its voice data"
)


class EspeakUnavailableError(ValueError):
    """espeak-ng's C library or its data cannot be used on this machine."""


# ------------------------------------------------------------------- the worker process

# The worker's source, run as ``python -I -c _WORKER_SOURCE <library path>``: standard
# library only, so that it starts in about 50 ms, stays single-threaded (fork() is safe) and
# does not depend on what importing this package pulls in. Protocol, on stdin/stdout: one
# JSON request per line; per request one JSON header line, followed by ``n_bytes`` bytes of
# little-endian int16 samples. The C declarations follow espeak-ng's speak_lib.h.
_WORKER_SOURCE = r'''
import ctypes
import json
import os
import signal
import sys

# A child still speaking after this long (espeak speaks an hour of audio in about 12 s) is
# killed, and its request fails instead of blocking every caller.
CHILD_TIMEOUT_S = 600
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_DONT_EXIT = 0x8000  # do not exit() when the voice data is missing
CHARS_UTF8 = 1
POS_CHARACTER = 1
EE_OK = 0
PARAMETERS = {"rate": 1, "pitch": 3}  # espeakRATE, espeakPITCH
EVENT_LIST_TERMINATED, EVENT_WORD, EVENT_PHONEME, EVENT_SAMPLERATE = 0, 1, 7, 8
PHONEME_SEPARATOR = ord("|") << 8  # espeak_TextToPhonemes: "|" between phonemes


class EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    ]


class Event(ctypes.Structure):  # espeak_EVENT
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # characters from the start of the text, from 1
        ("length", ctypes.c_int),  # characters of the word
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # output sample
        ("user_data", ctypes.c_void_p),
        ("id", EventId),
    ]


class VoiceInfo(ctypes.Structure):  # espeak_VOICE
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, tag, NUL)*, then a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event)
)
SIGNATURES = {
    "espeak_Initialize": (
        ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    ),
    "espeak_SetSynthCallback": (None, [SynthCallback]),
    "espeak_SetVoiceByName": (ctypes.c_int, [ctypes.c_char_p]),
    "espeak_SetParameter": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_int]),
    "espeak_Synth": (ctypes.c_int, [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]),
    "espeak_ListVoices": (
        ctypes.POINTER(ctypes.POINTER(VoiceInfo)), [ctypes.POINTER(VoiceInfo)]
    ),
    "espeak_Info": (ctypes.c_char_p, [ctypes.POINTER(ctypes.c_char_p)]),
    "espeak_TextToPhonemes": (
        ctypes.c_char_p, [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    ),
}


class Refused(Exception):
    """An answer for the caller: kind is "value" or "unavailable"."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def open_library(path):
    try:
        lib = ctypes.CDLL(path)  # mapped by the worker already: its globals still pristine
        for name, (restype, argtypes) in SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
    except (OSError, AttributeError) as err:
        raise Refused("unavailable", f"could not load {path}: {err}")
    rate = lib.espeak_Initialize(
        AUDIO_OUTPUT_SYNCHRONOUS, 0, None, INITIALIZE_DONT_EXIT | INITIALIZE_PHONEME_EVENTS
    )
    if rate <= 0:
        raise Refused("unavailable", f"espeak_Initialize failed ({rate}): voice data missing")
    return lib, rate


def voices(lib, spec):
    out = []
    array = lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
    i = 0
    while array and array[i]:
        v = array[i].contents
        tags, ptr = [], v.languages
        while ptr and ctypes.string_at(ptr, 1)[0]:
            tag = ctypes.string_at(ptr + 1)
            tags.append([ctypes.string_at(ptr, 1)[0], tag.decode("utf-8", "replace")])
            ptr += 2 + len(tag)
        out.append({
            "name": (v.name or b"").decode("utf-8", "replace"),
            "identifier": (v.identifier or b"").decode("utf-8", "replace"),
            "languages": tags,
        })
        i += 1
    return out


def catalogue(lib):
    data = ctypes.c_char_p()
    version = (lib.espeak_Info(ctypes.byref(data)) or b"?").decode()
    spec = VoiceInfo()
    tag = ctypes.create_string_buffer(b"variant")
    spec.languages = ctypes.cast(tag, ctypes.c_void_p)
    return {
        "ok": True,
        "version": version,
        "data_path": (data.value or b"").decode("utf-8", "replace"),
        "voices": voices(lib, None),
        "variants": voices(lib, spec),
    }, b""


def count_phonemes(lib, token):
    buf = ctypes.create_string_buffer(token.encode("utf-8"))
    ptr = ctypes.c_void_p(ctypes.addressof(buf))
    n = 0
    while ptr.value:
        out = lib.espeak_TextToPhonemes(ctypes.byref(ptr), CHARS_UTF8, PHONEME_SEPARATOR)
        n += sum(1 for p in (out or b"").replace(b" ", b"|").split(b"|") if p)
    return n


def speak(lib, rate, req):
    status = lib.espeak_SetVoiceByName(req["voice"].encode("utf-8"))
    if status != EE_OK:
        raise Refused("value", f"espeak-ng refused voice {req['voice']!r} (status {status})")
    for name, number in PARAMETERS.items():
        status = lib.espeak_SetParameter(number, int(req[name]), 0)
        if status != EE_OK:
            raise Refused("value", f"espeak-ng refused {name} {req[name]} (status {status})")
    pcm, words, phonemes, rates = [], [], [], []

    def on_synth(wav, n_samples, events):
        if n_samples > 0 and wav:
            pcm.append(ctypes.string_at(wav, 2 * n_samples))
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == EVENT_WORD:
                words.append([ev.text_position, ev.length, ev.sample])
            elif ev.type == EVENT_PHONEME:
                phonemes.append([ev.sample, ev.id.string.decode("ascii", "replace")])
            elif ev.type == EVENT_SAMPLERATE:
                rates.append(ev.id.number)
            i += 1
        return 0

    callback = SynthCallback(on_synth)
    lib.espeak_SetSynthCallback(callback)
    data = req["text"].encode("utf-8") + b"\0"
    status = lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
    if status != EE_OK:
        raise Refused("value", f"espeak_Synth failed (status {status})")
    samples = b"".join(pcm)
    return {
        "ok": True,
        "rate": rates[-1] if rates else rate,
        "words": words,
        "phonemes": phonemes,
        "counts": [count_phonemes(lib, t) for t in req["tokens"]],
        "n_bytes": len(samples),
    }, samples


def handle(path, line):
    """Runs in a forked child: a fresh library, one request."""
    try:
        req = json.loads(line)
        lib, rate = open_library(path)
        if req["op"] == "catalogue":
            return catalogue(lib)
        return speak(lib, rate, req)
    except Refused as err:
        return {"ok": False, "kind": err.kind, "message": str(err)}, b""
    except Exception as err:
        return {"ok": False, "kind": "error", "message": f"{type(err).__name__}: {err}"}, b""


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def serve(path):
    protocol = os.dup(1)
    os.dup2(2, 1)  # anything printed by accident goes to stderr, not into the protocol
    try:
        # Map the library and its dependencies (audio output libraries among them) once and
        # read the voice list, which starts no thread: children inherit both and skip 6 ms
        # of loading and 4 ms of scanning voice files. Nothing else touches its state here.
        lib = ctypes.CDLL(path)
        lib.espeak_ng_InitializePath.argtypes = [ctypes.c_char_p]
        lib.espeak_ng_InitializePath(None)
        lib.espeak_ListVoices.restype = ctypes.c_void_p
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices(None)
    except (OSError, AttributeError):
        pass  # each request then reports the error
    for line in sys.stdin.buffer:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            signal.alarm(CHILD_TIMEOUT_S)
            header, payload = handle(path, line)
            write_all(w, json.dumps(header).encode() + b"\n" + payload)
            os._exit(0)
        os.close(w)
        chunks = []
        while True:
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        answer = b"".join(chunks)
        head, _, body = answer.partition(b"\n")
        try:
            complete = status == 0 and len(body) == json.loads(head).get("n_bytes", 0)
        except ValueError:
            complete = False
        if not complete:
            answer = json.dumps({
                "ok": False,
                "kind": "error",
                "message": f"the espeak-ng child process died (wait status {status})",
            }).encode() + b"\n"
        write_all(protocol, answer)


serve(sys.argv[1])
'''


class _Worker:
    """The worker process of this Python process and its pipes."""

    def __init__(self, library: str) -> None:
        if not sys.executable:
            raise EspeakUnavailableError(
                "cannot start the espeak-ng worker: sys.executable is not set"
            )
        self.pid = os.getpid()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _WORKER_SOURCE, library],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )

    def exchange(self, request: dict) -> tuple[dict, bytes]:
        """Send one request, return the header and the samples; OSError/EOFError when the
        worker is gone."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request).encode("utf-8") + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise EOFError("the espeak-ng worker closed its output")
        header = json.loads(line)
        payload = self.proc.stdout.read(int(header.get("n_bytes", 0)))
        if len(payload) != int(header.get("n_bytes", 0)):
            raise EOFError("the espeak-ng worker closed its output mid-answer")
        return header, payload

    def close(self) -> None:
        """End the worker (it exits when its input closes)."""
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if self.pid == os.getpid():
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass(frozen=True, slots=True)
class _VoiceInfo:
    """One voice from espeak_ListVoices."""

    name: str  # "English (America)"
    identifier: str  # "gmw/en-US"
    languages: tuple[tuple[int, str], ...]  # ((priority, "en-us"), (priority, "en"))


@dataclass(frozen=True, slots=True)
class _Catalogue:
    version: str
    data_path: str
    voices: tuple[_VoiceInfo, ...]
    variants: tuple[str, ...]  # lower-case variant names ("f3", "klatt")


class _State:
    """Per-process module state: the worker and the voice catalogue, made on first use."""

    def __init__(self) -> None:
        self.worker: _Worker | None = None
        self.catalogue: _Catalogue | None = None


# One lock for every exchange with the worker (a request and its answer must not interleave).
_LOCK = threading.Lock()
_state = _State()
# Workers of a parent process, seen from a forked child: kept referenced, never used.
_inherited: list[_Worker] = []


def _reset_after_fork() -> None:
    # A forked child (multiprocessing, Beam's process pool) starts its own worker; the
    # parent's pipes are closed here, and a lock another thread held at the fork is replaced.
    global _LOCK, _state
    if _state.worker is not None:
        for stream in (_state.worker.proc.stdin, _state.worker.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        _inherited.append(_state.worker)
    _LOCK = threading.Lock()
    _state = _State()


os.register_at_fork(after_in_child=_reset_after_fork)


@atexit.register
def _stop_worker() -> None:
    # The worker also exits by itself when this process dies (its input closes); this only
    # reaps it. A thread stuck mid-request must not block the interpreter's exit.
    locked = _LOCK.acquire(timeout=1.0)
    try:
        worker, _state.worker = _state.worker, None
        if worker is not None:
            worker.close()
    finally:
        if locked:
            _LOCK.release()


def _system_library() -> str:
    """Path of the installed libespeak-ng.so.1."""
    candidates = []
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        candidates.append(f"/usr/lib/{multiarch}/{_LIBRARY_NAME}")
    folders = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64")
    candidates += [f"{d}/{_LIBRARY_NAME}" for d in (*folders, "/usr/lib", "/usr/local/lib")]
    for path in candidates:
        if os.path.exists(path):
            return path
    raise EspeakUnavailableError(
        f"espeak-ng's C library {_LIBRARY_NAME} was not found; {_INSTALL_HINT}"
    )


def _request(request: dict, what: str) -> tuple[dict, bytes]:
    """One exchange with the worker (started on first use, restarted once if it died);
    ``what`` says what was asked, for messages."""
    with _LOCK:
        for attempt in range(2):
            if _state.worker is None:
                library = _system_library()
                try:
                    _state.worker = _Worker(library)
                except OSError as err:
                    raise EspeakUnavailableError(
                        f"could not start the espeak-ng worker process ({err})"
                    ) from err
            try:
                header, payload = _state.worker.exchange(request)
                break
            except (OSError, EOFError, ValueError) as err:
                _state.worker.close()
                _state.worker = None
                if attempt:
                    raise EspeakUnavailableError(
                        f"the espeak-ng worker process failed ({err}); {_INSTALL_HINT}"
                    ) from err
            except BaseException:
                # Interrupted mid-exchange: the protocol state is unknown, start afresh.
                _state.worker.proc.kill()
                _state.worker.close()
                _state.worker = None
                raise
    if not header.get("ok"):
        message = f"espeak-ng failed {what}: {header.get('message', 'unknown failure')}"
        if header.get("kind") == "unavailable":
            raise EspeakUnavailableError(f"{message}; {_INSTALL_HINT}")
        raise ValueError(message)
    return header, payload


def _catalogue() -> _Catalogue:
    """Version, voices and variants of the library (listed once per process)."""
    if _state.catalogue is None:
        header, _ = _request({"op": "catalogue"}, "listing its voices")
        voices = tuple(
            _VoiceInfo(
                name=v["name"],
                identifier=v["identifier"],
                languages=tuple((int(p), t) for p, t in v["languages"]),
            )
            for v in header["voices"]
            if v["identifier"].split("/")[0] != "mb"  # MBROLA voices need mbrola itself
        )
        if not voices:
            raise EspeakUnavailableError(
                f"espeak-ng found no voices in {header['data_path']!r}; {_INSTALL_HINT}"
            )
        _state.catalogue = _Catalogue(
            version=header["version"],
            data_path=header["data_path"],
            voices=voices,
            variants=tuple(
                sorted({v["identifier"].rsplit("/", 1)[-1].lower() for v in header["variants"]})
            ),
        )
    return _state.catalogue


# ------------------------------------------------------------------- voices and languages


def _resolve(voices: tuple[_VoiceInfo, ...], base: str) -> _VoiceInfo | None:
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


def _speaks(v: _VoiceInfo, language: str) -> bool:
    lang = language.lower()
    return any(t.lower() == lang or t.lower().startswith(lang + "-") for _, t in v.languages)


def _some(names: list[str], k: int = 12) -> str:
    return ", ".join(names[:k]) + (f" (and {len(names) - k} more)" if len(names) > k else "")


# ------------------------------------------------------------------- events to tokens

# Costs, in characters of misplacement, for mapping WORD events to tokens (_assign_events).
# espeak-ng 1.51 sometimes reports a word at a position before its token: in "where it is"
# the event of "is" points at the "t" of "it"; in "people - maybe more - came" the events of
# "maybe" and "came" point at the dashes; in "Mr. and" the event of "and" points at the
# space (1 to 2 characters early in all cases seen, never late). So an event may move
# forward, to a later token, never back; and not at all out of a token with digits, whose
# several events ("nineteen" "ninety" "s") are its own. Leaving a token with letters or
# digits without an event costs 4 and giving an event to a token with neither (a lone "-")
# costs 2: an event moves to an otherwise empty token up to 3 characters ahead, which
# repairs all the cases above.
_EMPTY_COST = 4.0
_UNSPOKEN_COST = 2.0
# Finite, so that events espeak reports out of order still get some assignment.
_FORBIDDEN_COST = 1e6
# Above this many (events x tokens) cells the alignment falls back to the reported
# positions (a text of about 2000 words; dialogue turns are far shorter).
_MAX_CELLS = 4_000_000


def _tokens(text: str) -> list[tuple[int, int, str]]:
    """Whitespace tokens as (first character, end character, token)."""
    return [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]


def _speakable(token: str) -> bool:
    """Whether a token has something to say (a letter or digit); "-" or "..." has not."""
    return any(c.isalnum() for c in token)


def _assign_events(tokens: list[tuple[int, int, str]], positions: list[int]) -> list[int]:
    """Token index of each WORD event (0-based character ``positions``, in output order).

    The monotone assignment of least cost: the distance in characters from each event's
    position forward to its token (0 inside it; moving back is not allowed), plus
    ``_EMPTY_COST`` per speakable token left without an event and ``_UNSPOKEN_COST`` per
    event given to a token without letters or digits.
    """
    n_tok, n_ev = len(tokens), len(positions)
    if n_ev == 0:
        return []
    first_T = np.array([t[0] for t in tokens])
    end_T = np.array([t[1] for t in tokens])
    c_E = np.asarray(positions)
    # The token each position falls in, or the next one when it falls between tokens.
    at_E = np.clip(np.searchsorted(end_T, c_E, side="right"), 0, n_tok - 1)
    idx_T = np.arange(n_tok)
    ahead_ET = np.maximum(first_T[None, :] - c_E[:, None], 0).astype(np.float64)
    pinned_E = np.array([any(ch.isdigit() for ch in tokens[k][2]) for k in at_E])
    dist_ET = np.where(
        idx_T[None, :] == at_E[:, None],
        ahead_ET,
        np.where(
            (idx_T[None, :] > at_E[:, None]) & ~pinned_E[:, None], ahead_ET, _FORBIDDEN_COST
        ),
    )
    if n_ev * n_tok > _MAX_CELLS:
        return [int(k) for k in at_E]
    speak_T = np.array([_speakable(t[2]) for t in tokens])
    extra_T = np.where(speak_T, 0.0, _UNSPOKEN_COST)
    # before_T1[j]: cost of leaving tokens 0..j-1 without events.
    before_T1 = np.concatenate([[0.0], np.cumsum(np.where(speak_T, _EMPTY_COST, 0.0))])
    cost_T = dist_ET[0] + extra_T + before_T1[:n_tok]
    same_ET = np.zeros((n_ev, n_tok), dtype=bool)
    back_ET = np.zeros((n_ev, n_tok), dtype=np.int64)
    for i in range(1, n_ev):
        # Coming from an earlier token j' < j leaves tokens j'+1..j-1 empty.
        shifted_T = cost_T - before_T1[1:]
        run_min_T = np.minimum.accumulate(shifted_T)
        run_arg_T = np.maximum.accumulate(np.where(shifted_T == run_min_T, idx_T, -1))
        from_before_T = np.full(n_tok, np.inf)
        from_before_T[1:] = run_min_T[:-1] + before_T1[1:n_tok]
        back_ET[i, 1:] = run_arg_T[:-1]
        same_ET[i] = cost_T <= from_before_T
        cost_T = dist_ET[i] + extra_T + np.where(same_ET[i], cost_T, from_before_T)
    j = int(np.argmin(cost_T + before_T1[n_tok] - before_T1[1:]))
    owner = [0] * n_ev
    for i in range(n_ev - 1, -1, -1):
        owner[i] = j
        if i and not same_ET[i, j]:
            j = int(back_ET[i, j])
    return owner


# ------------------------------------------------------------------- energy


def _frame_db(x_N: np.ndarray, lo: int, hi: int, ref: float) -> np.ndarray:
    """dB re ``ref`` of the 10 ms frames of x_N[lo:hi], on a grid anchored at ``lo``."""
    step = SAMPLE_RATE * FRAME_MS // 1000
    seg_N = x_N[max(lo, 0) : max(hi, lo, 0)].astype(np.float64)
    n = -(-len(seg_N) // step)
    pad_N = np.zeros(n * step)
    pad_N[: len(seg_N)] = seg_N
    rms_F = np.sqrt((pad_N.reshape(n, step) ** 2).mean(axis=1))
    return 20.0 * np.log10(np.maximum(rms_F, 1e-10) / ref)


def _loudness(x_N: np.ndarray) -> float:
    """RMS of the loudest 10 ms frame."""
    db_F = _frame_db(x_N, 0, len(x_N), 1.0)
    return float(10.0 ** (db_F.max() / 20.0)) if len(db_F) else 1.0


def _energy_end(x_N: np.ndarray, lo: int, hi: int, ref: float) -> int:
    """End of the last loud 10 ms frame of x_N[lo:hi] (frames from ``lo``), in (lo, hi]."""
    step = SAMPLE_RATE * FRAME_MS // 1000
    if hi <= lo + 1:
        return lo + 1
    loud_F = np.nonzero(_frame_db(x_N, lo, hi, ref) > ENERGY_FLOOR_DB)[0]
    if len(loud_F) == 0:
        return min(lo + step, hi)
    return min(lo + (int(loud_F[-1]) + 1) * step, hi)


def _energy_onset(x_N: np.ndarray, lo: int, hi: int, ref: float) -> int:
    """Start of the first loud 10 ms frame of x_N[lo:hi] (frames from ``lo``), else ``lo``."""
    step = SAMPLE_RATE * FRAME_MS // 1000
    loud_F = np.nonzero(_frame_db(x_N, lo, hi, ref) > ENERGY_FLOOR_DB)[0]
    return lo + int(loud_F[0]) * step if len(loud_F) else lo


# ------------------------------------------------------------------- word spans


@dataclass(frozen=True, slots=True)
class _Raw:
    """What one synthesis returns: native-rate audio and espeak's events."""

    pcm_M: np.ndarray  # int16
    rate: int
    words: list[tuple[int, int, int]]  # WORD events: (text_position, length, sample)
    phonemes: list[tuple[int, str]]  # PHONEME events: (sample, mnemonic)
    phoneme_counts: list[int]  # phonemes of every token spoken on its own


def _spread(lo: int, hi: int, weights: list[int]) -> list[int]:
    """Boundaries splitting [lo, hi) by ``weights``: len(weights)+1 values, each part >= 1."""
    total = sum(weights) or len(weights)
    weights = weights if sum(weights) else [1] * len(weights)
    out = [lo]
    acc = 0
    for w in weights:
        acc += w
        out.append(max(lo + (hi - lo) * acc // total, out[-1] + 1))
    return out


def _split_unit(
    members: list[int],
    lo: int,
    end: int,
    phon_P: np.ndarray,
    counts: list[int],
    tokens: list[tuple[int, int, str]],
) -> tuple[list[int], bool]:
    """Boundaries of ``members`` (a timed token + event-less tokens espeak merged into it)
    inside [lo, end); True when they come from espeak's phoneme events.

    espeak speaks some word pairs as one word with one WORD event ("on the", "in the",
    "for the": 4 of 183 tokens of a conversational test text). The unit's PHONEME events
    (``phon_P``, pauses removed) are split by the phoneme count of each member spoken on its
    own, counted from the unit's end (the unit may begin with the last phoneme of the word
    before). When the counts do not fit, the span is split by phoneme count or, failing
    that, by character length.
    """
    if len(members) == 1:
        return [lo, end], True
    need = [counts[i] for i in members]
    extra = len(phon_P) - sum(need)
    if all(c > 0 for c in need) and 0 <= extra <= 1:
        bounds = [lo]
        for k in range(1, len(members)):
            bounds.append(int(phon_P[extra + sum(need[:k])]))
        bounds.append(end)
        if all(a < b for a, b in zip(bounds[:-1], bounds[1:])):
            return bounds, True
    weights = need if all(c > 0 for c in need) else [
        sum(ch.isalnum() for ch in tokens[i][2]) for i in members
    ]
    return _spread(lo, max(end, lo + len(members)), weights), False


def _word_spans(
    tokens: list[tuple[int, int, str]], raw: _Raw, x_N: np.ndarray, ref: float
) -> tuple[list[tuple[int, int] | None], list[int]]:
    """(start, end) in 16 kHz samples per token, except the tokens before the first timed
    one (None: placed by the caller); and the indices of tokens placed by interpolation.
    ``ref`` is the RMS of the loudest frame of ``x_N``."""
    n, n_tok = len(x_N), len(tokens)
    to_n = SAMPLE_RATE / raw.rate
    owner = _assign_events(tokens, [pos - 1 for pos, _, _ in raw.words])  # espeak counts from 1
    starts: list[int | None] = [None] * n_tok
    for k, (_, _, sample) in zip(owner, raw.words):
        s = min(max(round(sample * to_n), 0), n - 1)
        if starts[k] is None or s < starts[k]:
            starts[k] = s
    # Starts must increase: a token whose events start no later than an earlier token's
    # (espeak reading words in another order) counts as event-less.
    last = -1
    for k, s in enumerate(starts):
        if s is not None and s <= last:
            starts[k] = None
        elif s is not None:
            last = s
    timed = [k for k, s in enumerate(starts) if s is not None]
    # PHONEME events, pauses ("_", "_:", "_!") left out.
    phon_P = np.array(
        [round(s * to_n) for s, name in raw.phonemes if not name.startswith("_")], dtype=np.int64
    )
    spans: list[tuple[int, int] | None] = [None] * n_tok
    guessed: list[int] = []
    for j, k in enumerate(timed):
        nxt = timed[j + 1] if j + 1 < len(timed) else n_tok
        lo = starts[k]
        hi = starts[nxt] if nxt < n_tok else n
        end = _energy_end(x_N, lo, hi, ref)
        run = list(range(k + 1, nxt))  # event-less tokens up to the next timed one
        spoken = [i for i in run if _speakable(tokens[i][2])]
        merged = [k] + (run[: run.index(spoken[-1]) + 1] if spoken else [])
        unit_P = phon_P[(phon_P >= lo) & (phon_P < hi)]
        bounds, exact = _split_unit(merged, lo, end, unit_P, raw.phoneme_counts, tokens)
        for i, a, b in zip(merged, bounds[:-1], bounds[1:]):
            spans[i] = (a, b)
        if not exact:
            guessed += [i for i in merged[1:] if _speakable(tokens[i][2])]
        trailing = run[len(merged) - 1 :]
        if trailing:
            # Unspoken tokens ("-", "...") after the word: in the pause before the next one.
            gap_lo = bounds[-1]
            if hi - gap_lo < len(trailing):  # no pause: take room from the word's end
                gap_lo = max(bounds[-2] + 1, hi - len(trailing))
                spans[merged[-1]] = (spans[merged[-1]][0], gap_lo)
            cuts = _spread(gap_lo, hi, [1] * len(trailing))
            for i, a, b in zip(trailing, cuts[:-1], cuts[1:]):
                spans[i] = (a, b)
    return spans, guessed


def _to_ms(spans: list[tuple[int, int]], n_samples: int) -> list[tuple[int, int]]:
    """Sample spans to integer ms, monotone, non-overlapping, >= 1 ms, inside the wave."""
    per_ms = SAMPLE_RATE // 1000
    duration = n_samples * 1000 // SAMPLE_RATE
    out = []
    prev = 0
    for s, e in spans:
        s_ms = max(round(s / per_ms), prev)
        e_ms = max(round(e / per_ms), s_ms + 1)
        out.append((s_ms, e_ms))
        prev = e_ms
    limit = duration
    for k in range(len(out) - 1, -1, -1):
        s_ms, e_ms = out[k]
        e_ms = min(e_ms, limit)
        s_ms = min(s_ms, e_ms - 1)
        out[k] = (s_ms, e_ms)
        limit = s_ms
    assert not out or out[0][0] >= 0, "more words than milliseconds of audio"
    return out


def _assemble(
    tokens: list[tuple[int, int, str]], raw: _Raw, x_N: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, int]], list[int]]:
    """The trimmed 16 kHz wave, every token's (start_ms, end_ms) in it, interpolated tokens."""
    ref = _loudness(x_N)
    spans, guessed = _word_spans(tokens, raw, x_N, ref)
    first = next(k for k, s in enumerate(spans) if s is not None)
    onset = _energy_onset(x_N, spans[first][0], spans[first][1], ref)
    spans[first] = (onset, max(spans[first][1], onset + 1))
    margin = SAMPLE_RATE * EDGE_MARGIN_MS // 1000
    # The wave runs from the first word's energy onset to the last word's end with a margin
    # on both sides, padded with zeros where espeak's audio is shorter than that.
    lo, hi = onset - margin, spans[-1][1] + margin
    wave_N = np.zeros(hi - lo, np.float32)
    wave_N[max(-lo, 0) : min(len(x_N), hi) - lo] = x_N[max(lo, 0) : min(len(x_N), hi)]
    shifted = [None if s is None else (s[0] - lo, s[1] - lo) for s in spans]
    if first:
        # Tokens before the first timed one share the leading margin.
        cuts = _spread(0, margin, [1] * first)
        for i, a, b in zip(range(first), cuts[:-1], cuts[1:]):
            shifted[i] = (a, b)
        guessed = [i for i in range(first) if _speakable(tokens[i][2])] + guessed
    return wave_N, _to_ms(shifted, len(wave_N)), guessed


# ------------------------------------------------------------------- the backend


class EspeakTTS:
    """espeak-ng speech with word times from its own WORD events (see the module docstring).

    Cheap to construct and stateless: espeak-ng runs in a worker process of this module,
    started on first use and shared by all instances and threads. Raises
    :class:`EspeakUnavailableError` (a ``ValueError``) on first use when libespeak-ng.so.1
    or its data is missing.
    """

    name = "espeak-ng"

    def version(self) -> str:
        """``"espeak-ng <version>"``, e.g. ``"espeak-ng 1.51"``."""
        return f"espeak-ng {_catalogue().version}"

    def languages(self) -> tuple[str, ...]:
        """Every language tag of the installed voices (``"en"``, ``"en-us"``, ``"de"``...)."""
        tags = {t.lower() for v in _catalogue().voices for _, t in v.languages}
        return tuple(sorted(tags))

    def voices(self) -> tuple[str, ...]:
        """Names usable in :class:`Voice`: the voice file names (``"en-US"``, ``"de"``...)."""
        return tuple(sorted({v.identifier.rsplit("/", 1)[-1] for v in _catalogue().voices}))

    def check_voice(self, voice: Voice, *, language: str | None = None) -> None:
        """Raise ``ValueError`` when espeak-ng has no such voice (or variant), or, with
        ``language``, when no voice speaks that language or ``voice`` does not speak it."""
        if not isinstance(voice, Voice):
            raise TypeError(
                f"voice must be a microturn.synth.tts.Voice, got {type(voice).__name__}"
            )
        cat = _catalogue()
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
        tokens = _tokens(text)
        if not tokens:
            raise ValueError("text is empty or whitespace only; there is nothing to speak")
        self.check_voice(voice)
        base, plus, variant = voice.name.partition("+")
        # espeak_SetVoiceByName knows voice names and files, not language tags ("en-gb"):
        # give it the file of the voice check_voice resolved.
        resolved = _resolve(_catalogue().voices, base)
        assert resolved is not None  # check_voice passed
        raw = _synthesise(text, tokens, resolved.identifier + plus + variant, voice)
        if not raw.words:
            raise ValueError(
                f"espeak-ng spoke no word of {text[:60]!r} with voice {voice.name!r}; give "
                "text with letters or digits in a language the voice speaks"
            )
        wave_N, times, guessed = _assemble(tokens, raw, _resample(raw.pcm_M, raw.rate))
        if guessed:
            warnings.warn(
                f"espeak-ng gave no usable word event for {len(guessed)} token(s) "
                f"{_some([repr(tokens[i][2]) for i in guessed], 5)} of {text[:60]!r}; placed "
                "them by interpolation",
                stacklevel=2,
            )
        words = tuple(SpokenWord(tok[2], s, e) for tok, (s, e) in zip(tokens, times))
        return Speech(wave_N=wave_N, words=words)


def _synthesise(
    text: str, tokens: list[tuple[int, int, str]], voice_file: str, voice: Voice
) -> _Raw:
    """Speak ``text`` in a fresh library; count each token's phonemes with it too."""
    header, payload = _request(
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
    pcm_M = np.frombuffer(payload, dtype="<i2")
    if len(pcm_M) == 0:
        raise ValueError(f"espeak-ng produced no audio for {text[:60]!r}")
    return _Raw(
        pcm_M=pcm_M,
        rate=int(header["rate"]),
        words=[(int(p), int(n), int(s)) for p, n, s in header["words"]],
        phonemes=[(int(s), str(name)) for s, name in header["phonemes"]],
        phoneme_counts=[int(c) for c in header["counts"]],
    )


def _resample(pcm_M: np.ndarray, rate: int) -> np.ndarray:
    """int16 at ``rate`` to float32 at 16 kHz in [-1, 1]."""
    x_M = pcm_M.astype(np.float32) / 32768.0
    if rate == SAMPLE_RATE:
        return x_M
    x_N = soxr.resample(x_M, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    return np.clip(x_N, -1.0, 1.0)
