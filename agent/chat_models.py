"""Choose the chat model from a string: the one place expagent decides which model it talks to.

Specs: ``offline`` (default; the rule-based ``agent.offline.OfflineChatModel``), ``openai:<model>``
(``langchain_openai.ChatOpenAI`` against api.openai.com or any OpenAI-compatible server named by
``OPENAI_BASE_URL``), ``scripted:<file>`` (replays a YAML/JSON list of replies; for tests and evals).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolCall
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr

from agent.tokens import estimate_usage

if TYPE_CHECKING:
    from tools.core.settings import Settings

VALID_SPECS = "offline | openai:<model> (e.g. openai:gpt-4o-mini) | scripted:<file.yaml or file.json>"
Reply = AIMessage | str | dict[str, Any]


class ScriptExhausted(RuntimeError):
    """A scripted model was called more times than its script has replies."""


def make_chat_model(spec: str | None = None, settings: Settings | None = None) -> BaseChatModel:
    """Return the chat model named by ``spec`` (default: ``settings.model``, else ``offline``).

    Raises:
        ValueError: ``spec`` is not one of the valid forms, or ``openai:`` has no key and no base URL.
        FileNotFoundError: the ``scripted:`` file does not exist.
    """
    spec = (spec or (settings.model if settings else "") or "offline").strip()
    kind, _, arg = spec.partition(":")
    if spec == "offline":
        from agent.offline import OfflineChatModel

        return OfflineChatModel()
    if kind == "openai" and arg.strip():
        from tools.core.settings import Settings

        return _openai_model(arg.strip(), settings or Settings())
    if kind == "scripted" and arg.strip():
        return ScriptedChatModel(load_script(Path(arg.strip())))
    raise ValueError(f"unknown chat model {spec!r}; valid forms: {VALID_SPECS}")


def _openai_model(name: str, settings: Settings) -> BaseChatModel:
    """Build ChatOpenAI for ``name`` from OPENAI_API_KEY and OPENAI_BASE_URL (or OPENAI_API_BASE)."""
    key = os.environ.get("OPENAI_API_KEY")
    base_url = os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
    return openai_model(name, settings, base_url, key)


def openai_model(name: str, settings: Settings, base_url: str | None, key: str | None) -> BaseChatModel:
    """Build ChatOpenAI for ``name`` at ``base_url`` (None: api.openai.com) with API key ``key``.

    Requests go through ``agent.model_wire.ModelWire`` (bounded per call and per turn, retried on 429
    and 5xx as ``Retry-After`` asks, counted, progress on stderr); the ``openai`` client's own retries
    are off so nothing waits outside those bounds.
    """
    if not key and not base_url:
        raise ValueError(
            f"openai:{name} needs OPENAI_API_KEY (for api.openai.com) or OPENAI_BASE_URL (for an "
            "OpenAI-compatible server such as vLLM, Ollama or llama.cpp); neither is set. "
            "Use --model offline to run without a model server."
        )
    import httpx

    from agent.model_wire import ModelWire, tls_context

    wire = ModelWire(
        endpoint=(base_url or "https://api.openai.com/v1").rstrip("/"),
        call_timeout=settings.model_timeout_s,
        turn_budget=settings.model_turn_budget_s,
        retries=settings.model_retries,
        progress=_stderr_line,
    )
    model = _wired_class()(
        model=name,
        temperature=0,
        # Local servers often need no key, but the client insists on one.
        api_key=key or "not-needed",  # type: ignore[arg-type]
        base_url=base_url,
        # Compatible servers speak Chat Completions; api.openai.com picks the API per model.
        use_responses_api=False if base_url else None,
        # Ask for token usage on streamed replies too, so accounting works in streaming graphs.
        stream_usage=True,
        max_retries=0,
        timeout=settings.model_timeout_s,
        http_client=httpx.Client(transport=wire, timeout=settings.model_timeout_s),
        # Never used by the agent (its graph is synchronous); built here only so the client does not
        # load the CA bundle again for it.
        http_async_client=httpx.AsyncClient(verify=tls_context(), timeout=settings.model_timeout_s),
        # Set only when asked: an explicit False would also stop ``.stream()`` from streaming.
        **({"streaming": True} if settings.model_stream else {}),
    )
    model._wire = wire  # type: ignore[attr-defined]
    return model


def _stderr_line(line: str) -> None:
    print(line, file=sys.__stderr__, flush=True)


def model_wire(model: Any) -> Any:
    """Return the ``ModelWire`` of a model made by ``make_chat_model`` (None for offline/scripted)."""
    return getattr(model, "_wire", None)


def _wired_class() -> type[BaseChatModel]:
    from langchain_openai import ChatOpenAI
    from pydantic import PrivateAttr

    class WiredChatOpenAI(ChatOpenAI):
        """ChatOpenAI that keeps the ``ModelWire`` its HTTP client sends through."""

        _wire: Any = PrivateAttr(default=None)

    return WiredChatOpenAI


def load_script(path: Path) -> list[Reply]:
    """Read scripted replies from a YAML or JSON file: a list, or a mapping with ``responses``."""
    if not path.is_file():
        raise FileNotFoundError(f"scripted model file not found: {path}")
    text = path.read_text(encoding="utf-8")
    import yaml

    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    if isinstance(data, dict) and "responses" in data:
        data = data["responses"]
    if not isinstance(data, list):
        raise ValueError(
            f"{path}: a script must be a list of replies (or {{responses: [...]}}), got {type(data).__name__}"
        )
    return data


def to_ai_message(reply: Reply, index: int = 0) -> AIMessage:
    """Return a scripted reply as an AIMessage; dicts are ``{content, tool_calls: [{name, args, id?}]}``.

    Raises:
        ValueError: the reply has another type, unknown keys, or a malformed tool call.
    """
    if isinstance(reply, AIMessage):
        return reply
    if isinstance(reply, str):
        return AIMessage(content=reply)
    if not isinstance(reply, dict):
        raise ValueError(
            f"scripted reply #{index + 1}: expected str, dict or AIMessage, got {type(reply).__name__}"
        )
    unknown = set(reply) - {"content", "tool_calls"}
    if unknown:
        raise ValueError(
            f"scripted reply #{index + 1}: unknown keys {sorted(unknown)}; use content and tool_calls"
        )
    calls = [_tool_call(call, index, j) for j, call in enumerate(reply.get("tool_calls") or [])]
    return AIMessage(content=reply.get("content") or "", tool_calls=calls)


def _tool_call(call: Any, index: int, j: int) -> ToolCall:
    where = f"scripted reply #{index + 1}, tool call #{j + 1}"
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise ValueError(f"{where}: needs a 'name' (str) and 'args' (mapping)")
    args = call.get("args", {})
    if isinstance(args, str):
        args = json.loads(args)
    if not isinstance(args, dict):
        raise ValueError(f"{where}: 'args' must be a mapping, got {type(args).__name__}")
    return ToolCall(name=call["name"], args=args, id=str(call.get("id") or f"call_{index + 1}_{j + 1}"))


def _summarise(messages: Sequence[BaseMessage], last: int = 3) -> str:
    shown = [f"[{m.type}] {str(m.content)[:120]!r}" for m in messages[-last:]]
    return "; ".join(shown) or "(no messages)"


class ScriptedChatModel(BaseChatModel):
    """A chat model that replays scripted replies in order and fails loudly when they run out.

    ``bind_tools`` returns the model itself and records the tools, so a graph's tool loop runs
    unchanged. Every reply carries ``usage_metadata`` (counted with tiktoken) unless it has its own.
    """

    responses: list[AIMessage]
    model_name: str | None = None  # only used to pick the tokenizer for usage counts
    _position: int = PrivateAttr(default=0)
    _calls: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _tools: list[dict[str, Any]] = PrivateAttr(default_factory=list)
    _tool_choice: Any = PrivateAttr(default=None)
    _bindings: list[list[str]] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, responses: Sequence[Reply], **kwargs: Any) -> None:
        replies = [to_ai_message(r, i) for i, r in enumerate(responses)]
        super().__init__(responses=replies, **kwargs)  # type: ignore[call-arg]  # pydantic field

    @property
    def _llm_type(self) -> str:
        return "expagent-scripted"

    @property
    def calls(self) -> list[list[BaseMessage]]:
        """The messages the model received, one list per call."""
        return list(self._calls)

    @property
    def bound_tools(self) -> list[dict[str, Any]]:
        """The OpenAI tool schemas of the latest ``bind_tools`` call."""
        return list(self._tools)

    @property
    def tool_choice(self) -> Any:
        """The ``tool_choice`` of the latest ``bind_tools`` call."""
        return self._tool_choice

    @property
    def bindings(self) -> list[list[str]]:
        """The tool names of every ``bind_tools`` call, in order."""
        return list(self._bindings)

    @property
    def remaining(self) -> int:
        """How many replies have not been replayed yet."""
        return len(self.responses) - self._position

    def bind_tools(  # type: ignore[override]
        self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any
    ) -> ScriptedChatModel:
        """Record ``tools`` and ``tool_choice`` and return this same model."""
        self._tools = [convert_to_openai_tool(t) for t in tools]
        self._tool_choice = tool_choice
        self._bindings.append([t["function"]["name"] for t in self._tools])
        return self

    def assert_complete(self) -> None:
        """Raise AssertionError if scripted replies were never replayed."""
        if self.remaining:
            upcoming = self.responses[self._position]
            raise AssertionError(
                f"scripted model: {self.remaining} of {len(self.responses)} replies were not used; "
                f"next unused reply (#{self._position + 1}): {upcoming.content!r} {upcoming.tool_calls}"
            )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._lock:
            index = self._position
            if index >= len(self.responses):
                raise ScriptExhausted(
                    f"scripted model: call #{index + 1} but the script has only "
                    f"{len(self.responses)} replies; last messages: {_summarise(messages)}"
                )
            self._position += 1
            self._calls.append(list(messages))
        reply = self.responses[index].model_copy(deep=True)
        if not reply.usage_metadata:
            reply.usage_metadata = estimate_usage(messages, reply, self._tools, self.model_name)
        return ChatResult(generations=[ChatGeneration(message=reply)])
