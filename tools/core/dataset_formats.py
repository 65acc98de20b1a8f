"""The file formats a registered dataset may have (CSV, Parquet): recognising them and reading their bytes.

CSV parsing for schema inference stays in ``tools.core.registry`` (it checks every row); Parquet files carry
their own schema, read here with pyarrow. pandas and pyarrow are imported on use only.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pandas as pd

DataFormat = Literal["csv", "parquet"]
_SUFFIXES: dict[str, DataFormat] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class FormatError(ValueError):
    """The bytes are not a readable file of the expected format."""


def format_of(name: str) -> DataFormat | None:
    """Return the format a file or key name's suffix names (``.csv``, ``.parquet``, ``.pq``), else None."""
    lowered = name.lower()
    return next((fmt for suffix, fmt in _SUFFIXES.items() if lowered.endswith(suffix)), None)


def _dtype_name(arrow_type: object) -> str:
    import pyarrow.types as pat

    if pat.is_integer(arrow_type):
        return "int64"
    if pat.is_floating(arrow_type) or pat.is_decimal(arrow_type):
        return "float64"
    return "string"  # strings, booleans, dates, categories: read as labels or one-hot features


def parquet_table(data: bytes, source: str) -> tuple[list[str], dict[str, str], dict[str, list[str]]]:
    """Return a Parquet file's columns, their dtypes (int64/float64/string) and each column's values as text.

    A column of integers with missing values becomes float64 (as pandas reads it).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FormatError(f"{source} is not a readable Parquet file: {exc}") from exc
    columns = [str(name) for name in table.column_names]
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise FormatError(f"{source} has duplicate column names: {', '.join(duplicates)}")
    if table.num_rows == 0:
        raise FormatError(f"{source} has columns but no rows")
    dtypes: dict[str, str] = {}
    values: dict[str, list[str]] = {}
    for name, column in zip(columns, table.columns, strict=True):
        dtype = _dtype_name(column.type)
        if dtype == "int64" and column.null_count:
            dtype = "float64"
        dtypes[name] = dtype
        values[name] = ["" if v is None else str(v) for v in column.to_pylist()]
    return columns, dtypes, values


def read_frame(data: bytes, fmt: DataFormat, dtypes: dict[str, str]) -> pd.DataFrame:
    """Return ``data`` as a DataFrame whose text columns (dtype 'string' in the schema) are strings."""
    import pandas as pd

    text_columns = {c: "string" for c, dtype in dtypes.items() if dtype == "string"}
    if fmt == "csv":
        return pd.read_csv(io.BytesIO(data), dtype=text_columns)  # type: ignore[arg-type]
    frame = pd.read_parquet(io.BytesIO(data))
    return frame.astype({c: "string" for c in text_columns if c in frame.columns})
