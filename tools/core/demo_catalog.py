"""The demo datasets a fresh workspace's catalog starts with (stand-ins for Data Engineering's catalog).

Every table is produced deterministically — scikit-learn's bundled data files, or integer-only
arithmetic on a legacy ``numpy.random.RandomState`` (whose stream numpy guarantees is frozen) — and
written as text with a fixed float format, so each version's sha256 is identical on every machine.
numpy and scikit-learn are imported inside functions: only the first open of a workspace pays for them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Task = Literal["classification", "regression"]
Status = Literal["validated", "raw", "deprecated"]

DEMO_OWNER = "data-engineering"
_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: the example training projects a new workspace registers: (name, directory, dataset it is validated
#: on). Registering costs ~0.1 s; the validation dry run ~25-40 s each, so it runs on first use instead.
DEMO_PROJECTS: tuple[tuple[str, Path, str], ...] = (
    ("xgboost-tabular", _EXAMPLES / "xgboost-tabular", "breast_cancer@1"),
    ("mlp-tabular", _EXAMPLES / "mlp-tabular", "breast_cancer@1"),
)


@dataclass(frozen=True)
class DemoTable:
    """One demo dataset version: its catalog metadata and its rows as already-formatted text cells."""

    name: str
    version: str
    status: Status
    task: Task
    target: str
    description: str
    columns: list[str]
    dtypes: dict[str, str]
    rows: list[list[str]]
    pii_columns: list[str] = field(default_factory=list)


def snake_case(name: str) -> str:
    """Return ``name`` as a lower-case identifier: 'sepal length (cm)' -> 'sepal_length_cm'."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")


def format_number(value: float) -> str:
    """Format a number the same way on every machine (integers without a decimal point)."""
    as_float = float(value)
    if as_float.is_integer():
        return str(int(as_float))
    # repr() is the shortest string that round-trips the double: exact and platform independent.
    return repr(as_float)


def _numeric_table(columns: Sequence[str], matrix: Any) -> tuple[dict[str, str], list[list[str]]]:
    """Format a 2-D numeric array; a column whose values are all integral gets dtype int64."""
    dtypes = {
        col: "int64" if all(float(v).is_integer() for v in matrix[:, j]) else "float64"
        for j, col in enumerate(columns)
    }
    rows = [[format_number(v) for v in row] for row in matrix.tolist()]
    return dtypes, rows


def _sklearn_table(
    loader: str,
    name: str,
    version: str,
    task: Task,
    description: str,
    status: Status = "validated",
    keep_features: int | None = None,
    **loader_kwargs: Any,
) -> DemoTable:
    import numpy as np
    from sklearn import datasets

    bunch = getattr(datasets, loader)(**loader_kwargs)
    features = [snake_case(f) for f in bunch.feature_names][:keep_features]
    data = bunch.data[:, : len(features)]
    columns = [*features, "target"]
    dtypes, rows = _numeric_table(columns, np.column_stack([data, bunch.target]))
    return DemoTable(name, version, status, task, "target", description, columns, dtypes, rows)


_FIRST = ["ana", "ben", "chen", "dana", "eli", "fatima", "george", "hana", "ivan", "julia", "kofi", "lena"]
_LAST = ["smith", "garcia", "nguyen", "kim", "muller", "okafor", "rossi", "tanaka", "silva", "cohen"]


def _cents(value: int) -> str:
    return f"{value // 100}.{value % 100:02d}"


def customer_churn_table(n_rows: int = 1000, seed: int = 7) -> DemoTable:
    """Build the synthetic churn table with PII columns (email, phone); integer arithmetic only."""
    import numpy as np

    rng = np.random.RandomState(seed)
    columns = [
        "customer_id", "email", "phone", "tenure_months", "monthly_charges", "support_tickets",
        "num_products", "is_senior", "contract_months", "churned",
    ]  # fmt: skip
    rows = []
    for i in range(n_rows):
        first, last = _FIRST[rng.randint(len(_FIRST))], _LAST[rng.randint(len(_LAST))]
        phone = f"+1-555-{rng.randint(200, 1000):03d}-{rng.randint(0, 10000):04d}"
        tenure, cents, tickets = rng.randint(1, 73), rng.randint(1800, 12000), rng.randint(0, 8)
        products, senior = rng.randint(1, 5), int(rng.randint(0, 100) < 16)
        contract = (1, 12, 24)[rng.randint(3)]
        score = 8 * tickets - tenure // 2 + (cents - 6000) // 400 - 12 * (contract > 1) + 6 * senior
        churned = int(score - 3 * products + rng.randint(-15, 16) > 3)
        email = f"{first}.{last}{i}@example.com"
        cells = [100000 + i, email, phone, tenure, _cents(cents), tickets, products, senior, contract]
        rows.append([str(c) for c in [*cells, churned]])
    dtypes = {c: "int64" for c in columns} | {
        "email": "string",
        "phone": "string",
        "monthly_charges": "float64",
    }
    description = "Synthetic telecom churn (seeded); email and phone are PII and are dropped before training."
    return DemoTable(
        "customer_churn", "1", "validated", "classification", "churned", description, columns, dtypes, rows,
        pii_columns=["email", "phone"],
    )  # fmt: skip


def customer_events_table(n_rows: int = 500, seed: int = 11) -> DemoTable:
    """Build the raw, unvalidated clickstream extract (gaps and duplicates left in on purpose)."""
    import numpy as np

    rng = np.random.RandomState(seed)
    columns = ["event_id", "user_id", "event_type", "event_ts", "value", "converted"]
    kinds = ["view", "click", "add_to_cart", "purchase"]
    rows = []
    for i in range(n_rows):
        kind = rng.randint(len(kinds))
        second = 1_700_000_000 + int(rng.randint(0, 86_400 * 30))
        value = "" if rng.randint(0, 10) == 0 else _cents(int(rng.randint(0, 50_000)))
        rows.append([str(i), str(rng.randint(1, 200)), kinds[kind], str(second), value, str(int(kind == 3))])
        if rng.randint(0, 25) == 0:
            rows.append(list(rows[-1]))  # a duplicated event, as raw feeds have
    dtypes = {"event_id": "int64", "user_id": "int64", "event_type": "string", "event_ts": "int64"}
    dtypes |= {"value": "float64", "converted": "int64"}
    description = "Raw clickstream extract, not validated by Data Engineering (missing values, duplicates)."
    return DemoTable(
        "customer_events", "1", "raw", "classification", "converted", description, columns, dtypes, rows
    )


def _sklearn_tables() -> list[DemoTable]:
    src = "from scikit-learn's bundled copy"
    return [
        _sklearn_table("load_breast_cancer", "breast_cancer", "1", "classification",
                       f"Wisconsin diagnostic breast cancer, binary target (1 = benign), {src}."),
        _sklearn_table("load_wine", "wine", "1", "classification", f"Wine cultivars, 3 classes, {src}."),
        _sklearn_table("load_wine", "wine", "0", "classification",
                       "Early wine extract missing 3 features; deprecated, use wine@1.",
                       status="deprecated", keep_features=10),
        _sklearn_table("load_diabetes", "diabetes", "1", "regression",
                       f"Diabetes progression after one year (unscaled features), {src}.", scaled=False),
        _sklearn_table("load_digits", "digits", "1", "classification",
                       f"8x8 handwritten digits, 10 classes, {src}."),
        _sklearn_table("load_iris", "iris", "1", "classification", f"Iris species, 3 classes, {src}."),
    ]  # fmt: skip


DEMO_BUILDERS: tuple[Callable[[], list[DemoTable]], ...] = (
    _sklearn_tables,
    lambda: [customer_churn_table()],
    lambda: [customer_events_table()],
)


def demo_tables() -> list[DemoTable]:
    """Return every demo dataset version, in catalog order."""
    return [table for build in DEMO_BUILDERS for table in build()]
