"""Block Kit rendering for the Slack bot: markdown to mrkdwn, answer splitting, buttons, progress.

Pure functions over strings and dicts (no Slack client here), so every limit is testable offline.
Slack's limits: a section block's text is at most 3000 characters, a header's 150, and a message
holds at most 50 blocks; a longer answer becomes several messages and nothing is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

SECTION_TEXT_LIMIT = 3000
HEADER_TEXT_LIMIT = 150
BLOCKS_PER_MESSAGE = 50
FALLBACK_TEXT_LIMIT = 300
PROGRESS_LINES = 15

APPROVE_ACTION = "expagent_approve"
REJECT_ACTION = "expagent_reject"
CANCEL_ACTION = "expagent_cancel"

FENCE = "```"
ProgressState = Literal["running", "done", "failed", "cancelling"]

Block = dict[str, Any]


@dataclass
class SlackMessage:
    """One message to post: notification ``text`` plus the Block Kit ``blocks`` that render it."""

    text: str
    blocks: list[Block] = field(default_factory=list)


# ---- markdown -> mrkdwn ---------------------------------------------------------------------------

_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC = re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_PLACEHOLDER = "\x00{}\x00"
_PLACEHOLDER_RE = re.compile("\x00(\\d+)\x00")
_BOLD_MARK = "\x01"


def escape(text: str) -> str:
    """Escape the three characters Slack reserves for control sequences."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """Convert the agent's markdown to Slack mrkdwn.

    Headings become bold lines, ``**bold**`` becomes ``*bold*``, ``*italic*`` becomes ``_italic_``,
    links become ``<url|text>``, bullets become ``•``, tables become aligned monospace blocks and fenced
    code stays fenced. ``&``, ``<`` and ``>`` in plain text are escaped as Slack requires.
    """
    out: list[str] = []
    lines = markdown.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(FENCE):
            block, i = _take_fence(lines, i)
            out.extend(block)
        elif _is_table_row(line):
            rows, i = _take_table(lines, i)
            out.extend(_table_block(rows))
        else:
            out.append(_convert_line(line))
            i += 1
    return "\n".join(out)


def _take_fence(lines: list[str], start: int) -> tuple[list[str], int]:
    """Return a fenced code block (language tag dropped, contents escaped) and the next index."""
    block = [FENCE]
    i = start + 1
    while i < len(lines) and not lines[i].lstrip().startswith(FENCE):
        block.append(escape(lines[i]))
        i += 1
    block.append(FENCE)
    return block, min(i + 1, len(lines))


def _is_table_row(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) > 1 and stripped.startswith("|") and stripped.count("|") >= 2


def _take_table(lines: list[str], start: int) -> tuple[list[list[str]], int]:
    """Collect consecutive table rows (without the ``|---|`` rule) as lists of plain cells."""
    rows: list[list[str]] = []
    i = start
    while i < len(lines) and _is_table_row(lines[i]):
        if not _TABLE_RULE.match(lines[i]):
            cells = lines[i].strip().strip("|").split("|")
            rows.append([_plain_cell(cell) for cell in cells])
        i += 1
    return rows, i


def _plain_cell(cell: str) -> str:
    """Strip markdown emphasis from a table cell and spell links as ``text (url)``."""
    text = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})" if m.group(1) else m.group(2), cell.strip())
    text = _BOLD.sub(r"\2", text)
    return text.replace("`", "")


def _table_block(rows: list[list[str]]) -> list[str]:
    """Render table rows as an aligned, escaped monospace block (Slack has no tables)."""
    width = max(len(row) for row in rows)
    padded = [row + [""] * (width - len(row)) for row in rows]
    widths = [max(len(row[c]) for row in padded) for c in range(width)]
    rendered = ["  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip() for row in padded]
    return [FENCE, *(escape(line) for line in rendered), FENCE]


def _convert_line(line: str) -> str:
    """Convert one markdown line outside code blocks and tables."""
    heading = _HEADING.match(line)
    if heading:
        title = _BOLD.sub(r"\2", heading.group(1))
        return f"*{_convert_inline(title)}*"
    quote = ""
    if line.lstrip().startswith(">"):
        quote, line = "> ", line.lstrip()[1:].lstrip()
    bullet = _BULLET.match(line)
    if bullet:
        line = f"{bullet.group(1)}• {line[bullet.end() :]}"
    return quote + _convert_inline(line)


def _convert_inline(text: str) -> str:
    """Convert inline markdown; links and code spans are protected from escaping and emphasis."""
    protected: list[str] = []

    def keep(value: str) -> str:
        protected.append(value)
        return _PLACEHOLDER.format(len(protected) - 1)

    text = _INLINE_CODE.sub(lambda m: keep(escape(m.group(0))), text)
    text = _LINK.sub(lambda m: keep(_slack_link(m.group(2), m.group(1))), text)
    text = _AUTOLINK.sub(lambda m: keep(f"<{m.group(1)}>"), text)
    text = escape(text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(2)}{_BOLD_MARK}", text)
    text = _ITALIC.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    text = text.replace(_BOLD_MARK, "*")
    return _PLACEHOLDER_RE.sub(lambda m: protected[int(m.group(1))], text)


def _slack_link(url: str, label: str) -> str:
    label = escape(label.replace("|", "/")).strip()
    return f"<{url}|{label}>" if label else f"<{url}>"


# ---- splitting ------------------------------------------------------------------------------------


def split_text(text: str, limit: int = SECTION_TEXT_LIMIT) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters whose concatenation is ``text``.

    Cuts prefer a blank line, then a line end, then a space, and only then the middle of a word.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = _cut_point(rest, limit)
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest or not pieces:
        pieces.append(rest)
    return pieces


def _cut_point(text: str, limit: int) -> int:
    """Return where to cut ``text`` so the head is at most ``limit`` characters and not empty."""
    window = text[:limit]
    for separator in ("\n\n", "\n", " "):
        found = window.rfind(separator)
        if found > limit // 4:
            return found + len(separator)
    return limit


def split_mrkdwn(text: str, limit: int = SECTION_TEXT_LIMIT) -> list[str]:
    """Split mrkdwn into block texts of at most ``limit`` characters, re-opening cut code fences.

    A piece that ends inside a fenced block is closed with a fence and the next piece re-opens it,
    so each piece renders on its own; removing those added fences gives back the original text.
    """
    reserve = 2 * (len(FENCE) + 1) if FENCE in text else 0
    pieces = split_text(text, max(1, limit - reserve))
    balanced: list[str] = []
    inside = False
    for piece in pieces:
        head = FENCE + "\n" if inside else ""
        inside = inside != (_fence_count(piece) % 2 == 1)
        tail = "\n" + FENCE if inside else ""
        balanced.append(head + piece + tail)
    return [piece.strip("\n") or piece for piece in balanced if piece.strip()] or [""]


def _fence_count(text: str) -> int:
    return sum(1 for line in text.split("\n") if line.lstrip().startswith(FENCE))


# ---- answers --------------------------------------------------------------------------------------


def header_block(text: str) -> Block:
    """Return a header block (plain text, cut to Slack's 150 characters)."""
    if len(text) > HEADER_TEXT_LIMIT:
        text = text[: HEADER_TEXT_LIMIT - 1] + "…"
    return {"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}}


def mrkdwn_block(text: str) -> Block:
    """Return a section block with mrkdwn text (the caller keeps it within 3000 characters)."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def section_groups(sections: Mapping[str, str]) -> list[list[Block]]:
    """Render each answer section as a header block followed by its mrkdwn section blocks."""
    groups = []
    for name, body in sections.items():
        texts = split_mrkdwn(to_mrkdwn(body.strip()) or "_(empty)_")
        groups.append([header_block(name), *(mrkdwn_block(text) for text in texts)])
    return groups


def pack_messages(groups: Sequence[Sequence[Block]], fallback: str) -> list[SlackMessage]:
    """Pack block groups into messages of at most 50 blocks, never leaving a header last."""
    messages: list[list[Block]] = [[]]
    for group in groups:
        for index, block in enumerate(group):
            room = BLOCKS_PER_MESSAGE - len(messages[-1])
            starts_group = index == 0 and len(group) > 1
            if room == 0 or (starts_group and room < 2):
                messages.append([])
            messages[-1].append(block)
    messages = [blocks for blocks in messages if blocks]
    total = len(messages)
    return [
        SlackMessage(text=_part_label(fallback, n + 1, total), blocks=blocks)
        for n, blocks in enumerate(messages)
    ]


def _part_label(text: str, part: int, total: int) -> str:
    suffix = "" if total == 1 else f" (part {part}/{total})"
    return _truncate(text, FALLBACK_TEXT_LIMIT - len(suffix)) + suffix


def answer_messages(sections: Mapping[str, str]) -> list[SlackMessage]:
    """Render a five-section answer as one or more Slack messages without dropping any text.

    Args:
        sections: Section name -> markdown body, in display order.
    """
    summary = " ".join(_LINK.sub(_link_label, sections.get("Summary") or "").split())
    fallback = f"expagent: {summary}" if summary else "expagent answer"
    return pack_messages(section_groups(sections), fallback)


def _link_label(match: re.Match[str]) -> str:
    return match.group(1) or match.group(2)


def block_texts(messages: Iterable[SlackMessage]) -> list[str]:
    """Return the texts of every section and header block, in order (for checks and logs)."""
    return [
        block["text"]["text"]
        for message in messages
        for block in message.blocks
        if block.get("type") in {"section", "header"} and "text" in block
    ]


# ---- approvals, progress, notices -----------------------------------------------------------------


def approval_message(
    thread_id: str, summary: str, reasons: Sequence[str], approvers: Sequence[str]
) -> SlackMessage:
    """Return the Approve / Reject message for a turn waiting for approval.

    The buttons carry the graph thread id as their value, so a click resumes the right conversation
    even after the bot restarted.
    """
    lines = [f":raised_hand: *Approval needed* — {escape(summary)}" if summary else "*Approval needed*"]
    lines += [f"• {escape(reason)}" for reason in reasons]
    who = ", ".join(f"<@{user}>" for user in approvers) or "_nobody (set EXPAGENT_SLACK_APPROVERS)_"
    lines.append(f"Approvers: {who}")
    text_blocks = [mrkdwn_block(text) for text in split_mrkdwn("\n".join(lines))]
    buttons = {
        "type": "actions",
        "block_id": "expagent_approval",
        "elements": [
            _button("Approve", APPROVE_ACTION, thread_id, "primary"),
            _button("Reject", REJECT_ACTION, thread_id, "danger"),
        ],
    }
    return SlackMessage(
        text=_truncate(f"Approval needed: {summary}", FALLBACK_TEXT_LIMIT),
        blocks=[*text_blocks[: BLOCKS_PER_MESSAGE - 1], buttons],
    )


def _button(label: str, action_id: str, value: str, style: str | None = None) -> Block:
    button: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def decided_blocks(blocks: Sequence[Block], note: str) -> list[Block]:
    """Return ``blocks`` without their buttons, plus a context line saying what was decided."""
    kept = [block for block in blocks if block.get("type") != "actions"]
    return [*kept, {"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}]


_PROGRESS_TITLE: dict[ProgressState, str] = {
    "running": ":hourglass_flowing_sand: *Working on it…*",
    "cancelling": ":octagonal_sign: *Cancelling…*",
    "done": ":white_check_mark: *Finished*",
    "failed": ":x: *Stopped with an error*",
}


def progress_message(thread_id: str, lines: Sequence[str], state: ProgressState) -> SlackMessage:
    """Return the in-place progress message: the latest event lines and, while running, Cancel."""
    shown = list(lines[-PROGRESS_LINES:])
    hidden = len(lines) - len(shown)
    body = [_PROGRESS_TITLE[state]]
    if hidden:
        body.append(f"_… {hidden} earlier update(s)_")
    body += [f"• {escape(line)}" for line in shown]
    text = _truncate("\n".join(body), SECTION_TEXT_LIMIT)
    blocks: list[Block] = [mrkdwn_block(text)]
    if state == "running":
        cancel = _button("Cancel", CANCEL_ACTION, thread_id, "danger")
        blocks.append({"type": "actions", "block_id": "expagent_progress", "elements": [cancel]})
    plain = _PROGRESS_TITLE[state].replace("*", "")
    return SlackMessage(text=plain, blocks=blocks)


def notice(text: str) -> SlackMessage:
    """Return a one-block message for short notices (refusals, errors, busy)."""
    return SlackMessage(text=_truncate(text, FALLBACK_TEXT_LIMIT), blocks=[mrkdwn_block(_truncate(text))])


def _truncate(text: str, limit: int = SECTION_TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
