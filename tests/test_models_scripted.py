"""Choosing a chat model from a string, and the scripted model that tests and evals replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from agent.chat_models import (
    ScriptedChatModel,
    ScriptExhausted,
    make_chat_model,
    to_ai_message,
)
from agent.offline import OfflineChatModel
from agent.state import IntakeDecision, intake_tool_schema
from tools.core.settings import Settings

INTAKE_ARGS = {"intent": "question", "question": "best run in smoke?"}
GET_RUN = {
    "type": "function",
    "function": {
        "name": "get_run",
        "description": "Get a run.",
        "parameters": {"type": "object", "properties": {"run_id": {"type": "string"}}},
    },
}


def test_offline_is_the_default(tmp_path: Path) -> None:
    assert isinstance(make_chat_model(), OfflineChatModel)
    assert isinstance(make_chat_model("offline"), OfflineChatModel)
    assert isinstance(make_chat_model(None, Settings(home=tmp_path)), OfflineChatModel)


def test_settings_model_is_used_when_no_spec_is_given(tmp_path: Path) -> None:
    script = tmp_path / "s.json"
    script.write_text(json.dumps(["hi"]))
    model = make_chat_model(None, Settings(home=tmp_path, model=f"scripted:{script}"))
    assert isinstance(model, ScriptedChatModel)


@pytest.mark.parametrize(
    "spec", ["gpt-4o", "openai:", "openai", "scripted:", "anthropic:claude", "offline:x"]
)
def test_unknown_specs_list_the_valid_forms(spec: str) -> None:
    with pytest.raises(ValueError, match=r"valid forms: offline \| openai:<model>.*\| scripted:<file"):
        make_chat_model(spec)


def test_openai_without_key_or_base_url_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="needs OPENAI_API_KEY .* or OPENAI_BASE_URL"):
        make_chat_model("openai:gpt-4o-mini")


def test_scripted_file_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "script.yaml"
    yaml_file.write_text(
        "responses:\n"
        "  - tool_calls:\n"
        "      - name: record_intake\n"
        "        args: {intent: question, question: 'best run in smoke?'}\n"
        "  - The best run is abc.\n"
    )
    model = make_chat_model(f"scripted:{yaml_file}")
    first = model.bind_tools([intake_tool_schema()], tool_choice="record_intake").invoke([HumanMessage("q")])
    assert IntakeDecision.model_validate(first.tool_calls[0]["args"]).intent == "question"
    assert model.invoke([HumanMessage("q")]).content == "The best run is abc."
    json_file = tmp_path / "script.json"
    json_file.write_text(json.dumps([{"content": "hello"}]))
    assert make_chat_model(f"scripted:{json_file}").invoke("x").content == "hello"


def test_scripted_file_errors_are_specific(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="scripted model file not found"):
        make_chat_model(f"scripted:{tmp_path / 'missing.yaml'}")
    bad = tmp_path / "bad.yaml"
    bad.write_text("content: not a list\n")
    with pytest.raises(ValueError, match="must be a list of replies"):
        make_chat_model(f"scripted:{bad}")
    broken = tmp_path / "broken.yaml"
    broken.write_text("- {content: [unclosed\n")
    with pytest.raises(ValueError, match="broken.yaml: not valid YAML"):
        make_chat_model(f"scripted:{broken}")


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (42, "expected str, dict or AIMessage"),
        ({"text": "hi"}, "unknown keys \\['text'\\]"),
        ({"tool_calls": [{"args": {}}]}, "tool call #1: needs a 'name'"),
        ({"tool_calls": [{"name": "x", "args": [1]}]}, "'args' must be a mapping"),
    ],
)
def test_malformed_replies_are_rejected_up_front(reply: object, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ScriptedChatModel(["fine", reply])  # type: ignore[list-item]


def test_replays_in_order_with_tool_call_ids() -> None:
    given = AIMessage(content="given")
    model = ScriptedChatModel(
        [
            {
                "tool_calls": [
                    {"name": "get_run", "args": {"run_id": "a"}},
                    {"name": "get_run", "args": '{"run_id": "b"}', "id": "mine"},
                ]
            },
            "plain text",
            given,
        ]
    )
    first = model.invoke("q")
    assert [(c["name"], c["args"], c["id"]) for c in first.tool_calls] == [
        ("get_run", {"run_id": "a"}, "call_1_1"),
        ("get_run", {"run_id": "b"}, "mine"),
    ]
    assert model.invoke("q").content == "plain text"
    assert model.invoke("q").content == "given"
    model.assert_complete()


def test_bind_tools_returns_itself_and_records_the_tools() -> None:
    model = ScriptedChatModel(["x"])
    assert model.bind_tools([intake_tool_schema()], tool_choice="record_intake") is model
    assert model.bind_tools([GET_RUN]) is model
    assert model.bindings == [["record_intake"], ["get_run"]]
    assert model.bound_tools == [GET_RUN] and model.tool_choice is None


def test_a_tool_loop_runs_until_text() -> None:
    model = ScriptedChatModel(
        [{"tool_calls": [{"name": "get_run", "args": {"run_id": "r1"}}]}, "Run r1 finished."]
    )
    bound = model.bind_tools([GET_RUN])
    messages: list = [HumanMessage("show run r1")]
    while True:
        reply = bound.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            break
        messages += [
            ToolMessage('{"run_id": "r1", "status": "FINISHED"}', tool_call_id=c["id"])
            for c in reply.tool_calls
        ]
    assert messages[-1].content == "Run r1 finished."
    assert [len(c) for c in model.calls] == [1, 3]


def test_running_out_raises_with_the_call_number_and_last_messages() -> None:
    model = ScriptedChatModel(["only one"])
    model.invoke([HumanMessage("first")])
    with pytest.raises(
        ScriptExhausted, match=r"call #2 but the script has only 1 replies.*'second question'"
    ):
        model.invoke([HumanMessage("second question")])


def test_assert_complete_names_the_unused_reply() -> None:
    model = ScriptedChatModel(["used", "never used"])
    model.invoke("q")
    with pytest.raises(AssertionError, match="1 of 2 replies were not used.*'never used'"):
        model.assert_complete()


def test_usage_metadata_is_counted_unless_scripted() -> None:
    counted = (
        ScriptedChatModel(["a reply of several tokens"]).bind_tools([GET_RUN]).invoke([HumanMessage("hi")])
    )
    assert counted.usage_metadata is not None
    assert counted.usage_metadata["output_tokens"] == 5
    assert counted.usage_metadata["input_tokens"] > 20  # the message plus the tool schema
    fixed = AIMessage(content="x", usage_metadata={"input_tokens": 7, "output_tokens": 1, "total_tokens": 8})
    assert ScriptedChatModel([fixed]).invoke("q").usage_metadata["input_tokens"] == 7


def test_to_ai_message_accepts_every_form() -> None:
    assert to_ai_message("t").content == "t"
    assert to_ai_message({"content": "c"}).content == "c"
    msg = AIMessage(content="m")
    assert to_ai_message(msg) is msg


def test_intake_tool_schema_is_the_intake_decision() -> None:
    schema = intake_tool_schema()
    function = schema["function"]
    assert schema["type"] == "function" and function["name"] == "record_intake"
    assert set(function["parameters"]["required"]) == {"intent"}
    assert "ExperimentRequestDraft" in function["parameters"]["$defs"]
    assert function["description"].startswith("Record what the user's latest message asks for")
