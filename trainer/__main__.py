"""``python -m microturn.trainer``: the same as ``microturn train`` (for the deepspeed and torchrun launchers)."""

import sys

from microturn.cli import logs
from microturn.cli.usage import exit_status

logs.setup()  # before anything logs on the root logger (see microturn.cli.logs)

from microturn.trainer.run import main  # noqa: E402

sys.exit(exit_status(main))
