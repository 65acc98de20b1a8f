"""End to end: Slack -> bolt (signed HTTP) -> the real AgentService -> local runs in real MLflow -> Slack.

A mention asks for a baseline that needs approval (the CPU cap is set below what a run requests); its
retried delivery is processed once and a forged one gets 401; a non-approver's click is refused; the
bot restarts between the buttons and the click; the approver's click resumes the checkpointed graph,
the baseline runs on the local runtime and logs to MLflow (sqlite in tmp), and the five-section answer
lands in the thread citing a run MLflow knows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from slack_sdk import WebClient

from agent.slack import SlackBot, SlackHTTPServer, create_app
from agent.slack_blocks import APPROVE_ACTION
from agent.slack_delivery import SlackThread
from evals.fakes.slack import BOT_USER_ID, MockSlack, SlackSender, StoredMessage, app_mention
from tools.core.settings import Budget, Settings

pytestmark = pytest.mark.slow

SECRET = "e2e-signing-secret"
CHANNEL = "C0MLTEAM"
ALICE, BOSS, MALLORY = "UALICE", "UBOSS", "UMALLORY"
FIVE = ["Plan", "Changes", "Verification", "Rollback", "Summary"]
REQUEST = "Train a lightgbm baseline on breast_cancer version 1 optimizing roc_auc in experiment slack-e2e"


def _start(settings: Settings, slack: MockSlack) -> tuple[SlackBot, SlackHTTPServer, SlackSender]:
    client = WebClient(token=slack.token, base_url=slack.api_url)
    app, bot = create_app(settings, client, signing_secret=SECRET, model="offline")
    server = SlackHTTPServer(app).start()
    return bot, server, SlackSender(server.url, SECRET)


def _headers(message: StoredMessage) -> list[str]:
    return [b["text"]["text"] for b in message.blocks if b.get("type") == "header"]


def _answers(slack: MockSlack, thread_ts: str) -> list[StoredMessage]:
    return [m for m in slack.messages(CHANNEL, thread_ts) if _headers(m)]


def _with_buttons(slack: MockSlack, thread_ts: str) -> StoredMessage | None:
    return next((m for m in slack.messages(CHANNEL, thread_ts) if APPROVE_ACTION in m.action_values()), None)


def _runs(settings: Settings) -> list[dict[str, str]]:
    from tools.core.tracking import make_client

    client = make_client(settings)
    experiment = client.get_experiment_by_name("slack-e2e")
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id])
    return [{"run_id": r.info.run_id, "status": r.info.status, **r.data.tags} for r in runs]


def test_mention_approval_restart_click_runs_and_answers(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        trace=False,
        budget=Budget(max_cpu_per_run=0.5),
        slack_approvers=[BOSS],
        slack_progress_interval=0.2,
    )
    root = "1700000100.000100"
    with MockSlack() as slack:
        bot, server, sender = _start(settings, slack)
        try:
            mention = app_mention(ALICE, CHANNEL, f"<@{BOT_USER_ID}> {REQUEST}", root)
            assert sender.send_event(mention, event_id="Ev0E2E").status == 200
            assert sender.send_event(mention, event_id="Ev0E2E", retry_num=1).status == 200
            forged = app_mention(MALLORY, CHANNEL, f"<@{BOT_USER_ID}> {REQUEST}", "1700000200.000100")
            assert sender.send_event(forged, secret="guessed-secret").status == 401
            buttons = slack.wait_for(
                lambda m: next(
                    (x for x in m.messages(CHANNEL, root) if APPROVE_ACTION in x.action_values()), None
                ),
                timeout=120,
                what="approval buttons",
            )
            [plan_answer] = _answers(slack, root)
            assert _headers(plan_answer) == FIVE
            assert "budget:cpu" in buttons.block_text() or "CPU" in buttons.block_text()
            assert not [r for r in _runs(settings) if r.get("expagent.role") == "baseline"]

            assert sender.click(buttons, APPROVE_ACTION, MALLORY).status == 200
            refusal = slack.wait_for(lambda m: m.messages(ephemeral=True), what="refusal")
            assert refusal[0].ephemeral_for == MALLORY
        finally:
            server.close()
            bot.close()

        # a new process: new service, new app, same workspace
        bot, server, sender = _start(settings, slack)
        try:
            assert sender.click(buttons, APPROVE_ACTION, BOSS).status == 200
            answers = slack.wait_for(
                lambda m: _answers(m, root) if len(_answers(m, root)) >= 2 else None,
                timeout=240,
                what="final answer",
            )
        finally:
            server.close()
            bot.close()

    final = answers[-1]
    assert _headers(final) == FIVE
    progress = [m for m in slack.messages(CHANNEL, root) if not _headers(m) and "Finished" in m.text]
    assert len(progress) == 2  # one per turn, edited in place
    assert "baseline run" in progress[-1].block_text() and "FINISHED" in progress[-1].block_text()
    baseline = [r for r in _runs(settings) if r.get("expagent.role") == "baseline"]
    assert len(baseline) == 1 and baseline[0]["status"] == "FINISHED"
    assert baseline[0]["run_id"] in final.block_text()
    assert baseline[0]["expagent.session"] == SlackThread(CHANNEL, root).thread_id
    # Runs launched after the approval stay the asker's; the approver is recorded in the audit log.
    assert baseline[0]["expagent.requester"] == f"slack:{ALICE}", baseline[0]
    sessions = [r for r in _runs(settings) if r.get("expagent.role") == "session"]
    assert len(sessions) == 1, "neither the retried nor the forged delivery may start a session"
    assert slack.messages(CHANNEL, "1700000200.000100") == []
    assert sessions[0]["expagent.requester"] == f"slack:{ALICE}"
    audit = [json.loads(line) for line in settings.audit_log_path.read_text().splitlines()]
    assert any(entry.get("requester") == f"slack:{ALICE}" for entry in audit)
    assert buttons.action_values() == {}  # buttons replaced by who approved
    assert all(call.ok for call in slack.calls()), [c.error for c in slack.calls() if not c.ok]
