"""``python -m microturn.pipelines.shard``: the same as ``microturn shard``."""

import sys

from microturn.pipelines.shard.run import main

sys.exit(main())
