"""The terminal chat over the real service: Markdown answers, y/n approval prompts, thread resume."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from graph_support import experiment_reply, intake_reply, make_settings
from rich.console import Console

from agent import chat as chat_module
from agent.chat_models import ScriptedChatModel
from tools.core.settings import Budget


def _feed(monkeypatch: pytest.MonkeyPatch, lines: list[str], answers: list[bool]) -> None:
    typed: Iterator[str] = iter(lines)
    confirmed: Iterator[bool] = iter(answers)
    monkeypatch.setattr(chat_module.Prompt, "ask", lambda *a, **k: next(typed))
    monkeypatch.setattr(chat_module.Confirm, "ask", lambda *a, **k: next(confirmed))


def test_chat_prints_five_sections_and_asks_for_approval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, budget=Budget(max_cpu_per_run=0.5))
    model = ScriptedChatModel([intake_reply("forbidden", forbidden_action="deploy"), experiment_reply()])
    monkeypatch.setattr("agent.chat_models.make_chat_model", lambda *a, **k: model)
    _feed(
        monkeypatch,
        ["Deploy the best model", "Train logistic regression on breast_cancer version 1", "exit"],
        [False],
    )
    out = io.StringIO()
    chat_module.chat(settings, thread_id="chat-1", console=Console(file=out, width=120))
    text = out.getvalue()
    assert text.count("Plan") >= 2 and "deployment team" in text
    assert "Approval needed" in text and "budget:cpu" in text
    assert "denied" in text and "no training run was launched" in text
    model.assert_complete()


def test_chat_with_thread_resumes_a_pending_approval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.service import AgentService

    settings = make_settings(tmp_path, budget=Budget(max_cpu_per_run=0.5))
    first = AgentService(settings, model=ScriptedChatModel([experiment_reply()]))
    assert (
        first.send("chat-2", "Train logistic regression on breast_cancer version 1").status
        == "awaiting_approval"
    )
    first.close()  # the process that asked is gone
    monkeypatch.setattr("agent.chat_models.make_chat_model", lambda *a, **k: ScriptedChatModel([]))
    _feed(monkeypatch, ["exit"], [False])
    out = io.StringIO()
    chat_module.chat(settings, thread_id="chat-2", console=Console(file=out, width=120))
    assert "waiting for approval" in out.getvalue() and "denied" in out.getvalue()
    second = AgentService(settings, model=ScriptedChatModel([]))
    assert second.pending_approval("chat-2") is None
    second.close()
