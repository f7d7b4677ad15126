"""Make torchaudio import on a CPU-only build of torch.

The registry's torchaudio wheels for Linux are CUDA builds: their three extension libraries link
libc10_cuda.so and libtorch_cuda.so, which a CPU build of torch does not ship, so `import
torchaudio` fails there. torchaudio treats a missing extension as a supported installation (it
then lacks forced_align, lfilter's C++ kernel and the RNN-T loss; nothing microturn, pyannote or
whisperx calls needs them: resampling, kaldi fbank and the transforms are Python over torch).
This script therefore renames the extension libraries to ``*.so.cuda-build`` when, and only when,
torch is a CPU build and `import torchaudio` fails; on a CUDA build of torch it does nothing.

    .venv/bin/python scripts/torchaudio_cpu.py
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch


def imports_torchaudio() -> tuple[bool, str]:
    proc = subprocess.run([sys.executable, "-c", "import torchaudio"], capture_output=True, text=True)
    return proc.returncode == 0, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""


def main() -> int:
    ok, error = imports_torchaudio()
    if ok:
        return 0
    if torch.version.cuda is not None:
        print(f"torchaudio does not import on a CUDA build of torch: {error}", file=sys.stderr)
        return 1
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or not spec.submodule_search_locations:
        print("torchaudio is not installed", file=sys.stderr)
        return 1
    libs = sorted((Path(spec.submodule_search_locations[0]) / "lib").glob("*.so"))
    for lib in libs:
        lib.rename(lib.with_name(lib.name + ".cuda-build"))
    ok, error = imports_torchaudio()
    if not ok:
        print(f"torchaudio still does not import after setting aside {len(libs)} libraries: {error}",
              file=sys.stderr)
        return 1
    print(f"torch {torch.__version__} is a CPU build: set aside torchaudio's {len(libs)} CUDA extension libraries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
