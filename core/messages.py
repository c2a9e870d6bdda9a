"""The text of a message, one rule for every module that reads requests (capture, the judges, the
context extraction, the exports). Imports nothing from the project."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Content parts that carry text: Chat Completions `text`, Responses API `input_text` and
# `output_text`. Images, audio, files and refusals carry none.
TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})

# How the parts of one message are joined, by what the text is for. One message with several text
# parts is still one message: the parts are pieces of it, not separate passages, so the rule only
# differs in how much the boundary between them must survive.
QUESTION = " "  # the user's question as one line (stored: eval items, report questions; do not change)
TURN = "\n"  # a turn of a transcript shown to people or exported (exports, grading page)
BLOCKS = "\n\n"  # text searched for passages, where a part boundary must end a passage or paragraph


def message_text(content: Any, sep: str = TURN) -> str:
    """A message's text from its `content`: a string as it is; a list of parts -> the text of its
    text parts (bare strings, and mappings with a string `text` whose `type` is missing or one of
    TEXT_PART_TYPES) joined by `sep`; anything else -> "".

    `sep` is QUESTION, TURN or BLOCKS (above), by what the text is for; the parts taken are the
    same whichever it is."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return sep.join(p if isinstance(p, str) else p["text"] for p in content if isinstance(p, str) or (
        isinstance(p, Mapping) and isinstance(p.get("text"), str)
        and p.get("type", "text") in TEXT_PART_TYPES))


def _user_contents(request: Mapping[str, Any]) -> list[Any]:
    """The `content` of each user turn, oldest first: Chat Completions `messages` (user messages whose
    content is a string or a list of parts), else the Responses API `input` (a string is one turn,
    else its user items)."""
    messages = request.get("messages")
    if isinstance(messages, list):
        turns = [m.get("content") for m in messages if isinstance(m, Mapping) and m.get("role") == "user"
                 and isinstance(m.get("content"), str | list)]
        if turns:
            return turns
    inp = request.get("input")
    if isinstance(inp, str):
        return [inp]
    if isinstance(inp, list):
        return [item.get("content") for item in inp if isinstance(item, Mapping) and item.get("role") == "user"]
    return []


def last_user_text(request: Mapping[str, Any]) -> str:
    """The last user message's text (Chat Completions `messages`), else the Responses API `input`
    (a string, or its last user item's text): the question a request asks, as one line (QUESTION)."""
    turns = _user_contents(request)
    return message_text(turns[-1], QUESTION) if turns else ""


def user_texts(request: Mapping[str, Any]) -> str:
    """Every user message's text, one per line, oldest first (Chat Completions `messages`, else the
    Responses API `input`): what the user has said in the conversation so far, not only the last
    question. An answer may repeat a number or name the user gave two turns ago without inventing it."""
    return TURN.join(message_text(c, QUESTION) for c in _user_contents(request))
