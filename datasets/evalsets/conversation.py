"""A request's conversation in one shape, whatever API it was sent to: Chat Completions messages,
a Responses API `input` (with `instructions`), or a legacy Completions `prompt`. The exports read
every request through it, so each format sees the same turns and tool calls."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from shadoweval.core.messages import TURN, message_text


@dataclass(frozen=True, slots=True)
class Call:
    """A tool call the assistant made, as OpenAI sends it (arguments are JSON text)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation, whichever API it came from, with its content as plain text."""

    role: str  # system | user | assistant | tool ("developer" is read as system: not every tool knows it)
    text: str
    calls: tuple[Call, ...] = ()
    call_id: str | None = None  # tool turns: the call this answers

    def openai(self) -> dict[str, Any]:
        m: dict[str, Any] = {"role": self.role, "content": self.text}
        if self.calls:
            m["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                               for c in self.calls]
        if self.call_id is not None:
            m["tool_call_id"] = self.call_id
        return m

    def inspect(self, functions: dict[str, str]) -> dict[str, Any]:
        """Inspect's ChatMessage shape: ToolCall is {id, function, arguments: dict}; a tool message
        names the function it answers, which OpenAI leaves to the call it points at."""
        m: dict[str, Any] = {"role": self.role, "content": self.text}
        if self.calls:
            m["tool_calls"] = [_inspect_call(c) for c in self.calls]
        if self.role == "tool":
            m.update({k: v for k, v in (("tool_call_id", self.call_id), ("function", functions.get(self.call_id or "")))
                      if v is not None})
        return m


def _inspect_call(c: Call) -> dict[str, Any]:
    try:
        args = json.loads(c.arguments or "{}")
    except ValueError:
        args = None
    call = {"id": c.id, "function": c.name, "arguments": args if isinstance(args, dict) else {}, "type": "function"}
    if not isinstance(args, dict):  # keep the call, say why its arguments are gone (Inspect's own field)
        call["parse_error"] = f"arguments are not a JSON object: {c.arguments[:200]}"
    return call


def _turn(m: dict[str, Any]) -> Turn | None:
    role = m.get("role")
    role = {"developer": "system", "function": "tool"}.get(role, role) if isinstance(role, str) else None
    if role not in ("system", "user", "assistant", "tool"):
        return None
    calls = tuple(Call(str(c.get("id") or ""), str(f.get("name") or ""), str(f.get("arguments") or "{}"))
                  for c in m.get("tool_calls") or () if isinstance(c, dict) and isinstance(f := c.get("function"), dict))
    call_id = m.get("tool_call_id") if role == "tool" else None
    return Turn(role, message_text(m.get("content"), TURN), calls, call_id if isinstance(call_id, str) else None)


def conversation(request: dict[str, Any]) -> list[Turn]:
    """The conversation of a Chat Completions, Responses or legacy Completions request."""
    if isinstance(request.get("messages"), list):
        return [t for m in request["messages"] if isinstance(m, dict) and (t := _turn(m))]
    turns: list[Turn] = []
    if isinstance(request.get("instructions"), str) and request["instructions"]:
        turns.append(Turn("system", request["instructions"]))
    items = request.get("input", request.get("prompt"))
    if isinstance(items, str):
        return [*turns, Turn("user", items)]
    for it in items if isinstance(items, list) else ():
        kind = it.get("type", "message") if isinstance(it, dict) else None
        if kind == "message" and (t := _turn(it)):
            turns.append(t)
        elif kind == "function_call":  # belongs to the assistant turn it follows, as in Chat Completions
            call = Call(str(it.get("call_id") or it.get("id") or ""), str(it.get("name") or ""),
                        str(it.get("arguments") or "{}"))
            if turns and turns[-1].role == "assistant":
                turns[-1] = replace(turns[-1], calls=(*turns[-1].calls, call))
            else:
                turns.append(Turn("assistant", "", (call,)))
        elif kind == "function_call_output":
            turns.append(Turn("tool", message_text(it.get("output"), TURN), call_id=str(it.get("call_id") or "")))
    return turns


def api_route(request: dict[str, Any]) -> str:
    """The API path a request was meant for, when only its body is known (imported or replayed):
    a Responses API body has `input` and no `messages`."""
    return "/v1/responses" if "input" in request and "messages" not in request else "/v1/chat/completions"
