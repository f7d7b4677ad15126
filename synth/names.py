"""The names ``microturn synthesize`` accepts for dialogue kinds and degraded streams.

A module without imports: the command's parser offers these as choices, and ``--help`` must not
load numpy, scipy or Arrow to print them (:mod:`.templates` and :mod:`.mix` use the same names).
"""

# The kinds of dialogue the generator makes (see microturn.synth.templates.generate()).
KINDS = ("dialogue", "timed", "visual", "background", "simultaneous")
# Which streams noise and reverb go on (microturn.synth.mix.MixConfig.degrade).
DEGRADE = ("user", "all", "none")
