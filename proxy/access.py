"""Who may see what on the proxy's own HTTP surface (everything beside `/v1`).

Stored exchanges hold users' prompts and answers, so the endpoints that show them or take feedback
on them answer the key that sent the exchange (and admin keys), and with no keys configured only
clients on this host. `/metrics` and the details of `/healthz` answer ops (or admin) keys, and with
none configured only clients on this host. Liveness, readiness and the bare health status stay
open: load balancers and orchestrators probe them without keys. docs/access.md is the user's guide.

Keys are compared by SHA-256 digest, so a lookup costs the same whatever the key, and an
exchange's owner is stored as `types.key_id()`, never the key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shadoweval.core.types import key_id

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True, slots=True)
class Denied:
    """Why a request may not have what it asked for, as the endpoint will say it."""

    status: int
    message: str
    code: str


_NO_KEY = Denied(401, "Missing or invalid proxy key: send one of the configured proxy keys (or an admin key) "
                 "as x-shadoweval-key or as a bearer token.", "invalid_api_key")
_NO_OPS_KEY = Denied(401, "Missing or invalid ops key: send one of the keys in [server] ops_keys_env or "
                     "admin_keys_env as x-shadoweval-key or as a bearer token.", "invalid_api_key")
_EXCHANGES_LOCAL = Denied(403, "No proxy keys are configured ([server] proxy_keys_env), so stored exchanges and "
                          "feedback are served to clients on the proxy's own host (loopback) only. Configure "
                          "proxy keys to use these endpoints from other hosts.", "loopback_only")
_OPS_LOCAL = Denied(403, "No ops keys are configured ([server] ops_keys_env or admin_keys_env), so metrics and "
                    "health details are served to clients on the proxy's own host (loopback) only.",
                    "loopback_only")


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class Access:
    """The decisions; the endpoints turn a `Denied` into an OpenAI error."""

    def __init__(self, *, proxy_keys: Iterable[str], admin_keys: Iterable[str], ops_keys: Iterable[str]) -> None:
        self._proxy = frozenset(_digest(k.encode()) for k in proxy_keys)
        self._admin = frozenset(_digest(k.encode()) for k in admin_keys)
        self._ops = frozenset(_digest(k.encode()) for k in ops_keys) | self._admin

    @property
    def keys_configured(self) -> bool:
        return bool(self._proxy or self._admin)

    def exchanges(self, key: bytes | None, client_host: str | None) -> tuple[str | None, Denied | None]:
        """(owner filter, denial) for reading an exchange or posting feedback on one: the filter is
        the key's id for a proxy key, None (every exchange) for an admin key or, without keys, for
        a loopback client."""
        if not self.keys_configured:
            return None, None if is_loopback(client_host) else _EXCHANGES_LOCAL
        digest = _digest(key) if key else None
        if digest in self._admin:
            return None, None
        if digest in self._proxy:
            return key_id(key or b""), None
        return None, _NO_KEY

    def ops(self, key: bytes | None, client_host: str | None) -> Denied | None:
        """Whether the caller may see metrics and health details."""
        if self._ops:
            return None if key and _digest(key) in self._ops else _NO_OPS_KEY
        return None if is_loopback(client_host) else _OPS_LOCAL


def presented_key(headers: Mapping[str, str]) -> bytes | None:
    """The key a request presents: `x-shadoweval-key`, else its bearer token (what Prometheus'
    `authorization` setting sends). Bytes as sent, so they hash like the proxy's keys."""
    key = headers.get("x-shadoweval-key")
    if key is None:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    return key.encode("latin-1") if key else None


def is_loopback(host: str | None) -> bool:
    """Whether a client address is this host's own. Unknown (None) is not: fail closed."""
    if not host:
        return False
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or bool(mapped and mapped.is_loopback)


def listens_beyond_loopback(host: str) -> bool:
    """Whether `[server] host` lets other machines connect (0.0.0.0, a LAN address, a name)."""
    return host not in LOOPBACK_NAMES and not is_loopback(host)


_QUOTED_PATH = re.compile(r"""(['"])[^'"\n]*[/\\][^'"\n]*\1""")
_BARE_PATH = re.compile(r"""(?<![\w.])(?:~|\.{1,2})?(?:[/\\][^\s'",;:()]+)+[/\\]?|\b[A-Za-z]:\\[^\s'",;]*""")


def scrub_paths(text: str, known: Iterable[str] = ()) -> str:
    """`text` with filesystem paths replaced by `<path>`: the store's own path (and its folders, in
    case it holds spaces) first, then anything quoted with a slash in it (how OSError shows a
    path) and anything starting like an absolute or home-relative path. "disk I/O error" stays."""
    for path in sorted(known, key=len, reverse=True):
        if len(path) > 1:
            text = text.replace(path, "<path>")
    text = _QUOTED_PATH.sub("<path>", text)
    return _BARE_PATH.sub("<path>", text)
