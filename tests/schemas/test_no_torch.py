"""The contracts import without torch: a consumer that only reads tables or samples needs none.

Checked in a fresh interpreter (the test process has torch loaded by other tests) over every
module of ``microturn.schemas``, found on disk, so a module added later is covered too.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import microturn.schemas

# The NumPy paths of the dMel module (quantisation, filters) run without torch as well; only
# featurizing audio and tensor inputs load it.
_PROGRAM = """
import importlib, sys
import numpy as np
for name in sys.argv[1:]:
    importlib.import_module(name)
from microturn.schemas import dmel
bins = dmel.quantize(np.array([-7.0, 0.1, 2.0]))
assert bins.tolist() == [0, 12, 15], bins
assert dmel.dequantize(bins).tolist()[0] == -7.0
assert dmel.mel_filters().shape == (80, 801)
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, f"torch was imported: {loaded[:5]}"
"""


def _schemas_modules() -> list[str]:
    names = [f"microturn.schemas.{m.name}" for m in pkgutil.iter_modules(microturn.schemas.__path__)]
    assert "microturn.schemas.dmel" in names and "microturn.schemas.sample" in names, names
    return ["microturn.schemas", *sorted(names)]


def test_every_schemas_module_imports_without_torch():
    proc = subprocess.run([sys.executable, "-c", _PROGRAM, *_schemas_modules()],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
