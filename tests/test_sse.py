"""Reading answers back from the bytes the proxy forwarded: SSE framing, chat and Responses events."""

from __future__ import annotations

import orjson

from shadoweval.proxy.sse import parse_body, parse_stream, sse_payloads


def _chat_events(words: list[str]) -> list[bytes]:
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    events += [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in words]
    events += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
               {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(words), "total_tokens": 3 + len(words)}}]
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def test_events_split_anywhere_across_pieces():
    stream = b"".join(_chat_events(["Hel", "lo", " world"]))
    whole = parse_stream([stream], responses_api=False)
    for size in (1, 2, 7, 50):
        pieces = [stream[i:i + size] for i in range(0, len(stream), size)]
        got = parse_stream(pieces, responses_api=False)
        assert (got.text, got.finish_reason, got.usage) == (whole.text, "stop", whole.usage)
        assert got.text == "Hello world" and got.usage.completion_tokens == 3


def test_first_token_piece_index():
    events = _chat_events(["a", "b"])
    # piece 0: the role-only event; piece 1: first content
    got = parse_stream([events[0], events[1], b"".join(events[2:])], responses_api=False)
    assert got.first_token_index == 1


def test_crlf_framing_and_multiline_data():
    raw = [b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\r\n\r\n",
           b"event: message\r\ndata: {\"choices\":[{\"index\":0,\r\ndata: \"delta\":{\"content\":\"y\"}}]}\r\n\r\n"]
    assert sse_payloads(raw)[0][0].startswith(b"{")
    assert parse_stream(raw, responses_api=False).text == "xy"


def test_tool_call_deltas_are_assembled():
    events = [{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "look", "arguments": ""}}]}}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\":"}}]}}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, "finish_reason": "tool_calls"}]}]
    got = parse_stream([b"data: " + orjson.dumps(e) + b"\n\n" for e in events], responses_api=False)
    assert got.tool_calls == [{"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}}]
    assert got.text is None and got.finish_reason == "tool_calls"


def test_responses_stream_and_body():
    final = {"status": "completed", "model": "m", "usage": {"input_tokens": 2, "output_tokens": 2},
             "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hi there"}]}]}
    events = [{"type": "response.output_text.delta", "delta": "Hi"}, {"type": "response.output_text.delta", "delta": " there"},
              {"type": "response.completed", "response": final}]
    got = parse_stream([b"event: x\ndata: " + orjson.dumps(e) + b"\n\n" for e in events], responses_api=True)
    assert got.text == "Hi there" and got.usage.total_tokens == 4 and got.first_token_index == 0
    assert parse_body(orjson.dumps(final), responses_api=True).text == "Hi there"


def test_error_bodies_and_garbage():
    assert parse_body(b'{"error": {"message": "nope"}}', responses_api=False).error == "nope"
    assert parse_body(b"<html>", responses_api=False).error == "response body is not JSON"
    got = parse_stream([b"data: not json\n\n", b'data: {"error": {"message": "overloaded"}}\n\n'], responses_api=False)
    assert got.error == "overloaded"


def test_usage_null_in_every_chunk_as_openai_sends_with_include_usage():
    events = [{"model": "gpt-4o", "usage": None, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
              for w in ["a", "b"]]
    events.append({"model": "gpt-4o", "usage": None, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append({"model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
    got = parse_stream([b"data: " + orjson.dumps(e) + b"\n\n" for e in events], responses_api=False)
    assert (got.text, got.model, got.finish_reason, got.usage.total_tokens) == ("ab", "gpt-4o", "stop", 3)
