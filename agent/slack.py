"""The Slack bot: a thin slack-bolt shell over ``AgentService``.

Each Slack thread is one graph thread (``slack-<channel>-<thread_ts>``), so replies continue the
conversation and buttons keep working after a restart. Listeners only filter and hand work to a
background executor, so Slack always gets its ack within 3 s. Rendering lives in
``agent/slack_blocks.py``; delivery bookkeeping (dedup, known threads), posting and the progress
message in ``agent/slack_support.py``; the HTTP-mode endpoint in ``agent/slack_http.py``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from slack_bolt import App, BoltContext
from slack_sdk import WebClient

from agent.slack_blocks import (
    APPROVE_ACTION,
    CANCEL_ACTION,
    REJECT_ACTION,
    answer_messages,
    approval_message,
    decided_blocks,
    escape,
    notice,
)
from agent.slack_delivery import DeliveryLedger, ProgressMessage, SlackPoster, SlackThread, describe
from agent.slack_http import SlackHTTPServer
from agent.turns import BackgroundTurn
from tools.core.settings import Settings

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from agent.service import ProgressEvent, TurnResult

logger = logging.getLogger(__name__)

ProgressCallback = Callable[["ProgressEvent"], None]
_CANCEL_WORD = re.compile(r"^\s*(cancel|stop)\b", re.IGNORECASE)
_EMPTY_TEXT = (
    "Tell me what to train or ask, e.g. _train lightgbm on breast_cancer version 1 optimizing roc_auc_."
)
_NOT_ALLOWED_TEXT = (
    "You are not allowed to start expagent work here. Ask an admin to add you or this channel to "
    "EXPAGENT_SLACK_ALLOWED_USERS / EXPAGENT_SLACK_ALLOWED_CHANNELS."
)
_NOTHING_PENDING_TEXT = (
    "Nothing is waiting for approval in this thread (it was already decided or cancelled)."
)
_WAITING_TEXT = (
    "This thread is waiting for approval: an approver clicks *Approve* or *Reject* above, "
    "or say `cancel` to drop the plan."
)
_SLACK_LINK = re.compile(r"<((?:https?|mailto|s3|gs|file)[^>|]*)(?:\|[^>]*)?>")


class SlackConfigError(ValueError):
    """The bot cannot start: a token, secret or setting is missing or inconsistent."""


class TurnService(Protocol):
    """What the bot needs from ``agent.service.AgentService``."""

    def send(self, thread_id: str | None, text: str, requester: str | None = None) -> TurnResult: ...

    def resume(self, thread_id: str, approve: bool, approver: str | None = None) -> TurnResult: ...

    def cancel(self, thread_id: str, by: str) -> TurnResult: ...

    def pending_approval(self, thread_id: str) -> Any: ...

    def close(self) -> None: ...


ServiceFactory = Callable[[ProgressCallback], TurnService]


@dataclass(frozen=True)
class Who:
    """Who is acting, where: the Slack user and the thread the action belongs to."""

    user: str
    thread: SlackThread

    @property
    def principal(self) -> str:
        """The requester / approver name recorded on runs and in the audit log."""
        return f"slack:{self.user}"


def plain_text(text: str, bot_user_id: str | None) -> str:
    """Turn Slack message text into what the agent reads: no bot mention, plain links, unescaped."""
    if bot_user_id:
        text = text.replace(f"<@{bot_user_id}>", " ")
    text = _SLACK_LINK.sub(r"\1", text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return " ".join(text.split())


def is_bot_event(event: dict[str, Any]) -> bool:
    """Return True for messages from any bot (ours included) and for edits, joins and other subtypes."""
    return bool(event.get("bot_id") or event.get("subtype") or event.get("bot_profile"))


class SlackBot:
    """Slack listeners and the background work behind them; one per process and workspace."""

    def __init__(self, settings: Settings, client: WebClient, make_service: ServiceFactory) -> None:
        self.settings = settings
        self.poster = SlackPoster(client)
        self.ledger = DeliveryLedger(settings.home / "slack.sqlite")
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._progress: dict[str, ProgressMessage] = {}
        self._turns: dict[str, BackgroundTurn] = {}
        self.service = make_service(self.on_progress)
        self._work = ThreadPoolExecutor(settings.slack_workers, thread_name_prefix="expagent-slack")
        self._cancels = ThreadPoolExecutor(2, thread_name_prefix="expagent-slack-cancel")

    def register(self, app: App) -> None:
        """Attach the bot's listeners to a bolt app."""
        app.event("app_mention")(self.on_event)
        app.event("message")(self.on_event)
        app.action(APPROVE_ACTION)(self.on_decision)
        app.action(REJECT_ACTION)(self.on_decision)
        app.action(CANCEL_ACTION)(self.on_cancel_click)

    def close(self, wait: bool = True) -> None:
        """Stop taking work, wait for running turns when ``wait``, and close the service."""
        self._work.shutdown(wait=wait, cancel_futures=not wait)
        self._cancels.shutdown(wait=wait)
        self.service.close()

    # ---- events -----------------------------------------------------------------------------------

    def on_event(self, body: dict[str, Any], event: dict[str, Any], context: BoltContext) -> None:
        """Handle ``app_mention`` and ``message`` events (auto-acked by bolt before this runs)."""
        if is_bot_event(event) or not event.get("user"):
            return
        bot_user_id = context.bot_user_id
        if not self._addresses_bot(event, bot_user_id):
            return
        if not self.ledger.first_delivery(f"event:{body.get('event_id')}"):
            logger.info("skipping duplicate delivery of %s", body.get("event_id"))
            return
        thread = SlackThread(event["channel"], event.get("thread_ts") or event["ts"])
        self.handle_text(Who(event["user"], thread), plain_text(event.get("text") or "", bot_user_id))

    def _addresses_bot(self, event: dict[str, Any], bot_user_id: str | None) -> bool:
        """Mentions and DMs always do; a channel message only as a reply in a thread the bot is in."""
        if event["type"] == "app_mention" or event.get("channel_type") == "im":
            return True
        mentioned = bool(bot_user_id) and f"<@{bot_user_id}>" in (event.get("text") or "")
        thread_ts = str(event.get("thread_ts") or "")
        # a mention also arrives as app_mention; answering both would double the work
        return (
            bool(thread_ts)
            and not mentioned
            and self.ledger.knows_thread(SlackThread(event["channel"], thread_ts).thread_id)
        )

    def handle_text(self, who: Who, text: str) -> None:
        """Start a turn for a user's message, or cancel the thread's work when it says so."""
        if _CANCEL_WORD.match(text):
            self.request_cancel(who)
            return
        if not self.may_start(who.user, who.thread.channel):
            self.poster.ephemeral(who.thread, who.user, notice(_NOT_ALLOWED_TEXT))
            return
        if not text:
            self.poster.post(who.thread, notice(_EMPTY_TEXT))
            return
        if self._pending_approval(who.thread) is not None:
            # the service would treat "yes" as an approval; in Slack only an approver's click decides
            self.poster.ephemeral(who.thread, who.user, notice(_WAITING_TEXT))
            return
        self.ledger.remember_thread(who.thread.thread_id)
        self.submit(who, lambda: self.service.send(who.thread.thread_id, text, requester=who.principal))

    def may_start(self, user: str, channel: str) -> bool:
        """Return whether ``user`` may start work in ``channel`` under the configured allowlists."""
        users, channels = self.settings.slack_allowed_users, self.settings.slack_allowed_channels
        user_ok = not users or user in users or user in self.settings.slack_approvers
        is_dm = channel.startswith("D")
        channel_ok = not channels or channel in channels or (is_dm and "dm" in channels)
        return user_ok and channel_ok

    # ---- buttons ----------------------------------------------------------------------------------

    def on_decision(self, ack: Callable[[], Any], body: dict[str, Any], action: dict[str, Any]) -> None:
        """Approve or Reject: only configured approvers may decide; the click resumes the graph."""
        ack()
        who = self._clicker(body, action)
        if who is None:
            return
        approve = action["action_id"] == APPROVE_ACTION
        if who.user not in self.settings.slack_approvers:
            self.poster.ephemeral(
                who.thread,
                who.user,
                notice(
                    f"Only approvers can {'approve' if approve else 'reject'} this "
                    f"({self._approver_list()}). Nothing was changed."
                ),
            )
            return
        if not self._claim(who.thread):
            self.poster.ephemeral(
                who.thread, who.user, notice("This thread is busy; try again when it is done.")
            )
            return
        if not self._has_pending(who):
            self._release(who.thread)
            return
        verb = ":white_check_mark: Approved" if approve else ":no_entry_sign: Rejected"
        self._mark_decided(body, f"{verb} by <@{who.user}>")
        tid = who.thread.thread_id
        self._start(who.thread, lambda: self.service.resume(tid, approve, approver=who.principal))

    def on_cancel_click(self, ack: Callable[[], Any], body: dict[str, Any], action: dict[str, Any]) -> None:
        """Cancel button on a progress message."""
        ack()
        who = self._clicker(body, action)
        if who is not None:
            self.request_cancel(who)

    def _clicker(self, body: dict[str, Any], action: dict[str, Any]) -> Who | None:
        """Return who clicked which thread's button; None for a repeated delivery or a foreign value."""
        if not self.ledger.first_delivery(f"action:{body.get('trigger_id')}:{action.get('action_ts')}"):
            return None
        user = body["user"]["id"]
        try:
            thread = SlackThread.parse(action.get("value", ""))
        except ValueError as error:
            logger.warning("ignoring button with a foreign value: %s", error)
            return None
        return Who(user, thread)

    def _pending_approval(self, thread: SlackThread) -> Any:
        try:
            return self.service.pending_approval(thread.thread_id)
        except Exception:
            logger.exception("could not read the pending approval of %s", thread.thread_id)
            return None

    def _has_pending(self, who: Who) -> bool:
        pending = self._pending_approval(who.thread)
        if pending is None:
            self.poster.ephemeral(who.thread, who.user, notice(_NOTHING_PENDING_TEXT))
        return pending is not None

    def _mark_decided(self, body: dict[str, Any], note: str) -> None:
        """Replace the clicked message's buttons by who decided, so nobody clicks twice."""
        message = body.get("message") or {}
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        if not message.get("ts") or not channel:
            return
        blocks = decided_blocks(message.get("blocks") or [], note)
        self.poster.update(channel, message["ts"], message.get("text") or note, blocks)

    def _approver_list(self) -> str:
        approvers = self.settings.slack_approvers
        if not approvers:
            return "no approvers configured"
        return "approvers: " + ", ".join(f"<@{user}>" for user in approvers)

    # ---- cancel -----------------------------------------------------------------------------------

    def request_cancel(self, who: Who) -> None:
        """Stop the thread's work through the service (its rollback path); refused for outsiders."""
        if not (who.user in self.settings.slack_approvers or self.may_start(who.user, who.thread.channel)):
            self.poster.ephemeral(who.thread, who.user, notice(_NOT_ALLOWED_TEXT))
            return
        tid = who.thread.thread_id
        with self._lock:
            running = tid in self._busy
            progress = self._progress.get(tid)
        if not running:
            self.submit(who, lambda: self.service.cancel(tid, by=who.principal))
            return
        if progress is not None:
            progress.set_state("cancelling", f"Cancel requested by <@{who.user}>")
        # the running turn posts the rolled-back answer; this call only signals it
        self._cancels.submit(self._signal_cancel, tid, who.principal)

    def _signal_cancel(self, thread_id: str, by: str) -> None:
        with self._lock:
            turn = self._turns.get(thread_id)
        try:
            if turn is not None:
                turn.cancel(by)  # the running turn posts the rolled-back answer
            else:
                self.service.cancel(thread_id, by=by)
        except Exception:
            logger.exception("cancel of %s failed", thread_id)

    # ---- background turns -------------------------------------------------------------------------

    def submit(self, who: Who, work: Callable[[], TurnResult]) -> None:
        """Run ``work`` in the background unless the thread is busy (then say so and drop nothing)."""
        if not self._claim(who.thread):
            self.poster.post(
                who.thread,
                notice(
                    f"<@{who.user}> I am still working on this thread; wait for the answer, or say `cancel`."
                ),
            )
            return
        self._start(who.thread, work)

    def _claim(self, thread: SlackThread) -> bool:
        with self._lock:
            if thread.thread_id in self._busy:
                return False
            self._busy.add(thread.thread_id)
            return True

    def _release(self, thread: SlackThread) -> None:
        with self._lock:
            self._busy.discard(thread.thread_id)
            self._progress.pop(thread.thread_id, None)
            self._turns.pop(thread.thread_id, None)

    def _start(self, thread: SlackThread, work: Callable[[], TurnResult]) -> None:
        try:
            self._work.submit(self._run_turn, thread, work)
        except RuntimeError:  # executor shut down: the bot is stopping
            self._release(thread)
            raise

    def _run_turn(self, thread: SlackThread, work: Callable[[], TurnResult]) -> None:
        """Run one turn with a live progress message, then post the answer (or the error)."""
        progress: ProgressMessage | None = None
        try:
            progress = ProgressMessage(self.poster, thread, self.settings.slack_progress_interval)
            turn = BackgroundTurn(self.service, thread.thread_id, work, name="expagent-slack-turn")
            with self._lock:
                self._progress[thread.thread_id] = progress
                self._turns[thread.thread_id] = turn
            result = turn.result()
        except Exception as error:
            logger.exception("turn in %s failed", thread.thread_id)
            self._release(thread)
            self._report_failure(thread, progress, error)
            return
        self._release(thread)
        progress.finish("done")
        self.post_result(thread, result)

    def _report_failure(
        self, thread: SlackThread, progress: ProgressMessage | None, error: Exception
    ) -> None:
        reason = f"{type(error).__name__}: {error}"
        try:
            if progress is not None:
                progress.finish("failed", reason)
            self.poster.post(thread, notice(f":x: I could not finish this turn: {escape(reason)}"))
        except Exception:
            logger.exception("could not report the failure in %s", thread.thread_id)

    def post_result(self, thread: SlackThread, result: TurnResult) -> None:
        """Post the five-section answer and, when the graph waits, the Approve / Reject buttons."""
        sections = _ordered_sections(result)
        for message in answer_messages(sections) if sections else []:
            self.poster.post(thread, message)
        approval = result.approval
        if result.status == "awaiting_approval" and approval is not None:
            self.poster.post(
                thread,
                approval_message(
                    thread.thread_id, approval.summary, approval.reasons, self.settings.slack_approvers
                ),
            )

    def on_progress(self, event: ProgressEvent) -> None:
        """Service callback (any thread): add the event to its thread's progress message."""
        with self._lock:
            progress = self._progress.get(event.thread_id)
        if progress is not None:
            progress.add(describe(event))


def _ordered_sections(result: TurnResult) -> dict[str, str]:
    """Return the answer's sections in the canonical order (parsed from the markdown if needed)."""
    from agent.answer import SECTIONS, parse_sections

    sections = dict(result.sections or {}) or parse_sections(result.answer or "")
    if not sections and result.answer:
        return {"Answer": result.answer}
    ordered = {name: sections[name] for name in SECTIONS if name in sections}
    return ordered | {k: v for k, v in sections.items() if k not in ordered}


# ---- wiring ---------------------------------------------------------------------------------------


def create_app(
    settings: Settings,
    client: WebClient,
    *,
    signing_secret: str = "",
    model: str | BaseChatModel | None = None,
    make_service: ServiceFactory | None = None,
    token_verification: bool = True,
) -> tuple[App, SlackBot]:
    """Build the bolt app and its bot for one workspace.

    Args:
        settings: Workspace settings (approvers, allowlists, progress interval, home).
        client: The Web API client (tests point its ``base_url`` at a mock Slack).
        signing_secret: Verifies HTTP-mode requests; empty for Socket Mode only.
        model: Chat model for the default service (a string like ``offline`` or a model object).
        make_service: Builds the service from a progress callback; default ``AgentService``.
        token_verification: Call ``auth.test`` at start (also tells bolt the bot's own user id).
    """
    settings.ensure_home()
    if make_service is None:
        make_service = _agent_service_factory(settings, model)
    app = App(
        client=client,
        signing_secret=signing_secret,
        token_verification_enabled=token_verification,
        name="expagent",
        logger=logging.getLogger("expagent.slack.bolt"),
    )
    bot = SlackBot(settings, client, make_service)
    bot.register(app)
    return app, bot


def _agent_service_factory(settings: Settings, model: str | BaseChatModel | None) -> ServiceFactory:
    def make(on_progress: ProgressCallback) -> TurnService:
        from agent.service import AgentService

        return AgentService(settings, model, on_progress=on_progress)

    return make


def _required_env(name: str, why: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise SlackConfigError(f"{name} is not set; {why}")
    return value


def run_bot(settings: Settings, model: str | BaseChatModel | None = None, host: str = "0.0.0.0") -> None:
    """Run the bot until interrupted, in Socket Mode or HTTP mode as ``settings.slack_mode`` says.

    Tokens come from ``SLACK_BOT_TOKEN`` plus ``SLACK_APP_TOKEN`` (socket) or ``SLACK_SIGNING_SECRET``
    (http); they are never logged.
    """
    bot_token = _required_env("SLACK_BOT_TOKEN", "it is the bot's xoxb- token (OAuth & Permissions).")
    client = WebClient(token=bot_token)
    if settings.slack_mode == "socket":
        app_token = _required_env("SLACK_APP_TOKEN", "Socket Mode needs the app-level xapp- token.")
        app, bot = create_app(settings, client, model=model)
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        try:
            SocketModeHandler(app, app_token).start()
        finally:
            bot.close(wait=False)
        return
    secret = _required_env("SLACK_SIGNING_SECRET", "HTTP mode verifies every request with it.")
    app, bot = create_app(settings, client, signing_secret=secret, model=model)
    server = SlackHTTPServer(app, host=host, port=settings.slack_port)
    logger.info("expagent slack bot listening on %s", server.url)
    try:
        server.serve_forever()
    finally:
        server.close()
        bot.close(wait=False)
