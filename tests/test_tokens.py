"""Token accounting: tiktoken works with the network disabled; history trimming keeps tool pairs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from agent import tokens
from agent.tokens import (
    cache_key,
    count_messages,
    count_tokens,
    encoding_name_for,
    seed_cache,
    trim_history,
    usage_of,
)

REPO = Path(__file__).resolve().parents[1]

# A fresh interpreter with sockets disabled: no TIKTOKEN_CACHE_DIR, an empty per-user cache.
OFFLINE_SCRIPT = """
import socket

def refuse(*args, **kwargs):
    raise OSError("network disabled by test")

socket.socket.connect = refuse
socket.create_connection = refuse
from agent.tokens import count_tokens
import os
print(count_tokens("hello world", "gpt-4o"), count_tokens("hello world", "gpt-3.5-turbo"))
print(os.environ["TIKTOKEN_CACHE_DIR"])
"""


def test_encodings_load_with_the_network_disabled(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env.update(XDG_CACHE_HOME=str(tmp_path), PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT], env=env, capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    counts, cache_dir = done.stdout.split("\n")[:2]
    assert counts == "2 2"
    assert Path(cache_dir) == tmp_path / "expagent" / "tiktoken"
    assert {p.name for p in Path(cache_dir).iterdir()} == {
        "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
        "fb374d419588a4632f3f557e76b4b70aebbca790",
    }


def test_cache_files_are_named_and_hashed_as_tiktoken_expects(tmp_path: Path) -> None:
    from tiktoken_ext.openai_public import ENCODING_CONSTRUCTORS  # noqa: F401  (proves the plugin is there)

    seed_cache(tmp_path)
    assert cache_key("cl100k_base") == "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
    assert cache_key("o200k_base") == "fb374d419588a4632f3f557e76b4b70aebbca790"
    for name, expected in tokens._EXPECTED_SHA256.items():
        assert hashlib.sha256((tmp_path / cache_key(name)).read_bytes()).hexdigest() == expected


def test_a_corrupted_cache_file_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / cache_key("o200k_base")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"garbage")
    seed_cache(tmp_path)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == tokens._EXPECTED_SHA256["o200k_base"]
    assert not list(tmp_path.glob("*.tmp"))


def test_an_explicitly_empty_cache_dir_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert tokens.ensure_offline_encodings.__wrapped__() is None


def test_a_configured_cache_dir_is_seeded_and_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "mine"))
    assert tokens.ensure_offline_encodings.__wrapped__() == tmp_path / "mine"
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path / "mine")
    assert (tmp_path / "mine" / cache_key("cl100k_base")).is_file()


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("openai:gpt-4o-mini", "o200k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("gpt-4", "cl100k_base"),
        ("llama3.1:8b", "o200k_base"),
        (None, "o200k_base"),
        ("text-davinci-003", "o200k_base"),  # p50k is not bundled: never download it
    ],
)
def test_encoding_choice(model: str | None, encoding: str) -> None:
    assert encoding_name_for(model) == encoding


def test_counts_grow_with_content_and_tool_calls() -> None:
    assert count_tokens("") == 0
    assert count_tokens("the quick brown fox") == 4
    plain = AIMessage(content="ok")
    with_call = AIMessage(
        content="ok", tool_calls=[{"name": "get_run", "args": {"run_id": "abc"}, "id": "c1"}]
    )
    assert count_messages([with_call]) > count_messages([plain]) > count_tokens("ok")


def test_special_token_text_is_counted_not_rejected() -> None:
    assert count_tokens("<|endoftext|>") > 1


def test_usage_of_prefers_reported_usage_and_estimates_otherwise() -> None:
    reported = AIMessage(
        content="hi", usage_metadata={"input_tokens": 11, "output_tokens": 2, "total_tokens": 13}
    )
    assert usage_of(reported) == (11, 2)
    prompt = [HumanMessage("how did the last run do?")]
    prompt_tokens, completion_tokens = usage_of(AIMessage(content="It finished."), prompt)
    assert prompt_tokens == count_messages(prompt) and completion_tokens == count_tokens("It finished.")


def _conversation() -> list:
    call = AIMessage(
        content="",
        tool_calls=[
            {"name": "search_runs", "args": {"q": "x"}, "id": "t1"},
            {"name": "get_run", "args": {"run_id": "r"}, "id": "t2"},
        ],
    )
    return [
        SystemMessage("system prompt " * 20),
        HumanMessage("old question " * 50),
        AIMessage("old answer " * 50),
        HumanMessage("which run is best?"),
        call,
        ToolMessage("result one " * 30, tool_call_id="t1"),
        ToolMessage("result two " * 30, tool_call_id="t2"),
        AIMessage("run r is best"),
    ]


def test_trim_keeps_system_and_newest_turns_within_budget() -> None:
    messages = _conversation()
    budget = count_messages([messages[0], *messages[3:]])
    trimmed = trim_history(messages, budget)
    assert trimmed == [messages[0], *messages[3:]]
    assert count_messages(trimmed) <= budget
    assert trim_history(messages, 10**6) == messages


def test_trim_never_splits_a_tool_call_from_its_results() -> None:
    messages = _conversation()
    # Room for the system message and the last answer, but not the whole tool exchange.
    budget = count_messages([messages[0], messages[-1], messages[-2]])
    trimmed = trim_history(messages, budget)
    assert trimmed == [messages[0], messages[-1]]
    assert not any(isinstance(m, ToolMessage) for m in trimmed)


def test_trim_keeps_the_newest_turn_even_over_budget() -> None:
    messages = [SystemMessage("s"), HumanMessage("old"), HumanMessage("huge " * 500)]
    assert trim_history(messages, 5) == [messages[0], messages[-1]]


def test_trim_drops_tool_results_whose_call_is_gone() -> None:
    orphan = [SystemMessage("s"), ToolMessage("stale", tool_call_id="gone"), HumanMessage("hi")]
    assert trim_history(orphan, 10**6) == [orphan[0], orphan[2]]
