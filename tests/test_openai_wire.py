"""The openai:<model> path over real HTTP: ChatOpenAI against the local Chat Completions replay server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from agent.chat_models import make_chat_model
from agent.state import IntakeDecision, intake_tool_schema
from evals.fakes.openai_server import OpenAIReplayServer

KEY = "sk-test-wire-0123456789"
INTAKE_ARGS = {
    "intent": "experiment",
    "request": {
        "dataset": "breast_cancer",
        "version": "1",
        "model_family": "lightgbm",
        "metric": "roc_auc",
        "trials": 0,
    },
}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIReplayServer]:
    srv = OpenAIReplayServer(
        [
            {"tool_calls": [{"name": "record_intake", "args": INTAKE_ARGS}]},
            {"content": "The best run is abc.", "usage": {"prompt_tokens": 120, "completion_tokens": 7}},
        ],
        api_key=KEY,
    )
    with srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.delenv("OPENAI_API_BASE", raising=False)
        yield srv


def test_tool_call_and_text_round_trip(server: OpenAIReplayServer) -> None:
    model = make_chat_model("openai:gpt-4o-mini")
    intake = model.bind_tools([intake_tool_schema()], tool_choice="record_intake")
    reply = intake.invoke(
        [SystemMessage("You are expagent."), HumanMessage("Train lightgbm on breast_cancer@1")]
    )
    assert isinstance(reply, AIMessage)
    assert [c["name"] for c in reply.tool_calls] == ["record_intake"]
    decision = IntakeDecision.model_validate(reply.tool_calls[0]["args"])
    assert decision.request.model_family == "lightgbm" and decision.request.version == "1"
    assert reply.tool_calls[0]["id"] == "call_1_1"
    assert reply.usage_metadata and reply.usage_metadata["input_tokens"] > 0

    text = model.invoke([HumanMessage("best run?")])
    assert text.content == "The best run is abc." and text.tool_calls == []
    assert text.usage_metadata is not None
    assert (text.usage_metadata["input_tokens"], text.usage_metadata["output_tokens"]) == (120, 7)
    server.assert_complete()


def test_request_carries_schema_choice_key_and_temperature(server: OpenAIReplayServer) -> None:
    model = make_chat_model("openai:gpt-4o-mini")
    model.bind_tools([intake_tool_schema()], tool_choice="record_intake").invoke([HumanMessage("hi")])
    request = server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = request.body or {}
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0
    assert body["tool_choice"] == {"type": "function", "function": {"name": "record_intake"}}
    sent = body["tools"][0]["function"]
    assert sent["name"] == "record_intake"
    assert sent["parameters"]["properties"]["intent"]["enum"] == [
        "experiment",
        "question",
        "cancel",
        "forbidden",
        "unknown",
    ]
    assert body["messages"] == [{"content": "hi", "role": "user"}]


def test_tool_results_go_back_as_tool_messages(server: OpenAIReplayServer) -> None:
    from langchain_core.messages import ToolMessage

    model = make_chat_model("openai:gpt-4o-mini").bind_tools([intake_tool_schema()])
    first = model.invoke([HumanMessage("hi")])
    model.invoke(
        [HumanMessage("hi"), first, ToolMessage('{"ok": true}', tool_call_id=first.tool_calls[0]["id"])]
    )
    sent = server.chat_requests[1]["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {
        "name": "record_intake",
        "arguments": json.dumps(INTAKE_ARGS),
    }
    assert sent[2] == {"content": '{"ok": true}', "role": "tool", "tool_call_id": "call_1_1"}


def test_streaming_reassembles_tool_calls_and_usage(server: OpenAIReplayServer) -> None:
    model = make_chat_model("openai:gpt-4o-mini").bind_tools([intake_tool_schema()])
    merged = None
    for chunk in model.stream([HumanMessage("hi")]):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None and merged.tool_calls[0]["args"] == INTAKE_ARGS
    assert merged.usage_metadata and merged.usage_metadata["output_tokens"] > 0
    assert server.chat_requests[0]["stream"] is True
    assert server.chat_requests[0]["stream_options"] == {"include_usage": True}


def test_script_exhaustion_is_a_clear_server_error(server: OpenAIReplayServer) -> None:
    import openai

    model = make_chat_model("openai:gpt-4o-mini")
    model.invoke("one")
    model.invoke("two")
    with pytest.raises(openai.InternalServerError, match="request #3 but the script has only 2 replies"):
        model.invoke("three")
    assert len(server.requests) == 3  # x-should-retry: false stops the client's retries
    with pytest.raises(AssertionError, match="1 requests arrived after the script ran out"):
        server.assert_complete()


def test_wrong_key_is_rejected_and_models_are_listed(server: OpenAIReplayServer) -> None:
    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    good = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    assert [m.id for m in good.models.list()] == ["gpt-4o-mini"]
    assert server.remaining == 2


def test_local_server_without_a_key_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with OpenAIReplayServer(["pong"]) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        assert make_chat_model("openai:llama3.1").invoke("ping").content == "pong"
        assert srv.requests[0].headers["authorization"] == "Bearer not-needed"


def test_scripted_http_errors_reach_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    import openai

    with OpenAIReplayServer(
        [{"error": {"status": 429, "message": "slow down", "type": "rate_limit_error"}}]
    ) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        with pytest.raises(openai.RateLimitError, match="slow down"):
            make_chat_model("openai:gpt-4o-mini").invoke("hi")
