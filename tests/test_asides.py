"""Asides beside a request (agent.grammar.asides): an allowlist decides what asks for nothing."""

from __future__ import annotations

import pytest

from agent.grammar.asides import is_aside, pasted_details
from agent.grammar.intake import parse_message

REQUEST = "Train lightgbm on wine@1 optimizing accuracy in experiment asides."


@pytest.mark.parametrize(
    "extra",
    [
        "Don't log anything to MLflow.",
        "Also skip the validation split.",
        "Ping me when done.",
        "It is for the Q3 review.",
        "Use the test set for early stopping.",
        "Make it the default for the team.",
    ],
)
def test_an_instruction_in_its_own_sentence_is_not_an_aside(extra: str) -> None:
    decision, _ = parse_message(f"{REQUEST} {extra}")
    parts = [p for p in decision.not_understood if not p.startswith("ignored ")]
    assert parts, decision  # the grammar left it over
    details = pasted_details(decision.not_understood, extra)
    assert not all(is_aside(p, details) for p in parts)


@pytest.mark.parametrize(
    "extra",
    ["Thanks a lot!", "Much appreciated.", "Have a nice day.", "Thank you so much, you are a star!"],
)
def test_courtesy_is_an_aside(extra: str) -> None:
    decision, _ = parse_message(f"{REQUEST} {extra}")
    assert all(is_aside(p, None) for p in decision.not_understood if not p.startswith("ignored "))


def test_the_words_around_pasted_details_are_an_aside_only_when_details_were_pasted() -> None:
    text = f"{REQUEST} If anything goes wrong, my e-mail is [REDACTED:email]."
    details = pasted_details([], text)
    assert details is not None and "email" in details
    assert is_aside("If anything goes wrong", details) and is_aside("e-mail REDACTED email", details)
    assert not is_aside("If anything goes wrong", None)  # without details it is an instruction
    assert not is_aside("send me the results there", details)
    key = "sk-proj-" + "CANARYq7Xv2LmZ9tR4wK1nB6pD3sF8"
    raw, _ = parse_message(f"{REQUEST} My OpenAI key is {key} in case you need it.")
    found = pasted_details(raw.not_understood, "")
    assert found is not None
    assert all(is_aside(p, found) for p in raw.not_understood if not p.startswith("ignored "))
