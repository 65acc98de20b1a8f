"""Markdown -> Slack mrkdwn and splitting answers within Slack's Block Kit limits."""

from __future__ import annotations

import re

import pytest

from agent.slack_blocks import (
    APPROVE_ACTION,
    BLOCKS_PER_MESSAGE,
    CANCEL_ACTION,
    FENCE,
    REJECT_ACTION,
    answer_messages,
    approval_message,
    block_texts,
    decided_blocks,
    progress_message,
    split_mrkdwn,
    split_text,
    to_mrkdwn,
)
from evals.fakes.slack import blocks_problem

FIVE = ("Plan", "Changes", "Verification", "Rollback", "Summary")


def _nonspace(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("### Plan", "*Plan*"),
        ("# **Big** title", "*Big title*"),
        ("**best run** beats baseline", "*best run* beats baseline"),
        ("an *italic* word", "an _italic_ word"),
        ("__also bold__", "*also bold*"),
        ("~~gone~~", "~gone~"),
        ("see [run abc](http://127.0.0.1:5000/#/runs/abc)", "see <http://127.0.0.1:5000/#/runs/abc|run abc>"),
        ("<https://mlflow.example/x>", "<https://mlflow.example/x>"),
        ("- one\n* two", "• one\n• two"),
        ("  - nested", "  • nested"),
        ("auc > 0.9 & loss < 1", "auc &gt; 0.9 &amp; loss &lt; 1"),
        ("> quoted *note*", "> quoted _note_"),
        ("`a<b` and **c**", "`a&lt;b` and *c*"),
        ("3 * 4 * 5", "3 * 4 * 5"),
        ("snake_case_name stays", "snake_case_name stays"),
    ],
)
def test_to_mrkdwn_converts_inline_markdown(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_tables_become_aligned_monospace_blocks() -> None:
    markdown = "| run | **roc_auc** |\n|---|---:|\n| [abc](http://x/abc) | 0.91 |\n| baseline | 0.88 |\nafter"
    lines = to_mrkdwn(markdown).split("\n")
    assert lines == [
        FENCE,
        "run                 roc_auc",
        "abc (http://x/abc)  0.91",
        "baseline            0.88",
        FENCE,
        "after",
    ]


def test_code_fences_keep_their_text_and_drop_the_language() -> None:
    assert to_mrkdwn("```python\nif a < b: **x**\n```") == f"{FENCE}\nif a &lt; b: **x**\n{FENCE}"


def test_split_text_pieces_fit_and_concatenate_to_the_original() -> None:
    text = ("word " * 900) + "\n\n" + ("x" * 7000) + "\nend"
    pieces = split_text(text, 3000)
    assert all(0 < len(piece) <= 3000 for piece in pieces)
    assert "".join(pieces) == text
    assert pieces[0].endswith(" ")  # cut at a space, not inside a word


def test_split_text_rejects_a_zero_limit() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        split_text("abc", 0)


def test_split_mrkdwn_reopens_code_fences_cut_in_two() -> None:
    code = "\n".join(f"line {i:04d} value={i * 3}" for i in range(400))
    text = f"intro\n{FENCE}\n{code}\n{FENCE}\noutro"
    pieces = split_mrkdwn(text, 1000)
    assert len(pieces) > 5
    assert all(len(piece) <= 1000 for piece in pieces)
    for piece in pieces:  # each piece renders on its own: fences balanced
        assert piece.count(FENCE) % 2 == 0, piece[:80]
    joined = "".join(pieces)
    added = joined.count(FENCE) - 2
    assert added == 2 * (len(pieces) - 1) or added > 0
    assert _nonspace(joined.replace(FENCE, "")) == _nonspace(text.replace(FENCE, ""))


def _huge_sections() -> dict[str, str]:
    table = "| trial | roc_auc | params |\n|---|---|---|\n" + "\n".join(
        f"| {i} | 0.{9000 + i} | num_leaves={i}, learning_rate=0.0{i % 9 + 1} |" for i in range(300)
    )
    return {
        "Plan": "Baseline then **tune 300 trials**.\n"
        + "\n".join(f"- step {i}: do thing {i}" for i in range(200)),
        "Changes": table,
        "Verification": "ok " * 30000,
        "Rollback": "Nothing to roll back.",
        "Summary": "Best run `abc123` beats baseline `def456` by 0.02 roc_auc. " + "detail " * 15000,
    }


def test_a_long_answer_splits_into_valid_messages_without_losing_text() -> None:
    sections = _huge_sections()
    messages = answer_messages(sections)
    assert len(messages) >= 2
    for message in messages:
        assert blocks_problem(message.blocks) is None
        assert len(message.blocks) <= BLOCKS_PER_MESSAGE
        assert message.blocks[-1]["type"] != "header"  # a header is never cut from its body
        assert len(message.text) <= 300
    texts = block_texts(messages)
    headers = [t for m in messages for b in m.blocks if b["type"] == "header" for t in [b["text"]["text"]]]
    assert headers == list(FIVE)
    rendered = _nonspace("".join(texts).replace(FENCE, ""))
    expected = _nonspace(
        "".join(name + to_mrkdwn(body) for name, body in sections.items()).replace(FENCE, "")
    )
    assert rendered == expected
    assert "(part 1/" in messages[0].text


def test_a_short_answer_is_one_message_with_five_headers() -> None:
    sections = {name: f"{name} body" for name in FIVE} | {"Summary": "Best is [run abc](http://x/abc)."}
    messages = answer_messages(sections)
    assert len(messages) == 1
    assert [b["type"] for b in messages[0].blocks] == ["header", "section"] * 5
    assert messages[0].text == "expagent: Best is run abc."  # the notification text is plain


def test_approval_message_carries_the_thread_id_on_both_buttons() -> None:
    message = approval_message("slack-C1-1.2", "run 3 jobs at once", ["concurrency 3 > 2"], ["UBOSS"])
    actions = [b for b in message.blocks if b["type"] == "actions"][0]["elements"]
    assert {(e["action_id"], e["value"]) for e in actions} == {
        (APPROVE_ACTION, "slack-C1-1.2"),
        (REJECT_ACTION, "slack-C1-1.2"),
    }
    text = block_texts([message])[0]
    assert "concurrency 3 &gt; 2" in text and "<@UBOSS>" in text


def test_approval_message_says_when_nobody_can_approve() -> None:
    message = approval_message("slack-C1-1.2", "x", [], [])
    assert "EXPAGENT_SLACK_APPROVERS" in block_texts([message])[0]


def test_decided_blocks_drop_buttons_and_say_who_decided() -> None:
    message = approval_message("slack-C1-1.2", "x", ["r"], ["U1"])
    blocks = decided_blocks(message.blocks, "Approved by <@U1>")
    assert all(b["type"] != "actions" for b in blocks)
    assert blocks[-1]["elements"][0]["text"] == "Approved by <@U1>"


def test_progress_message_shows_latest_lines_and_cancel_only_while_running() -> None:
    lines = [f"trial {i} finished" for i in range(40)]
    running = progress_message("slack-C1-1.2", lines, "running")
    text = running.blocks[0]["text"]["text"]
    assert "trial 39 finished" in text and "trial 0 finished" not in text
    assert re.search(r"25 earlier update", text)
    assert running.blocks[-1]["elements"][0]["action_id"] == CANCEL_ACTION
    done = progress_message("slack-C1-1.2", lines, "done")
    assert [b["type"] for b in done.blocks] == ["section"]
    assert "Finished" in done.text
