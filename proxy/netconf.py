"""How each upstream is reached from a corporate network: which HTTP proxy, if any, and which TLS setup.

Production and `base_url` candidates go through the project's own HTTP client (http1.Pool), which
honours nothing by itself; this module turns the settings into what a Pool takes. The proxy comes
from `[network] proxy` when set, else from the standard environment variables (`https_proxy`,
`http_proxy`, `all_proxy`, `no_proxy`, lower case winning over upper case, as in urllib and curl),
which settings.py reads once at load time like every other environment value. `no_proxy` follows
the usual rules: `*`, host names matching themselves and their subdomains (`example.com`,
`.example.com`, `*.example.com`), optional `:port`, IP addresses and CIDR ranges.

A private CA is added to the default trust store, never put in its place, so public endpoints keep
working next to internal ones.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shadoweval.core.settings import Settings

DIRECT = ("none", "direct")
log = logging.getLogger("shadoweval.network")


@dataclass(frozen=True, slots=True)
class Route:
    """How one upstream is reached: keyword arguments for http1.Pool."""

    proxy: str | None
    ssl_context: ssl.SSLContext | None

    def pool_kwargs(self) -> dict[str, Any]:
        return {"proxy": self.proxy, "ssl_context": self.ssl_context}


def env_value(env: Mapping[str, str], name: str) -> str:
    """`name` from the environment, the lower-case form winning (urllib's and curl's rule)."""
    value = env.get(name.lower())
    if value is None:
        value = env.get(name.upper())
    return (value or "").strip()


def proxy_for(url: str, *, proxy: str = "", no_proxy: str = "", env: Mapping[str, str] | None = None) -> str | None:
    """The proxy URL `url` is reached through, or None for a direct connection.

    `proxy` is `[network] proxy`: "" = from the environment, "none"/"direct" = never, else the URL.
    `no_proxy` is `[network] no_proxy`: "" = from the environment."""
    env = env or {}
    if proxy.strip().lower() in DIRECT:
        return None
    target = urlsplit(url)
    chosen = proxy.strip()
    if not chosen:
        chosen = env_value(env, f"{target.scheme}_proxy")
        if not chosen:
            all_proxy = env_value(env, "all_proxy")
            # socks:// and the like are for other tools; only an HTTP proxy is usable here
            if all_proxy and ("://" not in all_proxy or all_proxy.lower().startswith("http://")):
                chosen = all_proxy
    if not chosen:
        return None
    port = target.port or (443 if target.scheme == "https" else 80)
    if bypassed(target.hostname or "", port, no_proxy.strip() or env_value(env, "no_proxy")):
        return None
    return chosen


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """True when `host:port` matches an entry of a NO_PROXY list."""
    host = host.lower().strip("[]").rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.replace(" ", ",").split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        name, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.removeprefix("*").lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [::1]:8080 or [::1]
        name, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
        return name, int(port) if port.isdigit() else None
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        if port.isdigit():
            return name, int(port)
    return entry, None  # a bare IPv6 address or CIDR has several colons and no port


def ssl_context(ca_file: str = "", client_cert: str = "", client_key: str = "") -> ssl.SSLContext:
    """The default context (the system's CAs, SSL_CERT_FILE/SSL_CERT_DIR when set), plus `ca_file`'s
    CAs and the client certificate for mutual TLS. A file that cannot be used fails here, at start."""
    context = ssl.create_default_context()
    if ca_file:
        path = Path(ca_file).expanduser()
        try:
            if path.is_dir():
                context.load_verify_locations(capath=str(path))
            else:
                context.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ca_file {ca_file!r} cannot be used: {exc}") from None
    if client_key and not client_cert:
        raise ValueError("client_key is set without client_cert")
    if client_cert:
        try:
            # The empty passphrase keeps OpenSSL from prompting on the terminal for an encrypted key.
            context.load_cert_chain(str(Path(client_cert).expanduser()),
                                    str(Path(client_key).expanduser()) if client_key else None, password=b"")
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"client_cert {client_cert!r} / client_key {client_key!r} cannot be used (a key "
                             f"must be unencrypted PEM): {exc}") from None
    return context


def route(settings: Settings, base_url: str, *, ca_file: str = "", client_cert: str = "",
          client_key: str = "") -> Route:
    """How to reach `base_url` (production's, a candidate's): its proxy and its TLS context.
    `ca_file` falls back to `[network] ca_file`; an http:// URL gets no TLS context."""
    net = settings.network
    proxy = proxy_for(base_url, proxy=net.proxy, no_proxy=net.no_proxy, env=settings.secrets)
    context = None
    if urlsplit(base_url).scheme == "https":
        ca = ca_file or net.ca_file
        if ca or client_cert or client_key:
            context = ssl_context(ca, client_cert, client_key)
    if proxy and urlsplit(proxy if "://" in proxy else "http://" + proxy).scheme != "http":
        source = "[network] proxy" if net.proxy else "the environment (HTTP(S)_PROXY, ALL_PROXY)"
        raise ValueError(f"the proxy for {describe(base_url)} from {source} is {describe(proxy)}: only http:// "
                         "proxies are supported")
    if proxy:
        log.info("upstream reached through a proxy", extra={"upstream": describe(base_url), "proxy": describe(proxy)})
    return Route(proxy, context)


def describe(proxy: str | None) -> str:
    """A URL fit for a log line: scheme, host and port, never the credentials."""
    if not proxy:
        return "direct"
    p = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    return f"{p.scheme}://{p.netloc.rpartition('@')[2]}"


def production_route(settings: Settings) -> Route:
    """How production is reached (the proxy's forwarding and the production twin alike)."""
    p = settings.production
    return route(settings, p.base_url, ca_file=p.ca_file, client_cert=p.client_cert, client_key=p.client_key)
