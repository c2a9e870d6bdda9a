"""Turning a stored exchange into what an evaluator reads: the conversation, the retrieved passages
and the two answers, as safe HTML.

Model output and prompts are untrusted text. Markdown is rendered with raw HTML turned off (any tag
in the text shows as text), then the result goes through an allow-list sanitizer (nh3, the Rust
ammonia library): only formatting tags survive, links keep only http(s) and mailto targets and
open with `rel="noopener noreferrer"`, images are dropped (they would fetch from anywhere). The page
also forbids inline script through its Content-Security-Policy, so a slip here still cannot run.
"""

from __future__ import annotations

import json
from typing import Any

import nh3
from markdown_it import MarkdownIt

from shadoweval.datasets.evalsets.conversation import conversation

_MD = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable("table").enable("strikethrough")

_TAGS = {"p", "br", "hr", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li", "a",
         "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td"}
_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"style"}, "td": {"style"}}


def markdown_html(text: str) -> str:
    """Markdown to sanitized HTML; any HTML in `text` comes out as visible text."""
    return nh3.clean(_MD.render(text), tags=_TAGS, attributes=_ATTRIBUTES, url_schemes={"http", "https", "mailto"},
                     link_rel="noopener noreferrer", filter_style_properties={"text-align"})


def answer_html(text: str | None, tool_calls: list[dict[str, Any]] | None = None) -> str:
    """An answer as HTML: its text as markdown, then any tool calls it made as code."""
    parts = [markdown_html(text)] if text else []
    for call in tool_calls or []:
        fn = call.get("function") if isinstance(call, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        args = fn.get("arguments") if isinstance(fn, dict) else call
        parts.append(markdown_html(f"Tool call `{name or '?'}`:\n\n```json\n{_pretty(args)}\n```"))
    return "".join(parts) or '<p class="empty">(empty answer)</p>'


def turns(request: dict[str, Any] | None) -> list[dict[str, str]]:
    """The conversation as (role, markdown text) turns; tool calls are shown as JSON code."""
    if not isinstance(request, dict):
        return []
    out = []
    for t in conversation(request):
        text = t.text
        for c in t.calls:
            text += f"\n\nTool call `{c.name or '?'}`:\n\n```json\n{_pretty(c.arguments)}\n```"
        out.append({"role": t.role, "text": text.strip()})
    return out


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False)
