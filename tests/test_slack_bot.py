"""The Slack bot over real HTTP: signed deliveries in, the official WebClient out to a mock Slack.

The service here is a small stand-in that follows the ``AgentService`` contract (and keeps pending
approvals in a file under the workspace, so a restart can resume); tests/test_slack_e2e.py drives the
real service. Everything else is real: bolt's request verification, the HTTP endpoint, the SQLite
delivery ledger, the executor, chat.update throttling and the Block Kit limits the mock enforces.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient

from agent.slack import SlackBot, SlackHTTPServer, create_app, plain_text
from agent.slack_blocks import APPROVE_ACTION, CANCEL_ACTION, REJECT_ACTION
from agent.slack_delivery import SlackThread
from evals.fakes.slack import (
    BOT_ID,
    BOT_USER_ID,
    MockSlack,
    SlackSender,
    StoredMessage,
    app_mention,
    channel_message,
    direct_message,
)
from tools.core.settings import Settings

SECRET = "test-signing-secret"
CHANNEL = "C0EXPERIMENTS"
ALICE, BOSS, MALLORY = "UALICE", "UBOSS", "UMALLORY"
FIVE = ("Plan", "Changes", "Verification", "Rollback", "Summary")


# ---- a stand-in for agent.service.AgentService ----------------------------------------------------


@dataclass
class Approval:
    summary: str
    reasons: list[str]
    approval_keys: list[str]


@dataclass
class Result:
    thread_id: str
    status: str
    answer: str
    sections: dict[str, str]
    approval: Approval | None = None


@dataclass
class Progress:
    thread_id: str
    kind: str
    message: str
    run_id: str | None = None


def _answer(thread_id: str, summary: str, **bodies: str) -> Result:
    sections = {name: bodies.get(name.lower(), f"{name} for {thread_id}.") for name in FIVE}
    sections["Summary"] = summary
    answer = "\n\n".join(f"### {k}\n{v}" for k, v in sections.items())
    return Result(thread_id, "answered", answer, sections)


@dataclass
class StandInService:
    """Follows the service contract. Text decides what happens:

    ``needs approval`` -> awaiting_approval (pending kept in a JSON file), ``slow`` -> waits for
    ``release`` or ``cancel``, ``progress N`` -> N progress events, ``huge`` -> a very long answer,
    ``secret`` -> an answer containing a Slack token and an email.
    """

    home: Path
    on_progress: Callable[[Any], None]
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)

    @property
    def _pending_file(self) -> Path:
        return self.home / "standin-pending.json"

    def _pending(self) -> dict[str, str]:
        return json.loads(self._pending_file.read_text()) if self._pending_file.exists() else {}

    def send(self, thread_id: str | None, text: str, requester: str | None = None) -> Result:
        assert thread_id is not None
        self.calls.append(("send", thread_id, text, requester))
        self.started.set()
        if "needs approval" in text:
            self._pending_file.write_text(json.dumps({**self._pending(), thread_id: text}))
            result = _answer(thread_id, "Waiting for approval: 3 parallel jobs > 2.")
            result.status = "awaiting_approval"
            result.approval = Approval(
                "run 3 jobs at once", ["concurrency: 3 jobs > limit 2"], ["concurrency"]
            )
            return result
        if "progress" in text:
            for i in range(int(text.split()[-1])):
                self.on_progress(Progress(thread_id, "trial_finished", f"trial {i} finished", f"run{i:030d}"))
                time.sleep(0.03)
        if "slow" in text:
            self.on_progress(Progress(thread_id, "run_started", "baseline started", "r" * 32))
            for _ in range(200):
                if self.release.is_set() or self.cancelled.is_set():
                    break
                time.sleep(0.05)
            if self.cancelled.is_set():
                return _answer(
                    thread_id, "Cancelled by request.", rollback="Cancelled run rrrr; it ended KILLED."
                )
        if "huge" in text:
            return _answer(
                thread_id, "huge done", verification="\n".join(f"- check {i} ok" for i in range(12000))
            )
        if "secret" in text:
            return _answer(thread_id, "token xoxb-1234-5678-abcdefghijkl and mail bob@example.com")
        return _answer(thread_id, f"Answered: {text}")

    def resume(self, thread_id: str, approve: bool, approver: str | None = None) -> Result:
        self.calls.append(("resume", thread_id, approve, approver))
        pending = self._pending()
        assert pending.pop(thread_id, None) is not None, "resume without a pending approval"
        self._pending_file.write_text(json.dumps(pending))
        self.on_progress(Progress(thread_id, "run_finished", "baseline finished", "b" * 32))
        verdict = "approved" if approve else "rejected"
        return _answer(thread_id, f"Plan {verdict} by {approver}; best run bbbb.")

    def cancel(self, thread_id: str, by: str) -> Result:
        self.calls.append(("cancel", thread_id, by))
        self.cancelled.set()
        self._pending_file.write_text(
            json.dumps({k: v for k, v in self._pending().items() if k != thread_id})
        )
        return _answer(thread_id, f"Nothing was running; cancel by {by} noted.")

    def pending_approval(self, thread_id: str) -> Approval | None:
        return Approval("pending", [], []) if thread_id in self._pending() else None

    def close(self) -> None:
        self.calls.append(("close",))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [call for call in self.calls if call[0] == name]


# ---- the rig: mock Slack + bolt app served over HTTP ----------------------------------------------


class Rig:
    """A mock Slack, the bot served on 127.0.0.1, and a signed sender; ``restart()`` = new process."""

    def __init__(self, home: Path, **settings: Any) -> None:
        self.slack = MockSlack()
        defaults: dict[str, Any] = {"slack_approvers": [BOSS], "slack_progress_interval": 0.05}
        self.settings = Settings(home=home, **(defaults | settings))
        self.services: list[StandInService] = []
        self._ts = iter(range(1, 10_000))
        self._start()

    def _start(self) -> None:
        client = WebClient(token=self.slack.token, base_url=self.slack.api_url)

        def make(on_progress: Callable[[Any], None]) -> Any:
            self.services.append(StandInService(self.settings.home, on_progress))
            return self.services[-1]

        self.app, self.bot = create_app(self.settings, client, signing_secret=SECRET, make_service=make)
        self.server = SlackHTTPServer(self.app).start()
        self.sender = SlackSender(self.server.url, SECRET)

    @property
    def service(self) -> StandInService:
        return self.services[-1]

    def restart(self) -> None:
        self.server.close()
        self.bot.close()
        self._start()

    def close(self) -> None:
        self.service.release.set()
        self.server.close()
        self.bot.close()
        self.slack.close()

    def ts(self) -> str:
        return f"1699999{next(self._ts):03d}.000200"

    def mention(self, text: str, user: str = ALICE, thread_ts: str | None = None, **kw: Any) -> str:
        ts = self.ts()
        event = app_mention(user, CHANNEL, f"<@{BOT_USER_ID}> {text}", ts, thread_ts)
        delivery = self.sender.send_event(event, **kw)
        assert delivery.status == 200, delivery
        return thread_ts or ts

    def thread_messages(self, thread_ts: str) -> list[StoredMessage]:
        return self.slack.messages(CHANNEL, thread_ts)

    def wait_answer(self, thread_ts: str, count: int = 1, summary: str = "") -> list[StoredMessage]:
        def answers(mock: MockSlack) -> list[StoredMessage]:
            found = [m for m in self.thread_messages(thread_ts) if _headers(m) and summary in m.block_text()]
            return found if len(found) >= count else []

        return self.slack.wait_for(answers, what=f"{count} answer(s) in {thread_ts}")

    def wait_buttons(self, thread_ts: str) -> StoredMessage:
        return self.slack.wait_for(
            lambda mock: next(
                (m for m in self.thread_messages(thread_ts) if APPROVE_ACTION in m.action_values()), None
            ),
            what="approval buttons",
        )


def _headers(message: StoredMessage) -> list[str]:
    return [b["text"]["text"] for b in message.blocks if b.get("type") == "header"]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    yield rig
    rig.close()


def _thread_id(thread_ts: str) -> str:
    return SlackThread(CHANNEL, thread_ts).thread_id


# ---- conversations --------------------------------------------------------------------------------


def test_a_mention_answers_in_its_thread_with_five_sections(rig: Rig) -> None:
    root = rig.mention("train lightgbm on breast_cancer version 1")
    [answer] = rig.wait_answer(root)
    assert _headers(answer) == list(FIVE)
    assert answer.thread_ts == root and answer.channel == CHANNEL
    assert "Answered: train lightgbm on breast_cancer version 1" in answer.block_text()
    assert rig.service.named("send") == [
        ("send", _thread_id(root), "train lightgbm on breast_cancer version 1", f"slack:{ALICE}")
    ]
    progress = rig.thread_messages(root)[0]
    assert progress.ts != answer.ts and "Finished" in progress.block_text()
    assert CANCEL_ACTION not in progress.action_values()


def test_replies_in_the_thread_continue_the_same_graph_thread_even_after_restart(rig: Rig) -> None:
    root = rig.mention("first question")
    rig.wait_answer(root)
    rig.restart()
    reply = channel_message(ALICE, CHANNEL, "and a follow-up", rig.ts(), thread_ts=root)
    assert rig.sender.send_event(reply).status == 200
    rig.wait_answer(root, summary="and a follow-up")
    assert rig.service.named("send") == [("send", _thread_id(root), "and a follow-up", f"slack:{ALICE}")]


def test_a_plain_message_outside_the_bots_threads_is_ignored(rig: Rig) -> None:
    chatter = channel_message(ALICE, CHANNEL, "lunch?", rig.ts(), thread_ts="1600000000.000001")
    assert rig.sender.send_event(chatter).status == 200
    assert rig.sender.send_event(channel_message(ALICE, CHANNEL, "hello all", rig.ts())).status == 200
    time.sleep(0.3)
    assert rig.service.calls == [] and rig.slack.calls("chat.postMessage") == []


def test_a_direct_message_starts_a_conversation(rig: Rig) -> None:
    ts = rig.ts()
    assert rig.sender.send_event(direct_message(ALICE, "D0ALICE", "which runs are best?", ts)).status == 200
    rig.slack.wait_for(lambda m: [x for x in m.messages("D0ALICE", ts) if _headers(x)], what="DM answer")
    assert rig.service.named("send")[0][1] == SlackThread("D0ALICE", ts).thread_id


def test_the_bot_ignores_its_own_and_other_bots_messages(rig: Rig) -> None:
    root = rig.mention("hello")
    rig.wait_answer(root)
    own = channel_message(BOT_USER_ID, CHANNEL, "my own answer", rig.ts(), thread_ts=root, bot_id=BOT_ID)
    other = channel_message("UOTHERBOT", CHANNEL, "beep", rig.ts(), thread_ts=root, bot_id="BOTHER")
    dm_bot = {**direct_message("UOTHERBOT", "D0X", "beep", rig.ts()), "bot_id": "BOTHER"}
    for event in (own, other, dm_bot):
        assert rig.sender.send_event(event).status == 200
    time.sleep(0.3)
    assert len(rig.service.named("send")) == 1


def test_the_listener_acks_before_the_work_finishes(rig: Rig) -> None:
    started = time.monotonic()
    root = rig.mention("slow baseline")
    acked_after = time.monotonic() - started
    assert rig.service.started.wait(5)
    assert not rig.service.release.is_set()  # the work is still blocked, yet Slack got its 200
    assert acked_after < 3
    rig.service.release.set()
    rig.wait_answer(root)


def test_a_second_message_while_busy_is_told_to_wait_and_starts_nothing(rig: Rig) -> None:
    root = rig.mention("slow baseline")
    assert rig.service.started.wait(5)
    rig.mention("another thing", thread_ts=root)
    rig.slack.wait_for(lambda m: [x for x in rig.thread_messages(root) if "still working" in x.block_text()])
    rig.service.release.set()
    rig.wait_answer(root)
    assert len(rig.service.named("send")) == 1


# ---- security -------------------------------------------------------------------------------------


def test_a_duplicate_delivery_is_processed_once_even_across_a_restart(rig: Rig) -> None:
    event = app_mention(ALICE, CHANNEL, f"<@{BOT_USER_ID}> train once", "1699999500.000100")
    assert rig.sender.send_event(event, event_id="Ev0DUPLICATE").status == 200
    assert rig.sender.send_event(event, event_id="Ev0DUPLICATE", retry_num=1).status == 200
    rig.wait_answer("1699999500.000100")
    first = rig.service
    rig.restart()
    assert rig.sender.send_event(event, event_id="Ev0DUPLICATE", retry_num=2).status == 200
    time.sleep(0.3)
    assert len(first.named("send")) == 1 and rig.service.named("send") == []
    assert len(rig.wait_answer("1699999500.000100")) == 1


@pytest.mark.parametrize(
    "override",
    [
        {"secret": "not-the-secret"},
        {"timestamp": int(time.time()) - 600},
        {"headers": {"X-Slack-Signature": "v0=00"}},
    ],
    ids=["wrong-secret", "stale-timestamp", "forged-signature"],
)
def test_a_bad_or_stale_signature_gets_401_and_does_nothing(rig: Rig, override: dict[str, Any]) -> None:
    event = app_mention(ALICE, CHANNEL, f"<@{BOT_USER_ID}> train", rig.ts())
    delivery = rig.sender.send_event(event, **override)
    assert delivery.status == 401
    time.sleep(0.2)
    assert rig.service.calls == [] and rig.slack.calls("chat.postMessage") == []


def test_a_click_with_a_bad_signature_gets_401(rig: Rig) -> None:
    root = rig.mention("needs approval for 3 jobs")
    buttons = rig.wait_buttons(root)
    assert rig.sender.click(buttons, APPROVE_ACTION, BOSS, secret="wrong").status == 401
    time.sleep(0.2)
    assert rig.service.named("resume") == []


def test_users_outside_the_allowlist_get_an_ephemeral_refusal(tmp_path: Path) -> None:
    rig = Rig(tmp_path, slack_allowed_users=[ALICE], slack_allowed_channels=[CHANNEL])
    try:
        rig.mention("train something", user=MALLORY)
        refusal = rig.slack.wait_for(lambda m: m.messages(ephemeral=True), what="ephemeral refusal")
        assert refusal[0].ephemeral_for == MALLORY and "not allowed" in refusal[0].block_text()
        direct = direct_message(ALICE, "D0ALICE", "train in a DM", rig.ts())
        assert rig.sender.send_event(direct).status == 200  # DMs are not in the channel list
        rig.slack.wait_for(lambda m: len(m.messages(ephemeral=True)) == 2, what="DM refusal")
        time.sleep(0.2)
        assert rig.service.calls == [] and rig.slack.messages() == []
    finally:
        rig.close()


def test_everything_posted_is_redacted(rig: Rig) -> None:
    root = rig.mention("show the secret")
    [answer] = rig.wait_answer(root)
    posted = json.dumps([call.args for call in rig.slack.calls()])
    assert "xoxb-1234" not in posted and "bob@example.com" not in posted
    assert "[REDACTED:slack_token]" in answer.block_text() and "[REDACTED:email]" in answer.block_text()


# ---- approvals ------------------------------------------------------------------------------------


def test_only_approvers_can_click_and_the_click_resumes_the_graph(rig: Rig) -> None:
    root = rig.mention("needs approval for 3 jobs")
    buttons = rig.wait_buttons(root)
    assert buttons.action_values() == {APPROVE_ACTION: _thread_id(root), REJECT_ACTION: _thread_id(root)}
    assert rig.sender.click(buttons, APPROVE_ACTION, MALLORY).status == 200
    [refusal] = rig.slack.wait_for(lambda m: m.messages(ephemeral=True), what="refusal")
    assert refusal.ephemeral_for == MALLORY and "Only approvers" in refusal.block_text()
    time.sleep(0.2)
    assert rig.service.named("resume") == [] and APPROVE_ACTION in buttons.action_values()

    assert rig.sender.click(buttons, APPROVE_ACTION, BOSS).status == 200
    rig.wait_answer(root, summary=f"approved by slack:{BOSS}")
    assert rig.service.named("resume") == [("resume", _thread_id(root), True, f"slack:{BOSS}")]
    assert buttons.action_values() == {} and f"Approved by <@{BOSS}>" in json.dumps(buttons.blocks)


def test_reject_resumes_with_approve_false_and_a_second_click_changes_nothing(rig: Rig) -> None:
    root = rig.mention("needs approval for 3 jobs")
    buttons = rig.wait_buttons(root)
    stale = StoredMessage(**{**buttons.__dict__, "blocks": list(buttons.blocks)})  # the old rendering
    assert rig.sender.click(buttons, REJECT_ACTION, BOSS).status == 200
    rig.wait_answer(root, summary="rejected")
    assert rig.sender.click(stale, APPROVE_ACTION, BOSS).status == 200
    rig.slack.wait_for(lambda m: m.messages(ephemeral=True), what="nothing pending notice")
    assert rig.service.named("resume") == [("resume", _thread_id(root), False, f"slack:{BOSS}")]


def test_typing_yes_in_a_waiting_thread_does_not_approve(rig: Rig) -> None:
    root = rig.mention("needs approval for 3 jobs")
    rig.wait_buttons(root)
    reply = channel_message(MALLORY, CHANNEL, "yes", rig.ts(), thread_ts=root)
    assert rig.sender.send_event(reply).status == 200
    [notice] = rig.slack.wait_for(lambda m: m.messages(ephemeral=True), what="waiting notice")
    assert notice.ephemeral_for == MALLORY and "waiting for approval" in notice.block_text()
    assert len(rig.service.named("send")) == 1 and rig.service.named("resume") == []


def test_a_restart_between_the_buttons_and_the_click_still_resumes(rig: Rig) -> None:
    root = rig.mention("needs approval for 3 jobs")
    buttons = rig.wait_buttons(root)
    rig.restart()
    assert rig.sender.click(buttons, APPROVE_ACTION, BOSS).status == 200
    rig.wait_answer(root, summary="approved")
    assert rig.services[0].named("resume") == []
    assert rig.service.named("resume") == [("resume", _thread_id(root), True, f"slack:{BOSS}")]


# ---- cancel and progress --------------------------------------------------------------------------


def test_the_word_cancel_in_the_thread_stops_running_work(rig: Rig) -> None:
    root = rig.mention("slow tuning")
    assert rig.service.started.wait(5)
    reply = channel_message(ALICE, CHANNEL, "cancel", rig.ts(), thread_ts=root)
    assert rig.sender.send_event(reply).status == 200
    [answer] = rig.wait_answer(root, summary="Cancelled by request")
    assert rig.service.named("cancel") == [("cancel", _thread_id(root), f"slack:{ALICE}")]
    assert "ended KILLED" in answer.block_text()
    progress = rig.thread_messages(root)[0]
    assert "Cancel requested by" in progress.block_text()


def test_the_cancel_button_stops_running_work_for_allowed_users_only(tmp_path: Path) -> None:
    rig = Rig(tmp_path, slack_allowed_users=[ALICE])
    try:
        root = rig.mention("slow tuning")
        assert rig.service.started.wait(5)
        progress = rig.slack.wait_for(
            lambda m: next((x for x in rig.thread_messages(root) if CANCEL_ACTION in x.action_values()), None)
        )
        assert rig.sender.click(progress, CANCEL_ACTION, MALLORY).status == 200
        rig.slack.wait_for(lambda m: m.messages(ephemeral=True), what="cancel refusal")
        assert rig.service.named("cancel") == []
        assert rig.sender.click(progress, CANCEL_ACTION, BOSS).status == 200
        rig.wait_answer(root, summary="Cancelled by request")
        assert rig.service.named("cancel") == [("cancel", _thread_id(root), f"slack:{BOSS}")]
    finally:
        rig.close()


def test_cancel_in_an_idle_thread_goes_to_the_service_and_answers(rig: Rig) -> None:
    root = rig.mention("hello")
    rig.wait_answer(root)
    rig.mention("cancel", thread_ts=root)
    rig.wait_answer(root, summary="cancel by slack:UALICE noted")


def test_progress_is_one_message_updated_in_place_and_rate_limited(tmp_path: Path) -> None:
    rig = Rig(tmp_path, slack_progress_interval=0.3)
    try:
        root = rig.mention("tune with progress 30")
        rig.wait_answer(root)
        progress = rig.thread_messages(root)[0]
        updates = [c for c in rig.slack.calls("chat.update") if c.args["ts"] == progress.ts]
        assert 2 <= len(updates) < 30  # coalesced, not one per event
        gaps = [b.at - a.at for a, b in zip(updates, updates[1:], strict=False)]
        assert min(gaps) >= 0.25, gaps
        assert "trial 29 finished" in progress.block_text() and "Finished" in progress.block_text()
        assert len([m for m in rig.thread_messages(root) if "Working" in m.text or "Finished" in m.text]) == 1
    finally:
        rig.close()


def test_a_huge_answer_arrives_complete_across_several_valid_messages(rig: Rig) -> None:
    root = rig.mention("huge report")
    rig.slack.wait_for(lambda m: any("huge done" in x.block_text() for x in rig.thread_messages(root)))
    answers = [m for m in rig.thread_messages(root) if m.ts != rig.thread_messages(root)[0].ts]
    assert len(answers) >= 2
    assert all(call.ok for call in rig.slack.calls()), [c.error for c in rig.slack.calls() if not c.ok]
    lines = set("\n".join(m.block_text() for m in answers).split("\n"))
    assert all(f"• check {i} ok" in lines for i in range(12000))
    assert "(part 1/" in answers[0].text


def test_a_failing_turn_reports_the_error_in_the_thread(rig: Rig) -> None:
    def boom(thread_id: str | None, text: str, requester: str | None = None) -> Result:
        raise RuntimeError("checkpoint store is locked")

    rig.service.send = boom  # type: ignore[method-assign]
    root = rig.mention("anything")
    rig.slack.wait_for(
        lambda m: [x for x in rig.thread_messages(root) if "checkpoint store is locked" in x.text]
    )
    progress = rig.thread_messages(root)[0]
    assert "Stopped with an error" in progress.block_text()
    # the thread is free again
    assert isinstance(rig.bot, SlackBot) and rig.bot._claim(SlackThread(CHANNEL, root))  # noqa: SLF001


# ---- modes and configuration ----------------------------------------------------------------------


def test_socket_mode_requests_reach_the_same_listeners_without_a_signing_secret(tmp_path: Path) -> None:
    from slack_bolt import BoltRequest

    with MockSlack() as slack:
        settings = Settings(home=tmp_path)
        client = WebClient(token=slack.token, base_url=slack.api_url)
        services: list[StandInService] = []

        def make(on_progress: Callable[[Any], None]) -> Any:
            services.append(StandInService(tmp_path, on_progress))
            return services[-1]

        app, bot = create_app(settings, client, make_service=make)
        try:
            envelope = SlackSender("unused", "").envelope(
                app_mention(ALICE, CHANNEL, f"<@{BOT_USER_ID}> via socket", "1699999000.000001")
            )
            response = app.dispatch(BoltRequest(body=envelope, mode="socket_mode"))
            assert response.status == 200
            slack.wait_for(lambda m: [x for x in m.messages(CHANNEL) if _headers(x)], what="answer")
            assert services[0].named("send")[0][2] == "via socket"
        finally:
            bot.close()


def test_run_bot_names_the_missing_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.slack import SlackConfigError, run_bot

    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SlackConfigError, match="SLACK_BOT_TOKEN is not set"):
        run_bot(Settings(home=tmp_path))
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-value")
    with pytest.raises(SlackConfigError, match="SLACK_APP_TOKEN is not set") as socket_error:
        run_bot(Settings(home=tmp_path, slack_mode="socket"))
    with pytest.raises(SlackConfigError, match="SLACK_SIGNING_SECRET is not set") as http_error:
        run_bot(Settings(home=tmp_path, slack_mode="http"))
    assert "xoxb-secret-value" not in str(socket_error.value) + str(http_error.value)


def test_the_slack_command_reports_bad_mode_and_missing_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from agent.cli import app

    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    runner = CliRunner()
    bad_mode = runner.invoke(app, ["slack", "--mode", "carrier-pigeon", "--home", str(tmp_path)])
    assert bad_mode.exit_code == 1 and "socket or http" in bad_mode.output
    no_token = runner.invoke(app, ["slack", "--mode", "http", "--home", str(tmp_path)])
    assert no_token.exit_code == 2 and "SLACK_BOT_TOKEN is not set" in no_token.output


def test_plain_text_drops_the_bot_mention_and_unwraps_slack_markup() -> None:
    text = f"<@{BOT_USER_ID}>  train on <https://data.example/x|x> with <@UOTHER> &amp; roc_auc &gt; 0.9"
    assert plain_text(text, BOT_USER_ID) == "train on https://data.example/x with <@UOTHER> & roc_auc > 0.9"
