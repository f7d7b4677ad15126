"""Reading a Parquet file held in memory, so that no Arrow thread ever needs the GIL.

``pq.read_table(io.BytesIO(data))`` (or ``pa.BufferReader(data)`` over ``bytes``) hands Arrow
buffers owned by Python objects. Arrow's dataset reader opens the file and pre-buffers its
column chunks on Arrow's I/O thread pool, and the last reference to such a buffer is sometimes
dropped on that pool *after* ``read_table`` has returned. Releasing a Python-owned buffer takes
the GIL; when the main thread has already entered interpreter shutdown, CPython 3.11 ends a
thread that asks for the GIL with ``pthread_exit``, whose unwind through Arrow's ``noexcept``
destructors calls ``std::terminate``: "terminate called without an active exception", exit
status 134, after a run that had finished its work. Measured with pyarrow 25.0.1 on 2 cores:
a script that reads one small Parquet file three times from a ``BytesIO`` and exits aborted in
13 of 200 runs (``bytes`` through ``pa.BufferReader``: 10 of 200); the same reads from a buffer
Arrow owns: 0 of 200. The core dump of an aborted ``microturn shard`` run shows the main thread
in ``Py_FinalizeEx`` and an Arrow I/O thread in ``PyBuffer::~PyBuffer`` ->
``PyGILState_Ensure`` -> ``PyThread_exit_thread``.

So every in-memory Parquet read goes through :func:`read_parquet_bytes` (or
:func:`parquet_file_bytes`, to read it a batch at a time), which copies the bytes into Arrow's
memory pool first (one ``memcpy`` of a file already read whole).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq


def arrow_owned(data: bytes | bytearray | memoryview) -> pa.Buffer:
    """A copy of ``data`` in Arrow's memory pool: releasing it never touches Python."""
    out = pa.BufferOutputStream()
    out.write(data)
    return out.getvalue()


def read_parquet_bytes(data: bytes | bytearray | memoryview, schema: pa.Schema | None = None) -> pa.Table:
    """The table in the Parquet file ``data`` (read with ``schema`` when given), read from an
    Arrow-owned copy so that Arrow's threads never hold a Python object (see the module doc)."""
    return pq.read_table(pa.BufferReader(arrow_owned(data)), schema=schema)


def parquet_file_bytes(data: bytes | bytearray | memoryview) -> pq.ParquetFile:
    """The Parquet file ``data`` opened for reading by row group or batch, over an Arrow-owned
    copy (see the module doc)."""
    return pq.ParquetFile(pa.BufferReader(arrow_owned(data)))
