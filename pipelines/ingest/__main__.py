"""``python -m microturn.pipelines.ingest``: same as ``microturn ingest``."""

import sys

from microturn.pipelines.ingest.run import main

sys.exit(main())
