"""The 11 AMI meeting clips vendored in ``tests/data/ami-dev`` (see its README), with references.

30 s each, 16 kHz mono FLAC, 1 to 4 speakers with overlapped speech, reference RTTMs and UEMs.
They sit in the repository, not in the installed package: tests and benchmarks run from a
checkout.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["AMI_DIR", "ami_uris"]

AMI_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "ami-dev"


def ami_uris() -> list[str]:
    """The clip names (``dev01``, ``trn00``, ...), sorted; an error outside a checkout."""
    if not AMI_DIR.is_dir():
        raise ValueError(f"{AMI_DIR} is missing: the ami-dev clips ship with the repository, not the package; "
                         "run from a checkout")
    return sorted(p.stem for p in AMI_DIR.glob("*.flac"))
