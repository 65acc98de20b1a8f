"""The file formats a registered dataset may have (CSV, Parquet): recognising, parsing and reading them.

CSV columns get their dtypes inferred from every cell (and every row is checked against the header);
Parquet files carry their own schema, read with pyarrow. pandas and pyarrow are imported on use only.
``tools.core.registry.infer_schema`` turns either into a ``DatasetSchema``.
"""

from __future__ import annotations

import csv
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


#: an integer target with at most this many distinct values is inferred to be a classification target.
_MAX_CLASSES = 20


def _cell_dtype(value: str) -> str:
    try:
        int(value)
        return "int64"
    except ValueError:
        pass
    try:
        float(value)
        return "float64"
    except ValueError:
        return "string"


def _column_dtype(values: list[str]) -> str:
    kinds = {_cell_dtype(v) for v in values if v != ""}
    if not kinds or "string" in kinds:
        return "string"
    if kinds == {"int64"} and "" not in values:
        return "int64"
    return "float64"  # mixed ints/floats, or ints with gaps (read as NaN)


def infer_task(values: list[str], dtype: str) -> Literal["classification", "regression"]:
    """Return the task a target column suggests: text or few distinct integers mean classification."""
    if dtype == "string" or (dtype == "int64" and len(set(values)) <= _MAX_CLASSES):
        return "classification"
    return "regression"


def _parse_csv(data: bytes, source: str) -> tuple[list[str], list[list[str]]]:
    """Return the header and rows of CSV bytes, every row as long as the header."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{source} is not UTF-8 text: {exc}") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise FormatError(f"{source} is empty or has no header row")
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise FormatError(f"{source} has duplicate column names: {', '.join(duplicates)}")
    rows = list(reader)
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise FormatError(f"{source} line {line} has {len(row)} cells; the header has {len(header)}")
    if not rows:
        raise FormatError(f"{source} has a header but no data rows")
    return header, rows


def csv_table(data: bytes, source: str) -> tuple[list[str], dict[str, str], dict[str, list[str]]]:
    """Return a CSV file's columns, their inferred dtypes (int64/float64/string) and each column's values."""
    header, rows = _parse_csv(data, source)
    values = {name: [row[j] for row in rows] for j, name in enumerate(header)}
    return header, {name: _column_dtype(column) for name, column in values.items()}, values


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


def write_frame(frame: pd.DataFrame, fmt: DataFormat) -> bytes:
    """Return ``frame`` encoded as ``fmt`` (no index column), as ``read_frame`` reads it back."""
    import io

    buffer = io.BytesIO()
    if fmt == "parquet":
        frame.to_parquet(buffer, index=False)
    else:
        frame.to_csv(buffer, index=False)
    return buffer.getvalue()
