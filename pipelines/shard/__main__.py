"""``python -m microturn.pipelines.shard``: same as ``microturn shard``."""

import sys

from microturn.cli import logs
from microturn.cli.usage import exit_status

logs.setup()  # before the stage imports Beam, whose import logs on the root logger

from microturn.pipelines.shard.run import main  # noqa: E402

sys.exit(exit_status(main))
