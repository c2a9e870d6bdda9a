"""Request limits (`[server]` max_url_bytes, max_headers, max_header_bytes, header_timeout_s,
body_timeout_s): refused in OpenAI's error shape before anything reaches the app or production.

Everything goes over raw sockets to the proxy served with the protocol `shadoweval serve` uses."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from .rawhttp import (
    UPSTREAM_BODY,
    exchange,
    is_openai_error,
    limited_proxy,
    parse_response,
    read_all,
    recording_upstream,
)

HEAD = b"GET /v1/models HTTP/1.1\r\nhost: x\r\n"


@pytest.fixture
def make(tmp_path):
    """make(**server_settings) -> (port, recording)."""
    stack = []

    def start(**server):
        up = recording_upstream()
        url, recording = up.__enter__()
        px = limited_proxy(tmp_path, url + "/v1", server=server)
        port, _ = px.__enter__()
        stack.extend([up, px])
        return port, recording

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def _error(response, status, code):
    assert response.status == status, response
    assert is_openai_error(response), response.body
    assert response.json()["error"]["code"] == code
    assert response.headers[b"connection"] == b"close"


def test_one_huge_header_is_431_before_it_is_buffered(make):
    port, recording = make()
    response = exchange(port, HEAD + b"x-big: " + b"a" * (30 * 1024 * 1024) + b"\r\n\r\n", timeout=10)
    _error(response, 431, "headers_too_large")
    assert recording.requests == []


def test_headers_over_the_total_byte_limit_are_431(make):
    port, recording = make(max_header_bytes=4096)
    headers = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 500) for i in range(10))
    _error(exchange(port, HEAD + headers + b"\r\n"), 431, "headers_too_large")
    assert recording.requests == []


def test_too_many_headers_are_431(make):
    port, recording = make()
    headers = b"".join(b"x-h%d: v\r\n" % i for i in range(10_000))
    _error(exchange(port, HEAD + headers + b"\r\n"), 431, "too_many_headers")
    assert recording.requests == []


def test_a_long_url_is_414(make):
    port, recording = make(max_url_bytes=1024)
    response = exchange(port, b"GET /v1/models?q=" + b"a" * 2000 + b" HTTP/1.1\r\nhost: x\r\n\r\n")
    _error(response, 414, "url_too_long")
    assert recording.requests == []


def test_limits_apply_before_the_key_check(tmp_path):
    with recording_upstream() as (url, recording):
        with limited_proxy(tmp_path, url + "/v1", server={"proxy_keys_env": "KEYS"}, env={"KEYS": "k1"}) as (port, _):
            response = exchange(port, HEAD + b"x-big: " + b"a" * 200_000 + b"\r\n\r\n")
    _error(response, 431, "headers_too_large")


def test_requests_within_the_limits_pass_and_limits_reset_per_request(make):
    port, recording = make(max_header_bytes=64 * 1024)
    big = b"x-a: " + b"a" * 40_000 + b"\r\n"  # 40 KB: fine once, over the limit if counted twice
    body = b'{"model":"m","messages":[],"pad":"' + b"p" * 1_000_000 + b'"}'
    post = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" + big
            + b"content-length: %d\r\n\r\n" % len(body) + body)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for _ in range(2):  # keep-alive: head and body in one write, twice
            sock.sendall(post)
            response = read_all(sock, 10)
            assert response.startswith(b"HTTP/1.1 200") and response.endswith(UPSTREAM_BODY)
        sock.sendall(HEAD + b"\r\n" + HEAD + b"\r\n")  # pipelined
        got = b""
        while got.count(UPSTREAM_BODY) < 2:
            piece = sock.recv(65536)
            assert piece
            got += piece
    assert len(recording.requests) == 4


def test_malformed_requests_get_an_openai_shaped_400(make):
    port, recording = make()
    for data in (b"GARBAGE\r\n\r\n", HEAD + b"no colon here\r\n\r\n", b"GET /v1/models HTTP/1.1\r\nho\x00st: x\r\n\r\n"):
        response = exchange(port, data)
        _error(response, 400, "malformed_request")
    assert recording.requests == []


def test_slowloris_head_is_408_after_header_timeout(make):
    port, recording = make(header_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        t0 = time.monotonic()
        sock.sendall(HEAD + b"x-slow: ")  # half a head, then nothing
        response = parse_response(read_all(sock, 5))
        elapsed = time.monotonic() - t0
    _error(response, 408, "request_timeout")
    assert 0.4 < elapsed < 3
    assert recording.requests == []


def test_a_head_trickled_byte_by_byte_is_cut_off_at_the_timeout(make):
    port, recording = make(header_timeout_s=0.6)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        t0 = time.monotonic()
        got = b""
        for byte in HEAD + b"x-slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.05)
            sock.settimeout(0.001)
            try:
                got += sock.recv(65536)
                break
            except TimeoutError:
                pass
        sock.settimeout(5)
        got += read_all(sock, 5)
    assert got.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - t0 < 3
    assert recording.requests == []


def test_an_idle_connection_is_closed_without_an_answer(make):
    port, _ = make(header_timeout_s=0.3)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        t0 = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - t0 < 3


def test_slow_body_is_408_and_nothing_is_forwarded(make):
    port, recording = make(body_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 100\r\n\r\n{\"model\":")
        t0 = time.monotonic()
        response = parse_response(read_all(sock, 5))
        assert time.monotonic() - t0 < 3
    _error(response, 408, "request_timeout")
    time.sleep(0.2)
    assert recording.requests == []


def test_body_over_max_body_bytes_is_413(make):
    port, recording = make(max_body_bytes=1000)
    body = b"x" * 5000
    response = exchange(port, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s"
                        % (len(body), body))
    assert response.status == 413 and is_openai_error(response)
    chunked = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    chunked += b"".join(b"3e8\r\n" + b"y" * 1000 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
    response = exchange(port, chunked)
    assert response.status == 413 and is_openai_error(response)
    assert recording.requests == []


def test_several_oversized_unfinished_heads_are_refused_quickly(make):
    """Five connections, each streaming a header that never ends: each is answered 431 long before
    it has sent its megabytes (the proxy stops reading them)."""
    port, recording = make()
    results: list[tuple[bytes, int]] = [(b"", 0)] * 5

    def attack(i: int) -> None:
        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(HEAD + b"x-big: ")
            sock.setblocking(False)
            got = b""
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline and sent < 30 * 1024 * 1024:
                try:
                    got += sock.recv(65536)
                    if got:
                        break
                except BlockingIOError:
                    pass
                try:
                    sent += sock.send(b"a" * 65536)
                except BlockingIOError:
                    time.sleep(0.001)
                except (BrokenPipeError, ConnectionResetError):
                    break
            sock.setblocking(True)
            got += read_all(sock, 3)
        results[i] = (got, sent)

    t0 = time.monotonic()
    threads = [threading.Thread(target=attack, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert time.monotonic() - t0 < 10
    for got, sent in results:
        assert got.startswith(b"HTTP/1.1 431"), got[:100]
        assert sent < 10 * 1024 * 1024  # answered long before the 30 MB went out
    assert recording.requests == []


def test_timeouts_hold_for_later_requests_on_a_kept_alive_connection(make):
    port, recording = make(header_timeout_s=0.5, body_timeout_s=0.8)
    body = b'{"model":"m","messages":[]}'
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # a body sent in pieces, within the body timeout, is fine
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body))
        time.sleep(0.3)
        sock.sendall(body[:5])
        time.sleep(0.3)
        sock.sendall(body[5:])
        assert read_all(sock, 5).endswith(UPSTREAM_BODY)
        time.sleep(1.0)  # idle between requests longer than both timeouts: not the client's fault
        sock.sendall(HEAD + b"\r\n")
        assert read_all(sock, 5).endswith(UPSTREAM_BODY)
        t0 = time.monotonic()
        sock.sendall(HEAD)  # the next request stalls mid-head
        response = parse_response(read_all(sock, 5))
        assert time.monotonic() - t0 < 3
    _error(response, 408, "request_timeout")
    assert len(recording.requests) == 2


def test_a_pipelined_oversized_head_is_refused_after_the_answer_before_it(make):
    """The second head starts in the middle of a read, so it is measured header by header; the
    first request is still answered in full, the second never reaches production."""
    port, recording = make(max_header_bytes=4096)
    big = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 500) for i in range(12))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(HEAD + b"\r\n" + HEAD + big + b"\r\n")
        got = read_all(sock, 5)
        while True:  # read on until the server closes: the refusal (if any) follows the first answer
            try:
                piece = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not piece:
                break
            got += piece
    assert got.startswith(b"HTTP/1.1 200") and UPSTREAM_BODY in got
    rest = got.split(UPSTREAM_BODY, 1)[1]
    assert rest == b"" or rest.startswith(b"HTTP/1.1 431")
    assert len(recording.requests) == 1
