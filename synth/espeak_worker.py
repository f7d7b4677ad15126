"""The espeak-ng worker process: run by path as ``python -I espeak_worker.py <library path>``.

:mod:`microturn.synth.espeak_client` starts this file as a program, one per Python process. It
uses only the standard library, so that it starts in about 50 ms, stays single-threaded (fork()
is safe) and does not depend on what importing ``microturn`` pulls in; ``-I`` keeps the user's
site packages, ``PYTHON*`` variables and this file's folder off its import path, so it never
imports a sibling module of the package by accident.

Protocol, on stdin/stdout: one JSON request per line, ``{"op": "catalogue"}`` or ``{"op":
"speak", "text", "voice", "rate", "pitch", "tokens"}``; per request one JSON header line,
followed by ``n_bytes`` bytes of little-endian int16 samples. The header is ``{"ok": false,
"kind": "value" | "unavailable" | "error", "message"}`` when the request failed.

The worker never initialises espeak itself: for every request it forks a child, which
initialises the library, answers, and exits (why: :mod:`microturn.synth.espeak`). The C
declarations follow espeak-ng's speak_lib.h.
"""

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
    """The library at ``path`` with its C signatures set, initialised: (lib, sample rate)."""
    try:
        lib = ctypes.CDLL(path)  # mapped by the worker already: its globals still pristine
        for name, (restype, argtypes) in SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
    except (OSError, AttributeError) as err:
        raise Refused("unavailable", f"could not load {path}: {err}") from err
    rate = lib.espeak_Initialize(
        AUDIO_OUTPUT_SYNCHRONOUS, 0, None, INITIALIZE_DONT_EXIT | INITIALIZE_PHONEME_EVENTS
    )
    if rate <= 0:
        raise Refused("unavailable", f"espeak_Initialize failed ({rate}): voice data missing")
    return lib, rate


def voices(lib, spec):
    """espeak_ListVoices(spec) as JSON-ready dicts: name, identifier, [priority, tag] pairs."""
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
    """Answer to a catalogue request: version, data path, voices and variants."""
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
    """How many phonemes espeak_TextToPhonemes gives for ``token`` spoken on its own."""
    buf = ctypes.create_string_buffer(token.encode("utf-8"))
    ptr = ctypes.c_void_p(ctypes.addressof(buf))
    n = 0
    while ptr.value:
        out = lib.espeak_TextToPhonemes(ctypes.byref(ptr), CHARS_UTF8, PHONEME_SEPARATOR)
        n += sum(1 for p in (out or b"").replace(b" ", b"|").split(b"|") if p)
    return n


def speak(lib, rate, req):
    """Answer to a speak request: events and phoneme counts in the header, int16 samples."""
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
    """Write all of ``data`` to the file descriptor ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def serve(path):
    """Answer requests from stdin on stdout until stdin closes, one forked child each."""
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


if __name__ == "__main__":
    serve(sys.argv[1])
