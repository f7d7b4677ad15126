"""Session-wide test settings.

Triton decides at decoration time whether ``@triton.jit`` kernels run compiled or under its
interpreter, and other packages (DeepSpeed) import Triton early, so the interpreter switch must
be set before any test module is imported, whatever subset of the tests runs. The tests that
need a GPU start their own subprocess without it.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
