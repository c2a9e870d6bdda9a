"""Which request paths the proxy forwards to production, and the exact target it sends.

The proxy holds production's key, so the path an app sends must not be able to reach anything on
production's host outside the configured base path (`/tenantA/v1/../../admin` would). The decision
is made on the bytes the client sent (ASGI `raw_path`), never on the percent-decoded `path`, and
the upstream request line is built from those same bytes: what production receives is what the
client wrote, with `/v1` replaced by the base path, or nothing at all (400 `invalid_path`).

Rules for the part after `/v1/` (RFC 3986 `pchar`s and `/`):
- only unreserved, sub-delim, `:` and `@` characters and well-formed `%HH` escapes; raw spaces,
  control characters, non-ASCII bytes, `\\` and the other characters RFC 3986 excludes are refused;
- no segment made only of dots (`.`, `..`, `%2e%2e`, `.%2E`, `..;x`), so nothing climbs out;
- no escape that decodes to a control character (`%00`-`%1f`, `%7f`), a slash (`%2f`), a backslash
  (`%5c`) or a percent sign (`%25`: a second decoding could turn it into any of the others);
- the query string is passed on as sent, if it holds only visible ASCII (no `#`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from shadoweval.core.errors import ShadowevalError

PREFIX = b"/v1/"

# pchar = unreserved / pct-encoded / sub-delims / ":" / "@"  (RFC 3986 3.3), plus "/" between segments;
# one character class (fast), then the escapes on their own
_PATH_OK = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_MALFORMED_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
# the usual case, settled by one match: no escape to decode, no dot that could make a dot segment
_PLAIN = re.compile(rb"/v1/[A-Za-z0-9\-_~!$&'()*+,;=:@/]*")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
# escapes whose decoded byte must not reach a server that decodes (or decodes twice)
_BAD_ESCAPE = re.compile(rb"%(?:[01][0-9A-Fa-f]|7[Ff]|2[Ff5]|5[Cc])")
_QUERY_OK = re.compile(rb"[\x21\x22\x24-\x7e]*")  # visible ASCII without '#'


class InvalidPath(ShadowevalError, ValueError):
    """The request path (or query) cannot be forwarded; the message says why, for the client."""


def check_path(raw_path: bytes) -> None:
    """Raise InvalidPath unless `raw_path` (as sent) is a safe path under `/v1/`."""
    if _PLAIN.fullmatch(raw_path) is not None:
        return
    if not raw_path.startswith(PREFIX):
        raise InvalidPath("The request path must start with /v1/.")
    if _PATH_OK.fullmatch(raw_path) is None:
        raise InvalidPath("The request path holds characters that must be percent-encoded (spaces, control "
                          "characters, non-ASCII bytes, \\ and the others RFC 3986 excludes).")
    if 0x25 in raw_path:  # '%' (an int test: much cheaper than a bytes one)
        if _MALFORMED_ESCAPE.search(raw_path):
            raise InvalidPath("The request path holds a malformed %-escape.")
        if _BAD_ESCAPE.search(raw_path):
            raise InvalidPath("The request path holds an encoded control character, slash, backslash or "
                              "percent sign (%00-%1F, %7F, %2F, %5C, %25), which the proxy does not forward.")
        decoded = _ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), raw_path)
    else:
        decoded = raw_path
    if 0x2E in decoded:  # '.'
        for segment in decoded.split(b"/"):
            name = segment.split(b";", 1)[0]
            if name and not name.strip(b"."):
                raise InvalidPath("The request path holds a dot segment ('.' or '..', encoded or not), which "
                                  "could leave the production base path.")


def check_query(query: bytes) -> None:
    """Raise InvalidPath unless the query string is visible ASCII without '#'."""
    if _QUERY_OK.fullmatch(query) is None:
        raise InvalidPath("The query string holds characters that must be percent-encoded "
                          "(control characters, spaces, non-ASCII bytes or '#').")


def upstream_target(base_path: str, raw_path: bytes, query: bytes = b"") -> str:
    """The request target for production: `base_path` + what follows `/v1` in `raw_path`, + `?query`.

    Raises InvalidPath when the path or query is refused. The client's bytes are kept as they are
    (never decoded and re-encoded), so the result is exactly one well-formed ASCII request target."""
    check_path(raw_path)
    target = base_path + raw_path[3:].decode("ascii")
    if not base_path and target.startswith("//"):
        # an empty base path: `//host/x` could be read as a network-path reference
        raise InvalidPath("The request path must not start with an empty segment.")
    if query:
        check_query(query)
        target += "?" + query.decode("ascii")
    return target


class UpstreamPaths:
    """`upstream_target` for one base path, with the common routes answered from a dict."""

    def __init__(self, base_path: str, routes: Iterable[str] = ()) -> None:
        self.base_path = base_path
        self._known = {r.encode("ascii"): upstream_target(base_path, r.encode("ascii")) for r in routes}

    def target(self, raw_path: bytes, query: bytes) -> str:
        if not query:
            known = self._known.get(raw_path)
            if known is not None:
                return known
        return upstream_target(self.base_path, raw_path, query)
