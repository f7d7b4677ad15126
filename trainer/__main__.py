"""``python -m microturn.trainer``: the same as ``microturn train`` (for the deepspeed and torchrun launchers)."""

import sys

from microturn.trainer.run import main

sys.exit(main())
