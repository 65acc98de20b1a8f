"""``expagent mcp``: the guarded tools and the whole agent for any MCP host (a thin front end).

Every tool call goes through ``guarded_call`` with the MCP client's name as the requester (so it lands
in the audit log), exactly as ``expagent tool call`` does; a rejection comes back as a tool error whose
text is the guard's reason. ``run_experiment_request`` drives ``AgentService`` like ``expagent run``;
an approval the plan needs is asked with MCP elicitation when the host supports it. Served over stdio
(default, here) or streamable HTTP (``agent.mcp_http``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import uuid
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from agent import mcp_catalog as catalog
from tools.context import build_context
from tools.core.redact import redact, redact_text
from tools.core.settings import Settings
from tools.guard.policy import PolicyHalt, Reject, ToolOutcome, guarded_call

if TYPE_CHECKING:
    from agent.service import AgentService, TurnResult
    from agent.state import ProgressEvent

__all__ = ["McpFrontEnd", "client_requester", "serve_stdio"]

#: calls one client may have in flight at once (HTTP hosts can send many); more wait their turn.
MAX_CALLS_PER_CLIENT = 4
RESOURCE_NOT_FOUND = -32002
log = logging.getLogger(__name__)
T = TypeVar("T")


def client_requester(ctx: ServerRequestContext[Any, Any]) -> str:
    """Return the requester recorded for calls from this client: ``mcp:<client name>``."""
    params = ctx.session.client_params
    name = params.client_info.name if params is not None else ""
    cleaned = re.sub(r"[^A-Za-z0-9._@-]+", "-", name).strip("-")[:64]
    return f"mcp:{cleaned or 'unknown'}"


def _connection_key(ctx: ServerRequestContext[Any, Any]) -> str:
    headers = getattr(ctx.request, "headers", None)
    return (headers.get("mcp-session-id") if headers is not None else None) or "stdio"


def _supports_elicitation(ctx: ServerRequestContext[Any, Any]) -> bool:
    capabilities = ctx.session.client_capabilities
    return capabilities is not None and capabilities.elicitation is not None


class McpFrontEnd:
    """The MCP handlers over one workspace: a tool context shared by all calls, one agent service."""

    def __init__(self, settings: Settings, model: str | None = None) -> None:
        self.settings = settings
        self.model = model
        self.tools = build_context(settings)
        self._service: AgentService | None = None
        self._workspace_open = False
        self._lock = threading.Lock()
        self._sessions: dict[str, str] = {}
        self._limits: dict[str, anyio.Semaphore] = {}
        self._progress: dict[str, Callable[[ProgressEvent], None]] = {}

    def server(self) -> Server[Any]:
        """Return the MCP server whose handlers are this front end's."""
        return Server(
            "expagent",
            version="0.1.0",
            instructions="expagent trains and tunes models on registered datasets and logs every run to "
            "MLflow. Every call passes its policy guard; nothing can deploy, register, promote or alias "
            "a model. Use run_experiment_request for whole experiments, the other tools for single steps.",
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_resource_templates,
            on_read_resource=self.read_resource,
            on_list_prompts=self.list_prompts,
            on_get_prompt=self.get_prompt,
        )

    def open_workspace(self) -> None:
        """Create or migrate the workspace's stores once, under its lock.

        Done on the first call, not at start-up: hosts start their servers eagerly, and MLflow is
        imported only when a call needs it.
        """
        with self._lock:
            if not self._workspace_open:
                from tools.core.workspace import open_workspace

                open_workspace(self.settings)
                self._workspace_open = True

    def close(self) -> None:
        """Release the agent service and the tool clients (runtimes, stores)."""
        if self._service is not None:
            self._service.close()
        self.tools.close()

    # ---- tools -----------------------------------------------------------------------------------

    async def list_tools(self, ctx: ServerRequestContext[Any, Any], params: Any) -> types.ListToolsResult:
        from tools.toolset import all_tools

        return types.ListToolsResult(tools=catalog.list_tools(all_tools()))

    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        from tools.core.workspace import WorkspaceError

        requester = client_requester(ctx)
        async with self._limit(requester):
            try:
                if not self._workspace_open:
                    await anyio.to_thread.run_sync(self.open_workspace)
                if params.name == catalog.AGENT_TOOL:
                    return await self._run_agent(ctx, params.arguments or {}, requester)
                return await self._call_guarded(ctx, params.name, params.arguments or {}, requester)
            except WorkspaceError as exc:
                return catalog.error_result(str(exc))
            except Exception as exc:  # noqa: BLE001 - the host gets one redacted line; the log has the rest
                log.exception("tool call %s failed", params.name)
                return catalog.error_result(redact_text(f"internal error ({type(exc).__name__}: {exc})"))

    def _limit(self, requester: str) -> anyio.Semaphore:
        return self._limits.setdefault(requester, anyio.Semaphore(MAX_CALLS_PER_CLIENT))

    def _session_id(self, ctx: ServerRequestContext[Any, Any]) -> str:
        return self._sessions.setdefault(_connection_key(ctx), f"mcp-{uuid.uuid4().hex[:8]}")

    def guarded(
        self, name: str, args: dict[str, Any], requester: str, session: str, approvals: set[str]
    ) -> ToolOutcome:
        """Call ``name`` through the guard as ``requester`` (blocking); a halt becomes its outcome."""
        ctx = dataclasses.replace(self.tools, requester=requester, session_id=session, approvals=approvals)
        try:
            return guarded_call(name, args, ctx)
        except PolicyHalt as halt:
            return ToolOutcome(tool=redact_text(name), args=redact(args), verdict=halt.verdict)

    async def _call_guarded(
        self, ctx: ServerRequestContext[Any, Any], name: str, args: dict[str, Any], requester: str
    ) -> types.CallToolResult:
        """Call through the guard; a rejection the user may approve is asked (elicitation) and retried."""
        session, approvals = self._session_id(ctx), set[str]()
        while True:
            outcome: ToolOutcome = await anyio.to_thread.run_sync(
                self.guarded, name, args, requester, session, set(approvals)
            )
            verdict = outcome.verdict
            key = verdict.approval_key if isinstance(verdict, Reject) else None
            if not key or key in approvals or not _supports_elicitation(ctx):
                return catalog.outcome_result(outcome)
            assert isinstance(verdict, Reject)
            question = f"expagent's guard needs your approval ({key}): {verdict.reason}"
            if not await self._ask(
                ctx, question, {"approve": _approve_field(f"Approve {key} for this call.")}
            ):
                return catalog.outcome_result(outcome)
            approvals.add(key)

    async def _ask(
        self, ctx: ServerRequestContext[Any, Any], message: str, fields: dict[str, Any]
    ) -> bool | None:
        """Ask the user yes/no through elicitation: True/False, None when dismissed or unanswerable."""
        schema = {"type": "object", "properties": fields, "required": list(fields)}
        try:
            answer = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
        except (MCPError, anyio.BrokenResourceError, RuntimeError) as exc:
            log.warning("elicitation failed: %s", exc)
            return None
        if answer.action == "decline":
            return False
        if answer.action != "accept":
            return None
        return bool((answer.content or {}).get("approve"))

    # ---- the agent as one tool -------------------------------------------------------------------

    def service(self) -> AgentService:
        """Return the agent service, started on first use (it loads the graph and the checkpointer)."""
        with self._lock:
            if self._service is None:
                from agent.service import AgentService

                self._service = AgentService(self.settings, model=self.model, on_progress=self._on_progress)
            return self._service

    def _on_progress(self, event: ProgressEvent) -> None:
        sink = self._progress.get(event.thread_id)
        if sink is not None:
            sink(event)

    async def _run_agent(
        self, ctx: ServerRequestContext[Any, Any], raw: dict[str, Any], requester: str
    ) -> types.CallToolResult:
        from agent.service import NoPendingApproval, ThreadBusy, new_thread_id

        try:
            args = catalog.ExperimentRequestArgs.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            return catalog.error_result(
                redact_text(f"invalid arguments for {catalog.AGENT_TOOL}: {problems}")
            )
        if args.approve is None and not args.request.strip():
            return catalog.error_result(
                "request is empty: say what to do, or answer an approval with approve"
            )
        if args.approve is not None and args.thread_id is None:
            return catalog.error_result("approve answers a pending approval: pass the thread_id it came with")
        service = await anyio.to_thread.run_sync(self.service)
        thread = args.thread_id or new_thread_id()
        self._progress[thread] = self._progress_sink(ctx)
        try:
            if args.approve is not None:
                call = partial(service.resume, thread, args.approve, requester)
            else:
                call = partial(service.send, thread, args.request, requester)
            result = await self._cancellable(call, partial(service.cancel, thread, requester))
            if result.status == "awaiting_approval" and _supports_elicitation(ctx):
                result = await self._elicit_approval(ctx, service, result, requester)
        except (ThreadBusy, NoPendingApproval) as exc:
            return catalog.error_result(str(exc))
        finally:
            self._progress.pop(thread, None)
        return catalog.agent_result(result)

    async def _elicit_approval(
        self, ctx: ServerRequestContext[Any, Any], service: AgentService, result: TurnResult, requester: str
    ) -> TurnResult:
        message, schema = catalog.approval_question(result)
        decision = await self._ask(ctx, message, schema["properties"])
        if decision is None:  # dismissed: the approval stays pending for a later call
            return result
        resume = partial(service.resume, result.thread_id, decision, requester)
        return await self._cancellable(resume, partial(service.cancel, result.thread_id, requester))

    async def _cancellable(self, call: Callable[[], T], cancel: Callable[[], Any]) -> T:
        """Run ``call`` in a worker thread; if the MCP request is cancelled, stop its work with ``cancel``."""
        try:
            return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(cancel)
            raise

    def _progress_sink(self, ctx: ServerRequestContext[Any, Any]) -> Callable[[ProgressEvent], None]:
        """Return a callback (for any thread) that sends each progress event to the calling client."""
        token = anyio.lowlevel.current_token()
        count = 0

        def send(event: ProgressEvent) -> None:
            nonlocal count
            count += 1
            try:
                anyio.from_thread.run(
                    ctx.session.report_progress, float(count), None, event.message, token=token
                )
            except Exception as exc:  # noqa: BLE001 - a lost progress note must never stop the turn
                log.debug("progress notification not sent: %s", exc)

        return send

    # ---- resources and prompts -------------------------------------------------------------------

    async def list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: Any
    ) -> types.ListResourcesResult:
        records = await anyio.to_thread.run_sync(lambda: self.tools.registry.list())
        return types.ListResourcesResult(resources=catalog.dataset_resources(records))

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any, Any], params: Any
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=catalog.resource_templates())

    async def read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        call = catalog.resource_call(uri)
        if call is None:
            raise MCPError(RESOURCE_NOT_FOUND, f"no resource {redact_text(uri)!r}; see resources/list")
        name, args = call
        from tools.core.workspace import WorkspaceError

        try:
            await anyio.to_thread.run_sync(self.open_workspace)
        except WorkspaceError as exc:
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from None
        session = self._session_id(ctx)
        outcome = await anyio.to_thread.run_sync(
            self.guarded, name, args, client_requester(ctx), session, set()
        )
        if not outcome.ok:
            raise MCPError(RESOURCE_NOT_FOUND, outcome.to_model_message())
        return catalog.resource_contents(uri, outcome.result or {})

    async def list_prompts(self, ctx: ServerRequestContext[Any, Any], params: Any) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[catalog.plan_prompt()])

    async def get_prompt(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        if params.name != catalog.PLAN_PROMPT:
            raise MCPError(
                types.INVALID_PARAMS, f"no prompt {params.name!r}; the prompt is {catalog.PLAN_PROMPT}"
            )
        try:
            return catalog.render_plan_prompt(dict(params.arguments or {}))
        except ValueError as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None


def _approve_field(description: str) -> dict[str, Any]:
    return {"type": "boolean", "title": "Approve", "description": description}


# ---- stdio transport ------------------------------------------------------------------------------


def serve_stdio(settings: Settings, model: str | None = None) -> None:
    """Serve MCP on stdin/stdout until the client closes the connection."""
    from mcp.server.stdio import stdio_server

    front = McpFrontEnd(settings, model)
    server = front.server()

    async def main() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    try:
        anyio.run(main)
    finally:
        front.close()
