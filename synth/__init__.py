"""Dialogue synthesis as a plain library (no Beam): two-stream spoken conversations from text.

A dialogue script (turns of text per speaker, from ``templates`` or a user's JSONL) is spoken by
a text-to-speech backend (``tts``, ``espeak``), laid out on one timeline with gaps, overlaps and
backchannels drawn from a turn-taking timing model (``layout``, ``timing``, fitted on ingested
real conversations), mixed into one audio stream per speaker (``mix``) and labelled
(``engine``). ``remix`` builds the same kind of dialogue from the real turns of an ingested
conversation. ``microturn.pipelines.synthesize`` runs this library at scale.
"""
