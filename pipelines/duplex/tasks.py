"""The names of the duplex evaluation tasks (a module without imports, so that the ``microturn
eval duplex`` and ``eval items`` parsers offer them without loading numpy or Arrow).

The item makers (``items_select``, ``items_behaviours``) import these names; the scorer's
:data:`microturn.pipelines.duplex.layout.TASKS` follows its annotation files, and a test keeps it
equal to :data:`TASKS`.
"""

# Full-Duplex-Bench v1's four turn-taking tasks, then microturn's behaviour tasks.
TURN_TAKING_TASKS = ("smooth_turn_taking", "pause_handling", "user_interruption", "backchannel")
BEHAVIOUR_TASKS = ("visual_cue", "repetition", "background_result", "simultaneous")
TASKS = TURN_TAKING_TASKS + BEHAVIOUR_TASKS
