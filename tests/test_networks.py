"""Corporate networks: an HTTP forward proxy (absolute-form and CONNECT), NO_PROXY, private CAs and
mutual TLS, for production and `base_url` candidates. Everything runs on 127.0.0.1: a small
recording forward proxy, uvicorn upstreams with certificates from a CA made here, the official
openai client as the app."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shadoweval.cli.mockllm import MockLLM, ThreadedServer, free_port
from shadoweval.core.settings import SettingsError, load_settings
from shadoweval.core.types import Output
from shadoweval.proxy import netconf
from shadoweval.proxy.app import create_app
from shadoweval.proxy.candidates import build_caller

from .conftest import Proxy, running_proxy, stored

MESSAGES = [{"role": "user", "content": "hello"}]


# -- a recording forward proxy ------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    target: str
    proxy_authorization: str | None


@dataclass
class ForwardProxy:
    """A forward proxy on 127.0.0.1: absolute-form requests are forwarded (one per connection),
    CONNECT opens a tunnel. It records every request line it receives."""

    credentials: str | None = None  # "user:pass" required in Proxy-Authorization when set
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def url(self, credentials: str | None = None) -> str:
        return f"http://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _ = line.split(" ", 2)
            headers = [h.split(":", 1) for h in header_lines if h]
            auth = next((v.strip() for k, v in headers if k.lower() == "proxy-authorization"), None)
            self.seen.append(Seen(method, target, auth))
            if self.credentials and auth != "Basic " + base64.b64encode(self.credentials.encode()).decode():
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")
                return
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
                return
            url = urlsplit(target)
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
            kept = [f"{k}:{v}" for k, v in headers
                    if k.lower() not in ("proxy-authorization", "connection", "proxy-connection")]
            path = url.path + (f"?{url.query}" if url.query else "")
            up_writer.write(f"{method} {path} HTTP/1.1\r\n".encode() + "\r\n".join([*kept, "connection: close"]).encode()
                            + b"\r\n\r\n")
            length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
            if length:
                up_writer.write(await reader.readexactly(length))
            await _pipe(up_reader, writer)
            up_writer.close()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except OSError:
                pass


# -- a private CA and its certificates ----------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # certificate and key in one file
    client_cert_only: Path
    client_key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer_key: ec.EllipticCurvePrivateKey,
           issuer: x509.Name | None, *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("shadoweval test CA", ca_key, ca_key, None, ca=True)
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    server_key = ec.generate_private_key(ec.SECP256R1())
    (d / "server.pem").write_bytes(_issue("localhost", server_key, ca_key, ca.subject, server=True).public_bytes(pem))
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue("the shadoweval proxy", client_key, ca_key, ca.subject).public_bytes(pem)
    (d / "client-only.pem").write_bytes(client)
    _write_key(client_key, d / "client.key")
    (d / "client.pem").write_bytes(client + (d / "client.key").read_bytes())
    return Pki(d / "ca.pem", d / "server.pem", _write_key(server_key, d / "server.key"), d / "client.pem",
               d / "client-only.pem", d / "client.key")


def _https_upstream(mock: MockLLM, pki: Pki, *, client_certs: bool = False) -> ThreadedServer:
    extra = {"ssl_ca_certs": str(pki.ca), "ssl_cert_reqs": ssl.CERT_REQUIRED} if client_certs else {}
    server = ThreadedServer(mock, ssl_certfile=str(pki.server_cert), ssl_keyfile=str(pki.server_key), **extra)
    return server


def _https_url(server: ThreadedServer) -> str:
    return f"https://127.0.0.1:{server.port}"


def _outputs(proxy: Proxy, exchange_id: str, n: int, timeout: float = 15.0) -> dict[str, Output]:
    """The exchange's outputs by name once `n` of them are stored."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proxy.store.flush()
        found = proxy.store.get_exchange(exchange_id)
        if found and len(found[1]) >= n:
            return {o.name: o for o in found[1]}
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} outputs for {exchange_id}")


def _ask(proxy_url: str) -> str | None:
    client = openai.OpenAI(base_url=proxy_url, api_key="k", max_retries=0)
    return client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content


def _fails(proxy_url: str) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as err:
        _ask(proxy_url)
    return err.value


# -- proxy selection ----------------------------------------------------------------------------


def test_no_proxy_rules():
    no_proxy = ".corp.example, internal, 10.0.0.0/8, 127.0.0.1:9000, [::1]"
    assert netconf.bypassed("api.corp.example", 443, no_proxy)
    assert netconf.bypassed("corp.example", 443, no_proxy)
    assert netconf.bypassed("internal", 80, no_proxy) and netconf.bypassed("a.internal", 80, no_proxy)
    assert not netconf.bypassed("notinternal", 80, no_proxy)
    assert netconf.bypassed("10.2.3.4", 80, no_proxy) and not netconf.bypassed("11.2.3.4", 80, no_proxy)
    assert netconf.bypassed("127.0.0.1", 9000, no_proxy) and not netconf.bypassed("127.0.0.1", 9001, no_proxy)
    assert netconf.bypassed("::1", 443, no_proxy)
    assert netconf.bypassed("anything", 1, "*") and netconf.bypassed("x.example", 1, "*.example")
    assert not netconf.bypassed("api.openai.com", 443, no_proxy)


def test_proxy_choice_and_precedence():
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:1", "HTTP_PROXY": "http://plain:1",
           "NO_PROXY": "skip.example"}
    assert netconf.proxy_for("https://api.example/v1", env=env) == "http://lower:1"  # lower case wins
    assert netconf.proxy_for("http://api.example/v1", env=env) == "http://plain:1"
    assert netconf.proxy_for("https://skip.example/v1", env=env) is None
    assert netconf.proxy_for("https://api.example/v1", proxy="http://conf:2", env=env) == "http://conf:2"
    assert netconf.proxy_for("https://skip.example/v1", proxy="http://conf:2", no_proxy="other", env=env) \
        == "http://conf:2"  # [network] no_proxy replaces NO_PROXY
    assert netconf.proxy_for("https://api.example/v1", proxy="direct", env=env) is None
    assert netconf.proxy_for("https://api.example/v1", env={"ALL_PROXY": "socks5://s:1"}) is None
    assert netconf.proxy_for("https://api.example/v1", env={"ALL_PROXY": "http://all:1"}) == "http://all:1"
    # the environment reaches netconf through load_settings, the one reader of the environment
    settings = load_settings(None, overrides={"production": {"base_url": "https://api.example/v1"}},
                             env={"https_proxy": "http://u:secret@corp:3128"})
    assert netconf.production_route(settings).proxy == "http://u:secret@corp:3128"
    assert "secret" not in repr(settings) and netconf.describe("http://u:secret@corp:3128") == "http://corp:3128"


def test_litellm_candidates_say_they_follow_the_environment(caplog):
    with pytest.raises(SettingsError, match="base_url candidates only"):
        load_settings(None, overrides={"candidates": [{"name": "c", "model": "openai/x", "ca_file": "/ca.pem"}]},
                      env={})
    settings = load_settings(None, overrides={"network": {"proxy": "http://corp:3128"},
                                              "candidates": [{"name": "c", "model": "openai/x"}]}, env={})
    build_caller(settings.candidates[0], None, settings)
    assert any("ignores [network] proxy" in r.getMessage()
               for r in caplog.records if r.name == "shadoweval.candidates" and r.levelno == logging.WARNING)


# -- production through a proxy -----------------------------------------------------------------


def test_production_http_through_env_proxy_and_no_proxy(production, tmp_path):
    mock, server = production
    with ForwardProxy() as fwd:
        env = {"HTTP_PROXY": fwd.url("alice:s%3Acret")}
        with running_proxy(tmp_path, server.url, env=env) as proxy:
            assert _ask(proxy.url) == "prod-model says: hello"
            (seen,) = fwd.seen
            assert (seen.method, seen.target) == ("POST", f"{server.url}/v1/chat/completions")  # absolute form
            assert seen.proxy_authorization == "Basic " + base64.b64encode(b"alice:s:cret").decode()
            assert "proxy-authorization" not in mock.requests[-1].headers
        with running_proxy(tmp_path / "b", server.url, env={**env, "NO_PROXY": "localhost,127.0.0.1"}) as proxy:
            assert _ask(proxy.url) == "prod-model says: hello"
        assert len(fwd.seen) == 1  # NO_PROXY: straight to production


def test_network_proxy_setting_overrides_the_environment(production, tmp_path):
    _, server = production
    dead = f"http://127.0.0.1:{free_port()}"
    with ForwardProxy() as fwd:
        with running_proxy(tmp_path, server.url, env={"HTTP_PROXY": dead}, network={"proxy": fwd.url()}) as proxy:
            assert _ask(proxy.url) == "prod-model says: hello"
        assert [s.method for s in fwd.seen] == ["POST"]
        with running_proxy(tmp_path / "b", server.url, env={"HTTP_PROXY": fwd.url()},
                           network={"proxy": "none"}) as proxy:
            assert _ask(proxy.url) == "prod-model says: hello"
        with running_proxy(tmp_path / "c", server.url, network={"proxy": fwd.url(), "no_proxy": "127.0.0.1"}) as proxy:
            assert _ask(proxy.url) == "prod-model says: hello"
        assert len(fwd.seen) == 1


# -- private CA, CONNECT, mutual TLS ------------------------------------------------------------


def test_private_ca_is_added_to_the_default_trust_store(pki, tmp_path):
    with _https_upstream(MockLLM(name="tls"), pki) as server:
        with running_proxy(tmp_path / "a", _https_url(server)) as proxy:
            err = _fails(proxy.url)
            assert err.status_code == 502 and err.body["code"] == "upstream_unreachable"
            assert "CERTIFICATE_VERIFY_FAILED" in err.body["message"]
        for n, sections in enumerate(({"production": {"ca_file": str(pki.ca)}}, {"network": {"ca_file": str(pki.ca)}})):
            with running_proxy(tmp_path / str(n), _https_url(server), **sections) as proxy:
                assert _ask(proxy.url) == "tls says: hello"
                system = ssl.create_default_context().cert_store_stats()["x509_ca"]
                assert proxy.app.pool._ssl.cert_store_stats()["x509_ca"] == system + 1  # added, not replaced


def test_https_production_through_a_connect_tunnel(pki, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="shadoweval.network")
    with _https_upstream(MockLLM(name="tls"), pki) as server, ForwardProxy(credentials="bob:hunter2") as fwd:
        env = {"HTTPS_PROXY": fwd.url("bob:hunter2")}
        with running_proxy(tmp_path / "a", _https_url(server), env=env, production={"ca_file": str(pki.ca)}) as proxy:
            assert _ask(proxy.url) == "tls says: hello"
            assert _ask(proxy.url) == "tls says: hello"  # the tunnelled connection is kept alive and reused
        assert [(s.method, s.target) for s in fwd.seen] == [("CONNECT", f"127.0.0.1:{server.port}")]
        assert fwd.seen[0].proxy_authorization == "Basic " + base64.b64encode(b"bob:hunter2").decode()
        logged = [vars(r) for r in caplog.records if r.name == "shadoweval.network"]
        assert logged and logged[0]["proxy"] == f"http://127.0.0.1:{fwd.port}"  # which proxy, never its password
        assert "hunter2" not in repr(logged)
        # wrong credentials: the proxy's 407 is a 502 to the app, and the password is nowhere in it
        env = {"HTTPS_PROXY": fwd.url("bob:wrong-pass")}
        with running_proxy(tmp_path / "b", _https_url(server), env=env, production={"ca_file": str(pki.ca)}) as proxy:
            err = _fails(proxy.url)
            assert err.status_code == 502 and err.body["code"] == "upstream_unreachable"
            assert "407" in err.body["message"] and "wrong-pass" not in err.body["message"]
            assert proxy.store.flush()
            (eid,) = proxy.store.exchange_ids()
            _, (out,), _ = stored(proxy.store, eid)
            assert "wrong-pass" not in (out.error or "") and "407" in (out.error or "")


def test_mutual_tls_client_certificate(pki, tmp_path):
    with _https_upstream(MockLLM(name="mtls"), pki, client_certs=True) as server:
        with running_proxy(tmp_path / "a", _https_url(server), production={"ca_file": str(pki.ca)}) as proxy:
            err = _fails(proxy.url)  # refused in the handshake, or right after it under TLS 1.3
            assert err.status_code == 502 and err.body["code"] in ("upstream_unreachable", "upstream_protocol_error")
        for n, files in enumerate(({"client_cert": str(pki.client_cert)},
                                   {"client_cert": str(pki.client_cert_only), "client_key": str(pki.client_key)})):
            production = {"ca_file": str(pki.ca), **files}
            with running_proxy(tmp_path / str(n), _https_url(server), production=production) as proxy:
                assert _ask(proxy.url) == "mtls says: hello"


def test_unsupported_proxy_fails_at_start_without_its_password(tmp_path):
    settings = load_settings(None, overrides={"store": {"capture": False}},
                             env={"HTTPS_PROXY": "socks5://u:topsecret@corp:1080"})
    with pytest.raises(ValueError, match="only http:// proxies") as err:
        create_app(settings)
    assert "socks5://corp:1080" in str(err.value) and "topsecret" not in str(err.value)


def test_unusable_tls_files_fail_at_start(pki, tmp_path):
    with pytest.raises(ValueError, match="ca_file"):
        netconf.ssl_context(str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="client_cert"):
        netconf.ssl_context(client_cert=str(pki.client_cert_only))  # no key anywhere


# -- a base_url candidate through the proxy -----------------------------------------------------


def test_base_url_candidate_is_mirrored_through_the_proxy(production, tmp_path):
    _, server = production
    cand = MockLLM(name="cand")
    with ThreadedServer(cand) as cand_server, ForwardProxy() as fwd:
        env = {"http_proxy": fwd.url(), "no_proxy": f"127.0.0.1:{server.port}"}  # production direct, by port
        candidates = [{"name": "c", "model": "cand-model", "base_url": cand_server.url + "/v1"}]
        with running_proxy(tmp_path, server.url, env=env, candidates=candidates) as proxy:
            client = openai.OpenAI(base_url=proxy.url, api_key="k", max_retries=0)
            raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
            outs = _outputs(proxy, raw.headers["x-shadoweval-exchange-id"], 2)
            assert outs["c"].status == "ok" and outs["c"].text == "cand says: hello"
        assert [(s.method, s.target) for s in fwd.seen] == [("POST", f"{cand_server.url}/v1/chat/completions")]
        assert cand.requests[-1].json["model"] == "cand-model"
