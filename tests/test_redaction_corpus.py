"""The redaction corpus (tests/data/redaction_corpus.yaml): 100 % of secrets go, 100 % of keepers stay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.core.redact import redact, redact_text

CORPUS: dict[str, Any] = yaml.safe_load(
    (Path(__file__).parent / "data" / "redaction_corpus.yaml").read_text()
)
CONTEXTS = ("{s}", "see {s} here", '{{"value": "{s}"}}', "creds={s};next")
SECRET_ROWS = [(c.format(s=str(s)), str(s)) for s in CORPUS["secrets"] for c in CONTEXTS]
PHRASE_ROWS = [(row["text"], row["secret"]) for row in CORPUS["phrases"]]


def test_the_corpus_is_large_enough() -> None:
    assert len(SECRET_ROWS) + len(PHRASE_ROWS) + len(CORPUS["keep"]) >= 200
    assert len(CORPUS["keep"]) >= 60


@pytest.mark.parametrize(("text", "secret"), SECRET_ROWS + PHRASE_ROWS)
def test_every_secret_is_removed(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out and "[REDACTED" in out or "***" in out, out


@pytest.mark.parametrize("text", CORPUS["keep"])
def test_every_keeper_passes_unchanged(text: str) -> None:
    assert redact_text(str(text)) == str(text)


def test_card_numbers_sent_as_json_numbers_are_redacted_and_other_numbers_kept() -> None:
    value = {"params": {"n_estimators": 4111111111111111, "max_depth": 1234567890123}, "seed": 42}
    assert redact(value) == {
        "params": {"n_estimators": "[REDACTED:card_number]", "max_depth": 1234567890123},
        "seed": 42,
    }
