"""Cost estimates from litellm's bundled price table, without importing litellm.

Importing litellm takes seconds and a lot of memory, and the request path must not pay for it;
the price table is a JSON file inside the litellm package, so it is read directly (once, lazily,
in whichever background thread first needs a price).
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

from shadoweval.core.types import Usage

_TABLE = "model_prices_and_context_window_backup.json"


@functools.lru_cache(maxsize=1)
def price_table() -> dict[str, dict[str, Any]]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / _TABLE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def _entry(model: str) -> dict[str, Any] | None:
    table = price_table()
    candidates = [model]
    if "/" in model:  # "openai/gpt-4o-mini" -> "gpt-4o-mini"
        candidates.append(model.split("/", 1)[1])
    for name in candidates:
        entry = table.get(name)
        if entry and "input_cost_per_token" in entry:
            return entry
    return None


def cost_usd(model: str | None, usage: Usage) -> float | None:
    """Estimated USD for one answer, or None when the model or the token counts are unknown."""
    if not model or usage.prompt_tokens is None and usage.completion_tokens is None:
        return None
    entry = _entry(model)
    if entry is None:
        return None
    return (usage.prompt_tokens or 0) * float(entry.get("input_cost_per_token") or 0) + (
        usage.completion_tokens or 0
    ) * float(entry.get("output_cost_per_token") or 0)
