"""Request paths: only a path under production's base path is forwarded, exactly as the client sent it.

The end-to-end tests send raw bytes (no client library normalizes `..` or re-encodes anything) to a
proxy whose production is `http://127.0.0.1:PORT/tenantA/v1` with its own key, and look at what the
recording upstream received."""

from __future__ import annotations

import pytest

from shadoweval.proxy.paths import InvalidPath, UpstreamPaths, upstream_target

from .rawhttp import UPSTREAM_BODY, exchange, is_openai_error, limited_proxy, recording_upstream

BASE = "/tenantA/v1"
PROD_KEY = "sk-prod-secret-value"


@pytest.mark.parametrize(("raw", "query", "target"), [
    (b"/v1/chat/completions", b"", "/tenantA/v1/chat/completions"),
    (b"/v1/models", b"limit=2&after=x%0d%0a", "/tenantA/v1/models?limit=2&after=x%0d%0a"),
    (b"/v1/models/ft:gpt-4o:org::abc", b"", "/tenantA/v1/models/ft:gpt-4o:org::abc"),
    (b"/v1/caf%C3%A9", b"", "/tenantA/v1/caf%C3%A9"),  # kept encoded, never decoded and re-sent
    (b"/v1/models%20HTTP/1.0%20x", b"", "/tenantA/v1/models%20HTTP/1.0%20x"),
    (b"/v1/.well/x..y/...z", b"", "/tenantA/v1/.well/x..y/...z"),  # dots inside names are fine
    (b"/v1//chat/completions", b"", "/tenantA/v1//chat/completions"),  # stays under the base path
])
def test_safe_paths_are_forwarded_as_sent(raw, query, target):
    assert upstream_target(BASE, raw, query) == target
    assert UpstreamPaths(BASE, ["/v1/chat/completions"]).target(raw, query) == target


@pytest.mark.parametrize("raw", [
    b"/v1/../../admin/secret", b"/v1/./models", b"/v1/models/..", b"/v1/%2e%2e/%2E%2e/admin", b"/v1/.%2e/x",
    b"/v1/..;jsessionid=1/x", b"/v1/.../x",  # dot segments however written
    b"/v1/models%0d%0aX-Injected:%20evil", b"/v1/a%00b", b"/v1/a%7fb", b"/v1/a%1Fb",  # encoded controls
    b"/v1/..%2f..%2fadmin", b"/v1/a%5cb", b"/v1/%252e%252e/x",  # encoded slash, backslash, percent
    b"/v1/caf\xc3\xa9", b"/v1/a b", b"/v1/a\tb", b"/v1/a\\b", b"/v1/a\"b", b"/v1/a{b}",  # raw bytes
    b"/v1/%zz", b"/v1/a%2", b"/v2/models", b"/v1", b"/admin",
])
def test_unsafe_paths_are_refused(raw):
    with pytest.raises(InvalidPath):
        upstream_target(BASE, raw, b"")
    with pytest.raises(InvalidPath):
        UpstreamPaths(BASE, ["/v1/chat/completions"]).target(raw, b"")


@pytest.mark.parametrize("query", [b"a=\x00", b"a=b c", b"a=\xc3\xa9", b"a=b#frag", b"a=\r\nX: y"])
def test_unsafe_query_strings_are_refused(query):
    with pytest.raises(InvalidPath):
        upstream_target(BASE, b"/v1/models", query)


def test_an_empty_base_path_never_yields_a_network_path():
    assert upstream_target("", b"/v1/models", b"") == "/models"
    with pytest.raises(InvalidPath):
        upstream_target("", b"/v1//evil.example/x", b"")


@pytest.fixture
def tenant(tmp_path):
    """(proxy port, recording): production is the recording upstream under /tenantA/v1, with a key,
    served as `shadoweval serve` serves it."""
    with recording_upstream() as (url, recording):
        with limited_proxy(tmp_path, url + BASE, production={"api_key_env": "PROD_KEY"},
                           env={"PROD_KEY": PROD_KEY}) as (port, _):
            yield port, recording


def _get(port: int, raw_path: bytes):
    return exchange(port, b"GET " + raw_path + b" HTTP/1.1\r\nhost: x\r\nauthorization: Bearer app\r\n"
                    b"connection: close\r\n\r\n")


@pytest.mark.parametrize("raw", [b"/v1/../../admin/secret", b"/v1/%2e%2e/%2e%2e/admin/secret",
                                 b"/v1/%2E%2E/%2E%2E/admin/secret", b"/v1/models/..%2f..%2f..%2fadmin"])
def test_dot_segments_never_reach_production_with_its_key(tenant, raw):
    port, recording = tenant
    response = _get(port, raw)
    assert response.status == 400 and is_openai_error(response)
    assert response.json()["error"]["code"] == "invalid_path"
    assert recording.requests == []


def test_encoded_crlf_is_refused_not_a_500(tenant):
    port, recording = tenant
    response = _get(port, b"/v1/models%0d%0aX-Injected:%20evil")
    assert response.status == 400 and response.json()["error"]["code"] == "invalid_path"
    assert recording.requests == []


def test_encoded_unicode_is_forwarded_encoded_not_a_500(tenant):
    port, recording = tenant
    response = _get(port, b"/v1/caf%C3%A9")
    assert response.status == 200 and response.body == UPSTREAM_BODY
    assert recording.targets == [b"/tenantA/v1/caf%C3%A9"]


def test_encoded_spaces_stay_encoded_in_one_well_formed_request_line(tenant):
    port, recording = tenant
    response = _get(port, b"/v1/models%20HTTP/1.0%20x")
    assert response.status == 200
    line, headers = recording.requests[0]
    assert line == b"GET /tenantA/v1/models%20HTTP/1.0%20x HTTP/1.1"
    assert (b"authorization", f"Bearer {PROD_KEY}".encode()) in headers


def test_normal_requests_reach_production_under_the_base_path(tenant):
    port, recording = tenant
    assert _get(port, b"/v1/models?limit=2").status == 200
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    response = exchange(port, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
    assert response.status == 200
    assert recording.targets == [b"/tenantA/v1/models?limit=2", b"/tenantA/v1/chat/completions"]


def test_raw_non_ascii_in_the_path_is_an_openai_error(tenant):
    port, recording = tenant
    response = _get(port, b"/v1/caf\xc3\xa9")
    assert response.status == 400 and is_openai_error(response)
    assert recording.requests == []
