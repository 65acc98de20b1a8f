"""The openai:<model> wire path, bounded and strict (issue #18): real HTTP to the fake OpenAI server,
the official client, the CLI as a subprocess where exit codes and stderr matter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from agent.chat_models import model_wire, openai_model
from agent.model_wire import ModelUnavailable, model_failure
from evals.fakes.openai_server import OpenAIReplayServer, sequence_problem
from tools.core.settings import Settings

KEY = "sk-test-wire-0123456789"
QUESTION = {
    "tool_calls": [{"name": "record_intake", "args": {"intent": "question", "question": "best run?"}}]
}


def _settings(tmp_path: Path, **fields: object) -> Settings:
    return Settings(home=tmp_path, **fields)  # type: ignore[arg-type]


def test_retry_after_is_honoured_and_every_attempt_is_counted(tmp_path: Path) -> None:
    entries = [{"error": {"status": 429, "message": "slow", "retryable": True, "retry_after": 1}}, "hello"]
    with OpenAIReplayServer(entries, api_key=KEY) as srv:
        model = openai_model("gpt-4o-mini", _settings(tmp_path), srv.base_url, KEY)
        model_wire(model).start_turn()
        started = time.monotonic()
        reply = model.invoke([HumanMessage("hi")])
        assert reply.content == "hello"
        assert time.monotonic() - started >= 0.9  # waited what Retry-After asked
        assert model_wire(model).turn_attempts == 2 and len(srv.requests) == 2


def test_a_server_that_never_answers_fails_within_the_budget(tmp_path: Path) -> None:
    settings = _settings(tmp_path, model_timeout_s=1, model_turn_budget_s=2.5, model_retries=5)
    with OpenAIReplayServer([{"content": "late", "delay": 20}] * 6, api_key=KEY) as srv:
        model = openai_model("gpt-4o-mini", settings, srv.base_url, KEY)
        model_wire(model).start_turn()
        started = time.monotonic()
        with pytest.raises(Exception) as caught:
            model.invoke([HumanMessage("hi")])
        took = time.monotonic() - started
    assert took < 4.5, took
    line = model_failure(caught.value)
    assert line is not None and "127.0.0.1" in line and ("did not answer" in line or "budget" in line)


def test_budget_spent_means_no_request_is_sent(tmp_path: Path) -> None:
    settings = _settings(tmp_path, model_turn_budget_s=0.01)
    with OpenAIReplayServer(["never sent"], api_key=KEY) as srv:
        model = openai_model("gpt-4o-mini", settings, srv.base_url, KEY)
        model_wire(model).start_turn()
        time.sleep(0.05)
        with pytest.raises(Exception) as caught:
            model.invoke([HumanMessage("hi")])
        assert srv.requests == []
    error = caught.value
    assert isinstance(error, ModelUnavailable) or "budget" in str(model_failure(error))


def test_fake_server_enforces_openai_message_sequence_rules() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ok = [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]}]
    assert sequence_problem([*ok, {"role": "tool", "tool_call_id": "call_1", "content": "r"}]) is None
    assert "did not have response" in str(sequence_problem([*ok, {"role": "user", "content": "again"}]))
    orphan = [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "missing", "content": "r"}]
    assert "must be a response" in str(sequence_problem(orphan))


def test_a_tool_message_without_its_call_gets_http_400(tmp_path: Path) -> None:
    import openai

    with OpenAIReplayServer(["unused"], api_key=KEY) as srv:
        model = openai_model("gpt-4o-mini", _settings(tmp_path), srv.base_url, KEY)
        with pytest.raises(openai.BadRequestError):
            model.invoke([HumanMessage("x"), AIMessage(""), ToolMessage("r", tool_call_id="missing")])
        assert srv.protocol_errors and srv.remaining == 1


def _run_cli(
    tmp_path: Path, srv: OpenAIReplayServer, *extra: str, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "OPENAI_BASE_URL": srv.base_url,
        "OPENAI_API_KEY": KEY,
        "EXPAGENT_HOME": str(tmp_path / "ws"),
        "EXPAGENT_TRACE": "false",
        **env,
    }
    command = [str(Path(sys.executable).parent / "expagent"), "run", "--model", "openai:gpt-4o-mini", *extra]
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=120, check=False)


def test_cli_turn_against_a_silent_model_ends_in_budget_with_one_line(tmp_path: Path) -> None:
    with OpenAIReplayServer([{"content": "late", "delay": 60}] * 4, api_key=KEY) as srv:
        started = time.monotonic()
        done = _run_cli(
            tmp_path, srv, "--json", "what is the best run in experiment x?",
            EXPAGENT_MODEL_TIMEOUT_S="1", EXPAGENT_MODEL_TURN_BUDGET_S="5", EXPAGENT_MODEL_RETRIES="3",
        )  # fmt: skip
        took = time.monotonic() - started
    assert done.returncode != 0, done.stderr
    assert took < 60, took
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "127.0.0.1" in done.stderr and "expagent.log" in done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "failed" and result["usage"]["http_attempts"] >= 1
    assert "Traceback" in (tmp_path / "ws" / "logs" / "expagent.log").read_text()


def test_cli_usage_counts_every_http_attempt(tmp_path: Path) -> None:
    entries = [
        {"error": {"status": 500, "message": "blip", "retryable": True}},
        QUESTION,
        "The best run is unknown.",
    ]
    with OpenAIReplayServer(entries, api_key=KEY) as srv:
        done = _run_cli(tmp_path, srv, "--json", "best run?", EXPAGENT_MODEL_TIMEOUT_S="5")
        srv.assert_complete()
    result = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr
    assert result["usage"]["http_attempts"] == 3 and result["usage"]["model_calls"] == 2


def test_model_clients_load_the_ca_bundle_once_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    # with SSL_CERT_FILE set, every client library loads the bundle through ssl.create_default_context
    monkeypatch.setenv("SSL_CERT_FILE", ssl.get_default_verify_paths().openssl_cafile)
    openai_model("gpt-4o-mini", _settings(tmp_path), "http://127.0.0.1:8000/v1", KEY)  # imports done
    built: list[object] = []
    real = ssl.create_default_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        built.append(kwargs.get("cafile") or kwargs.get("capath"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    # one per service the Slack bot or the eval harness builds: before, each loaded the bundle 2-3 times
    for port in (8001, 8002, 8003):
        openai_model("gpt-4o-mini", _settings(tmp_path), f"http://127.0.0.1:{port}/v1", KEY)
    assert built == []
    with OpenAIReplayServer(["hello"], api_key=KEY) as srv:  # and the shared context still serves calls
        model = openai_model("gpt-4o-mini", _settings(tmp_path), srv.base_url, KEY)
        model_wire(model).start_turn()
        assert model.invoke([HumanMessage("hi")]).content == "hello"
