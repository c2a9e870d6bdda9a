"""What makes two requests the same question, as one short key: eval set items, the replay server
and `evalset diff` all match requests by it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# What makes two requests "the same question": the conversation and what the model was given to
# work with, not which model was asked, how (stream, temperature) or by whom.
_KEY_FIELDS = ("messages", "input", "instructions", "tools", "functions", "response_format", "prompt")


def request_key(request: dict[str, Any] | None) -> str:
    """A stable 16-hex-digit key of a request's content (see `_KEY_FIELDS`). The replay server looks
    recorded answers up by it, and `evalset diff` matches items across versions with it."""
    content = {k: request[k] for k in _KEY_FIELDS if isinstance(request, dict) and request.get(k) is not None}
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
