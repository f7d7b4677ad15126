"""Record and sample contracts of microturn.

Every Parquet table that a stage writes has its Arrow schema here (:mod:`.tables`), and every
row passes :func:`validate_rows` before it is written. ``SCHEMA_VERSION`` is stored in the
metadata of every Parquet file so that readers can refuse data they do not understand.
"""

from microturn.schemas.ids import conversation_id, split_of
from microturn.schemas.tables import SCHEMA_VERSION, TABLE_NAMES, schema_for
from microturn.schemas.validate import RowError, check_media_paths, validate_row, validate_rows

__all__ = [
    "SCHEMA_VERSION",
    "TABLE_NAMES",
    "RowError",
    "conversation_id",
    "schema_for",
    "split_of",
    "check_media_paths",
    "validate_row",
    "validate_rows",
]
