"""``python -m microturn.pipelines.synthesize``: the same as ``microturn synthesize``."""

import sys

from microturn.pipelines.synthesize.run import main

sys.exit(main())
