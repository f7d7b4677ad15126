"""One dialogue script in, one two-stream conversation out: speak, lay out, mix, label.

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples at 16 kHz.

:func:`synthesize_dialogue` is the whole of synthesis for one script; the Beam pipeline calls it
once per dialogue. It is deterministic: the random generator is seeded from the run's seed and
the script's content hash, so a dialogue gets the same audio whatever else is in the run and
whichever worker takes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from microturn.schemas.dialogue import Dialogue
from microturn.schemas.turns import Turn, TurnStats, turn_events, turn_stats
from microturn.synth.layout import Layout, lay_out, speakable
from microturn.synth.mix import MixConfig, mix_stems
from microturn.synth.timing import TimingModel
from microturn.synth.tts import TTS, Speech, Voice


@dataclass(frozen=True, kw_only=True)
class Conversation:
    """A synthesized (or remixed) conversation: per-speaker streams and exact annotations.

    ``stems``: speaker → 16 kHz float32 stream, all ``duration_ms`` long, in speaker order.
    ``segments``: one per placed turn (channel = the speaker's stream index). ``words``:
    (speaker, text, start_ms, end_ms) in time order. ``events``: rows of the events table
    without the conversation id. ``transitions_ms``: the offsets the timing model asked for.
    ``scene_cues``: what a scene video must show (:attr:`~microturn.synth.layout.Layout.scene_cues`);
    empty when the dialogue has no visual request.
    """

    stems: dict[str, np.ndarray]
    duration_ms: int
    segments: tuple[Turn, ...]
    words: tuple[tuple[str, str, int, int], ...]
    events: tuple[dict, ...]
    stats: TurnStats
    transitions_ms: tuple[int, ...]
    scene_cues: tuple[dict, ...] = ()


def dialogue_rng(seed: int, key: str) -> np.random.Generator:
    """The generator of one dialogue: a pure function of the run seed and the dialogue's key."""
    digest = hashlib.sha256(f"microturn/synth/{key}".encode()).digest()
    return np.random.default_rng([seed & 0xFFFFFFFF, int.from_bytes(digest[:8], "big")])


def voice_of(dialogue: Dialogue, speaker: str) -> Voice:
    spec = dialogue.speaker(speaker)
    return Voice(name=spec.voice, pitch=spec.pitch, rate=spec.rate)


def check_dialogue(dialogue: Dialogue, tts: TTS) -> None:
    """``ValueError`` when the TTS cannot speak the dialogue's language or one of its voices."""
    for name in dialogue.speaker_names:
        # An interpreter's voice speaks its own language (SpeakerSpec.language), not the dialogue's.
        tts.check_voice(voice_of(dialogue, name), language=dialogue.speaker(name).language or dialogue.language)


def assemble(layout: Layout, roles: Mapping[str, str | None], mix: MixConfig,
             rng: np.random.Generator, *, scripted: bool = True) -> Conversation:
    """Mix a layout into streams and derive segments, words, events and statistics.

    With ``scripted`` the interruption events are the layout's own (known from the script);
    without, they are detected from the turns as for real records.
    """
    speakers = list(roles)
    channel = {s: i for i, s in enumerate(speakers)}
    duration_ms = layout.end_ms + mix.tail_ms
    pieces: dict[str, list] = {s: [] for s in speakers}
    for turn in layout.turns:
        pieces[turn.speaker].extend(turn.pieces)
    stems = mix_stems(pieces, roles, duration_ms, mix, rng)
    segments = tuple(sorted((Turn(t.speaker, t.start_ms, t.end_ms, channel[t.speaker]) for t in layout.turns),
                            key=lambda t: (t.start_ms, t.end_ms, t.speaker)))
    words = tuple(sorted(((t.speaker, w, s, e) for t in layout.turns for w, s, e in t.words),
                         key=lambda w: (w[2], w[3], w[0])))
    # Turn ends and backchannels follow the same definitions as real records (schemas.turns);
    # interruptions and timed instructions are known exactly from the script and come from it.
    events = [{"type": e.type, "speaker": e.speaker, "t_ms": e.t_ms, "payload": e.payload}
              for e in turn_events(segments) if not (scripted and e.type == "interruption")]
    events += [{"type": e.type, "speaker": e.speaker, "t_ms": e.t_ms, "payload": e.payload} for e in layout.events]
    events.sort(key=lambda e: (e["t_ms"], e["type"], e["speaker"]))
    return Conversation(stems=stems, duration_ms=duration_ms, segments=segments, words=words,
                        events=tuple(events), stats=turn_stats(segments, duration_ms),
                        transitions_ms=layout.transitions_ms, scene_cues=layout.scene_cues)


def speak_dialogue(dialogue: Dialogue, tts: TTS) -> tuple[list[Speech], dict[int, list[Speech]]]:
    """Speech of every turn (``speakable`` text: inner sentence ends spoken as commas, and the
    last one too where the same speaker's next turn follows) and of the timed responses of each
    timed request, the answers of each visual request (in cue order) and the mention of each
    delegation, by turn index, as :func:`lay_out` takes them. A simultaneous rendering keeps its
    sentence ends (each sentence is placed after its source sentence)."""
    spoken, responses = [], {}
    turns = dialogue.turns
    for i, turn in enumerate(turns):
        # The speaker's next main turn follows this one after a pause (the listeners'
        # backchannels in between sit inside this turn): then this turn does not end with a fall.
        after = next((t for t in turns[i + 1:] if not (t.act == "backchannel" and t.speaker != turn.speaker)),
                     None)
        goes_on = (after is not None and after.speaker == turn.speaker and turn.timed is None
                   and turn.act in ("statement", "question") and after.act in ("statement", "question"))
        text = turn.text if turn.act == "simultaneous" else speakable(turn.text, ends_turn=not goes_on)
        spoken.append(tts.speak(text, voice_of(dialogue, turn.speaker)))
        if turn.timed is not None:
            voice = voice_of(dialogue, turn.timed.responder)
            responses[i] = [tts.speak(speakable(text), voice) for text in turn.timed.responses]
        if turn.visual is not None:
            voice = voice_of(dialogue, turn.visual.responder)
            responses[i] = [tts.speak(speakable(text), voice) for cue in turn.visual.cues for text in cue.responses]
        if turn.background is not None:
            responses[i] = [tts.speak(speakable(turn.background.mention), voice_of(dialogue, turn.speaker))]
    return spoken, responses


def synthesize_dialogue(dialogue: Dialogue, *, tts: TTS, timing: TimingModel, mix: MixConfig,
                        seed: int = 0) -> Conversation:
    """Speak every turn of ``dialogue`` with ``tts``, lay the turns out with ``timing`` and mix
    one stream per speaker. ``ValueError`` when a voice or the language is unsupported."""
    check_dialogue(dialogue, tts)
    rng = dialogue_rng(seed, dialogue.sha256())
    spoken, responses = speak_dialogue(dialogue, tts)
    layout = lay_out(dialogue, spoken, responses, timing, rng)
    roles = {name: dialogue.speaker(name).role for name in dialogue.speaker_names}
    return assemble(layout, roles, mix, rng)


def scene_spec(conv: Conversation, *, seed: int):
    """The :class:`~microturn.synth.scene.SceneSpec` of a conversation's visual cues (the whole
    conversation long, at the scene module's default size and 10 fps), or None without a cue."""
    if not conv.scene_cues:
        return None
    from microturn.synth.scene import SceneCue, SceneSpec

    cues = tuple(SceneCue(**{k: v for k, v in c.items() if v is not None}) for c in conv.scene_cues)
    return SceneSpec(duration_ms=conv.duration_ms, cues=cues, seed=seed)
