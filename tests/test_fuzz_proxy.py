"""Fuzzing the proxy's request line and headers over raw sockets.

One real proxy (create_app under uvicorn with the protocol `shadoweval serve` uses) whose production
is a recording upstream at `/tenantA/v1`, holding production's key. Hypothesis builds request paths
(dot segments, encoded dots, %00-%1f and %7f, unicode, slashes, very long ones, query strings) and
header names and values; nothing is normalized client-side. For every request:
- never a 500, and always an answer;
- the answer is production's own bytes or an OpenAI-shaped JSON error;
- production only ever sees request targets under /tenantA/v1/, without dot segments or controls.

Derandomized, so CI runs the same examples every time.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .rawhttp import UPSTREAM_BODY, exchange, is_openai_error, limited_proxy, recording_upstream

PROD_KEY = "sk-prod-fuzz"

_SEGMENTS = st.one_of(
    st.sampled_from(["chat", "completions", "models", "embeddings", "", ".", "..", "...", "%2e", "%2E%2e", ".%2e",
                     "%2e.", "..;x", "%2f", "%2F..", "%5c", "%25", "%252e%252e", "%C3%A9", "caf\u00e9", "a b", "%20",
                     "%0d%0aX-Injected:%20evil", "a\\b", "?", "#", "%zz", "%", "ft:gpt-4o:org::1", "~user"]),
    st.sampled_from([f"%{i:02x}" for i in range(0x20)] + ["%7f", "%7F", "\x00", "\x7f", "\t", "\r\n"]),
    st.text(st.characters(codec="utf-8"), max_size=12),
    st.text("abc.%/2eEfF05", max_size=12),
    st.integers(0, 12_000),  # that many "a"s (kept a number so that a failure's report stays short)
)
_PREFIX = st.sampled_from(["/v1/", "/v1/", "/v1/", "/v1", "/v1//", "/v2/", "/", "/v1%2f", "/%76%31/", "//v1/",
                           "http://evil.example/v1/"])
_QUERY = st.one_of(st.just(""), st.text(st.characters(codec="utf-8"), max_size=20).map(lambda q: "?" + q),
                   st.sampled_from(["?limit=2", "?a=%0d%0a", "?a=b#frag", "?../../x"]), st.integers(1000, 9000))
_TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_!#$%&'*+.^`|~", min_size=1, max_size=20)
_FORBIDDEN_NAMES = {"content-length", "transfer-encoding", "connection", "expect", "upgrade", "host"}
_HEADER_NAME = st.one_of(_TOKEN, st.binary(min_size=1, max_size=10).map(lambda b: b.decode("latin-1")),
                         st.sampled_from(["authorization", "x-shadoweval-key", "x-shadoweval-tags", "x-shadoweval-context",
                                          "te", "proxy-authorization", "x-forwarded-for"]))
_HEADER_VALUE = st.one_of(st.text("abc xyz=;,/\t", max_size=30), st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
                          st.integers(0, 70_000), st.just("[\"x\"]"))
_HEADERS = st.lists(st.tuples(_HEADER_NAME, _HEADER_VALUE), max_size=8).map(
    # a line feed would start a header of its own, which could announce a body that never comes
    lambda hs: [(n.replace("\n", ""), v.replace("\n", "") if isinstance(v, str) else v) for n, v in hs
                if n.lower().strip() not in _FORBIDDEN_NAMES and n.replace("\n", "")])


@pytest.fixture(scope="module")
def fuzz_proxy(tmp_path_factory):
    with recording_upstream() as (url, recording):
        with limited_proxy(tmp_path_factory.mktemp("fuzz"), url + "/tenantA/v1",
                           production={"api_key_env": "PROD_KEY"}, env={"PROD_KEY": PROD_KEY}) as (port, _):
            yield port, recording


_DOT_SEGMENT = re.compile(rb"^\.+(;.*)?$")


def _safe_upstream_target(target: bytes) -> bool:
    if not target.startswith(b"/tenantA/v1/") or re.search(rb"[\x00-\x20\x7f-\xff]", target):
        return False
    path = target.split(b"?", 1)[0]
    decoded = unquote_to_bytes(path)
    if re.search(rb"[\x00-\x1f\x7f\\]", decoded):
        return False
    return not any(_DOT_SEGMENT.match(seg) for seg in decoded.split(b"/"))


@settings(max_examples=250, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(method=st.sampled_from(["GET", "POST"]), prefix=_PREFIX, segments=st.lists(_SEGMENTS, max_size=5),
       query=_QUERY, headers=_HEADERS)
def test_fuzzed_requests_never_500_and_never_escape_the_base_path(fuzz_proxy, method, prefix, segments, query, headers):
    port, recording = fuzz_proxy
    before = len(recording.requests)
    query = query if isinstance(query, str) else "?q=" + "q" * query
    target = (prefix + "/".join(s if isinstance(s, str) else "a" * s for s in segments) + query).encode("utf-8")
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}' if method == "POST" else b""
    head = [method.encode() + b" " + target + b" HTTP/1.1", b"host: proxy"]
    head += [n.encode("latin-1") + b": " + (v.encode("latin-1") if isinstance(v, str) else b"v" * v) for n, v in headers]
    head += [b"content-length: %d" % len(body), b"connection: close"]
    response = exchange(port, b"\r\n".join(head) + b"\r\n\r\n" + body, timeout=10)

    assert response.status is not None, f"no answer to {target!r}"
    assert response.status != 500, response
    forwarded = recording.targets[before:]
    if response.body == UPSTREAM_BODY:
        assert response.status == 200 and len(forwarded) == 1
    else:
        assert is_openai_error(response), response
    for sent in forwarded:
        assert _safe_upstream_target(sent), f"{target!r} reached production as {sent!r}"
