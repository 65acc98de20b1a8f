"""Does a message ask for a change expagent has no tool for? Then nothing may change state.

Deleting, renaming or archiving runs and experiments, editing data, adding notes or tags from a
conversation, sending results somewhere: the agent cannot do these, and a message that asks for one
must never turn into a training run because its other words look like a request ("add a note to
run X: rf baseline looks fine" names a model family). ``unsupported_request`` reads the sentence the
way ``grammar.forbidden`` does (an instruction, not a question about it, a plan of the user's or a
negation) and returns what was asked and how the user can do it instead.
"""

from __future__ import annotations

from typing import Literal

from agent.grammar.forbidden import requested_action
from agent.grammar.notes import note_request

Unsupported = Literal["delete", "rename", "edit_data", "note", "send"]

_RUNS = r"(?:runs?|experiments?|trials?|studies|study|artifacts?|models?|(?=[0-9a-f]*\d)[0-9a-f]{6,32})"
_DATA = r"(?:datasets?|data|csv|rows?|columns?|nulls?|missing\s+values|labels?|features?)"
_SOME = r"(?:.{0,50}?\s+)?"
_VERBS: tuple[tuple[Unsupported, str], ...] = (
    ("delete", rf"(?:delete|remove|purge|erase|wipe|trash|clean\s*up|get\s+rid\s+of|discard)\s+{_SOME}"
               rf"(?:{_RUNS}|datasets?|data)\b"),
    ("rename", rf"(?:rename|archive|unarchive|restore|move)\s+{_SOME}{_RUNS}\b"),
    ("edit_data", rf"(?:edit|modify|overwrite|fix|clean|drop|filter|dedupe|deduplicate|impute|relabel|patch)"
                  rf"\s+{_SOME}{_DATA}\b"),
    ("edit_data", r"(?:(?:upload|add|create|import|ingest|register|publish|push|submit|cut)\s+"
                  r"(?:a\s+|an\s+|the\s+|another\s+)?(?:new\s+|fresh\s+)?|(?:make|build)\s+(?:a\s+|another\s+)?"
                  r"new\s+)(?:dataset\s+|data\s+)?versions?\b(?!\s+(?:tags?|labels?|notes?)\b)"),
    ("edit_data", r"register\s+[\w-]+\s+(?:as\s+)?(?:a\s+new\s+)?versions?\b"),
    ("edit_data", r"(?:add|register|put|upload|publish)\s+(?:.{0,40}?\s+)?(?:to|in|into)\s+(?:the\s+)?"
                  r"(?:dataset\s+|data\s+)?(?:registry|catalog(?:ue)?)\b"),
    ("edit_data", rf"(?:upload|import|ingest)\s+{_SOME}(?:{_DATA}|files?|csvs?|parquet|tables?)\b"),
    ("note", rf"(?:add|write|leave|put|attach|log|set)\s+(?:a\s+|an\s+|the\s+|this\s+|my\s+|some\s+)?"
             rf"(?:note|comment|tag|label|description)s?\b|(?:annotate|comment\s+on|tag)\s+(?:.{{0,30}}?\s+)?"
             rf"{_RUNS}\b"),
    ("send", rf"(?:send|share|email|e-mail|upload|download|export|post|mail)\s+(?:.{{0,40}}?\s+)?"
             rf"(?:{_RUNS}|results?|data|datasets?|metrics?|reports?|numbers|table)\b"),
)  # fmt: skip

#: what the user can do instead, for each unsupported request.
INSTEAD: dict[Unsupported, str] = {
    "delete": "expagent never deletes runs, experiments or data. In the MLflow UI (`expagent ui`) select "
    "the runs and choose Delete (they stay restorable until `mlflow gc`), or run "
    "`mlflow runs delete --run-id <id>`.",
    "rename": "expagent does not rename, move, archive or restore runs and experiments; use the MLflow UI "
    "(`expagent ui`) or `MlflowClient().rename_experiment(...)` / `restore_run(...)`.",
    "edit_data": "expagent never edits, uploads or registers data: datasets are curated and versioned by "
    "Data Engineering. Ask them for a new version, then name it (`expagent datasets list` shows what is "
    "registered).",
    "note": 'I add a note only to a run named by its ID, with the text after a colon: "add a note to run '
    "<run id>: <text>\" (tags I do not set). Or edit the run's description in the MLflow UI.",
    "send": "expagent does not send, share, upload or export anything. Open the runs in the MLflow UI "
    "(`expagent ui`) to download them, or use `expagent run --json` to get the answer as JSON.",
}

#: a short name for each, as the answer states what it did not do.
WHAT: dict[Unsupported, str] = {
    "delete": "deleting runs, experiments or data",
    "rename": "renaming, moving, archiving or restoring runs or experiments",
    "edit_data": "editing, uploading or registering data",
    "note": "adding a note or a tag",
    "send": "sending, sharing or exporting results",
}


def unsupported_request(text: str) -> Unsupported | None:
    """Return the change ``text`` asks for that expagent has no tool for, or None.

    A note on a named run with its text ("add a note to run 8788935a: looks fine") is a change the
    agent makes (``log_note``); a note without a run or without text is not.
    """
    verbs = _VERBS if note_request(text) is None else tuple(v for v in _VERBS if v[0] != "note")
    return requested_action(text, verbs)


def unsupported_note(text: str) -> str | None:
    """Return the line that says what was asked, that it was not done, and how to do it, or None."""
    kind = unsupported_request(text)
    if kind is None:
        return None
    return f"{WHAT[kind]}: I can't do that, so I did nothing. {INSTEAD[kind]}"
