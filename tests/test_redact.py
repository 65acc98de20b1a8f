"""Redaction: secrets and personal data are replaced; IDs, hashes, numbers, refs and paths are not."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from tools.core.redact import luhn_valid, redact, redact_text, redacted_paths

SECRETS = [
    ("key sk-proj-abcdefghijklmnopqrstuvwxyz123456 end", "key [REDACTED:api_key] end"),
    ("OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwx", "OPENAI_API_KEY=[REDACTED:api_key]"),
    ("slack xoxb-123456789012-abcdefghijkl", "slack [REDACTED:slack_token]"),
    ("aws AKIAIOSFODNN7EXAMPLE", "aws [REDACTED:aws_access_key]"),
    ("gh ghp_" + "a1B2" * 9, "gh [REDACTED:github_token]"),
    ("Authorization: Bearer abc.def.ghijklmnop", "Authorization: Bearer [REDACTED:token]"),
    ("password=hunter2 and secret: s3cr3t", "password=[REDACTED:secret] and secret: [REDACTED:secret]"),
    ('{"api_key": "abc123"}', '{"api_key": "[REDACTED:secret]"}'),
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "AWS_SECRET_ACCESS_KEY=[REDACTED:secret]"),
    ("db postgresql://alice:p4ss@db.example.com:5432/x", "db postgresql://alice:***@db.example.com:5432/x"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIB\n-----END RSA PRIVATE KEY-----", "[REDACTED:private_key]"),
    ("-----BEGIN PRIVATE KEY-----\nMIIEpAIB truncated", "[REDACTED:private_key]"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N", "jwt [REDACTED:token]"),
]
PII = [
    ("mail alice.smith@example.com now", "mail [REDACTED:email] now"),
    ("call +1-555-702-5699 today", "call [REDACTED:phone] today"),
    ("(415) 555-2671", "[REDACTED:phone]"),
    ("555.123.4567", "[REDACTED:phone]"),
    ("uk +44 20 7946 0958", "uk [REDACTED:phone]"),
    ("e164 +14155552671", "e164 [REDACTED:phone]"),
    ("visa 4111 1111 1111 1111", "visa [REDACTED:card_number]"),
    ("mc 5500-0000-0000-0004", "mc [REDACTED:card_number]"),
    ("amex 378282246310005.", "amex [REDACTED:card_number]."),
    ("ssn 123-45-6789", "ssn [REDACTED:national_id]"),
]
UNCHANGED = [
    "run a1b2c3d4e5f60718293a4b5c6d7e8f90",
    "432ff316e7bfb60b70a275064b4401315cc39f09c9099d031013a23647e98687",
    "roc_auc 0.9876543210123456 loss 1e-05 n=123456789012345",
    "breast_cancer@1 and customer_churn@1",
    "/home/u/.expagent/registry/data/breast_cancer/1.csv",
    "http://127.0.0.1:5000/#/experiments/1/runs/abc",
    "sqlite:////tmp/home/mlflow.db",
    "s3://bucket/key.csv",
    "2024-01-15T12:30:45.123456+00:00 and 2024-01-15 12:30:45",
    "version 1.2.3",
    "max_tokens: 100, num_leaves=31 token_budget=12000 learning_rate=0.05",
    "epoch ms 1700000000000",
    "git@github.com:org/repo.git",
    "4111111111111112",  # fails the Luhn check: not a card
    "step 1234567 loss 0.123",
    "000-12-3456",  # not a valid SSN area number
    "use a bearer token for auth",
]


@pytest.mark.parametrize(("text", "expected"), SECRETS + PII)
def test_secrets_and_personal_data_are_replaced(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize("text", UNCHANGED)
def test_ids_numbers_refs_and_paths_are_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")


class Note(BaseModel):
    text: str
    score: float


def test_redact_walks_dicts_lists_and_models() -> None:
    value = {
        "params": {"db_password": "plain", "lr": 0.1, "token_count": 5, "api_key": "whatever"},
        "notes": [Note(text="ping bob@corp.io", score=0.5), "sk-" + "x" * 30],
        "ok": True,
        "none": None,
    }
    assert redact(value) == {
        "params": {
            "db_password": "[REDACTED:secret]", "lr": 0.1, "token_count": 5, "api_key": "[REDACTED:secret]"
        },
        "notes": [{"text": "ping [REDACTED:email]", "score": 0.5}, "[REDACTED:api_key]"],
        "ok": True,
        "none": None,
    }  # fmt: skip


def test_redact_does_not_mutate_its_input() -> None:
    value = {"tags": {"owner": "a@b.io"}}
    redact(value)
    assert value == {"tags": {"owner": "a@b.io"}}


def test_redacted_paths_name_what_changed() -> None:
    original = {"params": {"key": "sk-" + "y" * 30, "lr": 0.1}, "tags": [{"who": "x@y.io"}, {"n": "1"}]}
    assert redacted_paths(original, redact(original)) == ["params.key", "tags[0].who"]


def test_short_and_long_texts_are_redacted_alike_every_time() -> None:
    secret = "contact bob@example.com with api_key=abc123"
    short = redact_text(secret)
    assert redact_text(secret) == short and "bob@example.com" not in short and "abc123" not in short
    long = redact_text("x " * 600 + secret)
    assert len("x " * 600 + secret) > 512 and long.endswith(short)
