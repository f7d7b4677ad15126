"""The names ``microturn ingest`` accepts for its backends and channel layouts.

A module without imports: the command's parser offers these as choices, and ``--help`` must not
load numpy, Arrow or Beam to print them (:mod:`.config` and :mod:`.channels` use the same names).
"""

DIARIZERS = ("embedded", "pyannote")
TRANSCRIBERS = ("sidecar", "whisperx", "none")
MIXED, PER_SPEAKER = "mixed", "per_speaker"
LAYOUTS = ("auto", MIXED, PER_SPEAKER)
