"""``python -m microturn.pipelines.synthesize``: same as ``microturn synthesize``."""

import sys

from microturn.cli import logs
from microturn.cli.usage import exit_status

logs.setup()  # before the stage imports Beam, whose import logs on the root logger

from microturn.pipelines.synthesize.run import main  # noqa: E402

sys.exit(exit_status(main))
