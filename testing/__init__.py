"""Fixtures that the tests and the benchmarks share: the reference recording and its
references (:mod:`.sample_call`), conversation records written as an ingest output
(:mod:`.records`), and reading a folder back byte for byte (:mod:`.files`).

A development aid installed with the package so that ``bench/`` and ``tests/`` import one copy;
no runtime package imports it.
"""
