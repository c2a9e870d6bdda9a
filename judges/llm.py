"""Asking a judge model: one JSON reply, validated, within a budget, a time limit and a concurrency cap.

Every LLM judge goes through `JudgeModel.ask`, which never raises: it returns the parsed reply or
the reason there is none (budget spent, timeout, HTTP error, a reply that stayed malformed after
`max_retries` corrections), always with the cost of every call it made. The model is called through
the proxy's `LiteLLMCaller`, so litellm stays imported in one module and only on the first call.

What a judge records (`JudgeModel.args`) is what shapes its verdicts: the model, its endpoint, the
name of the variable holding its key (never the key) and the temperature. Run limits (timeout,
retries, budget, concurrency) are left out on purpose: raising a budget must not make every output
look unjudged under a new judge key.
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from shadoweval.core.context import contexts_of
from shadoweval.core.messages import last_user_text
from shadoweval.core.settings import CandidateSettings
from shadoweval.core.types import Exchange
from shadoweval.proxy.candidates import CallResult, CandidateError, LiteLLMCaller

T = TypeVar("T")

_RETRY = ("Your reply could not be used: {problem}. Reply again with only the JSON object described above, "
          "nothing before or after it.")


def _usd(x: float) -> str:
    return f"${x:.6f}".rstrip("0").rstrip(".") if x < 1 else f"${x:.2f}"


class Budget:
    """Spend in USD shared by any number of judge models; safe across threads and event loops.

    Checked before each call, so with `concurrency` calls in flight the last ones may overshoot by
    at most that many calls. A call whose price is unknown stops the budget too: it cannot be kept."""

    def __init__(self, max_usd: float) -> None:
        self.max_usd = max_usd
        self.spent = 0.0
        self.calls = 0
        self._unpriced: str | None = None
        self._lock = threading.Lock()

    def add(self, usd: float | None, model: str) -> None:
        with self._lock:
            self.calls += 1
            if usd is None:
                self._unpriced = model
            else:
                self.spent += usd

    def refusal(self) -> str | None:
        """Why no further call may be made, or None."""
        with self._lock:
            if self._unpriced:
                return f"budget cannot be kept: no price known for {self._unpriced}"
            if self.spent >= self.max_usd:
                return f"budget exhausted: spent {_usd(self.spent)} of {_usd(self.max_usd)}"
        return None


@dataclass(frozen=True, slots=True)
class Reply(Generic[T]):
    """What came of asking: `value` when the reply was usable, else `error`; cost of all calls either way."""

    value: T | None
    cost_usd: float
    calls: int
    error: str | None = None


class JudgeModel:
    """A judge model reached through litellm, asked for JSON at temperature 0 by default."""

    def __init__(
        self, *, model: str = "", api_base: str = "", api_key: str | None = None, api_key_env: str = "",
        temperature: float = 0.0, timeout_s: float = 60.0, max_retries: int = 2, json_mode: bool = True,
        concurrency: int = 4, max_usd: float | None = None, budget: Budget | None = None,
    ) -> None:
        self.model = model
        self.args: dict[str, Any] = {"model": model, "temperature": temperature}
        if api_base:
            self.args["api_base"] = api_base
        if api_key_env:
            self.args["api_key_env"] = api_key_env
        self._api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.json_mode = json_mode
        self.concurrency = max(1, concurrency)
        self.budget = budget if budget is not None else (Budget(max_usd) if max_usd is not None else None)
        # validated now (a bad timeout fails when the judge is built), litellm imported on the first call
        self._caller = LiteLLMCaller(CandidateSettings(
            name="judge", model=model, api_base=api_base, timeout_s=timeout_s, params={"temperature": temperature},
        ), api_key=api_key) if model else None
        # one semaphore per event loop: asyncio primitives belong to the loop that first waits on them
        self._sems: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())

    def __repr__(self) -> str:
        return f"JudgeModel({self.args})"

    async def _call(self, caller: LiteLLMCaller, messages: list[dict[str, str]]) -> CallResult:
        request: dict[str, Any] = {"messages": messages}
        if self.json_mode:  # litellm drops it for providers without a JSON mode (drop_params)
            request["response_format"] = {"type": "json_object"}
        return await caller(request, route="/v1/chat/completions", stream=False)

    def _semaphore(self) -> asyncio.Semaphore:
        return self._sems.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(self.concurrency))

    def _clean(self, text: str) -> str:
        text = " ".join(text.split())[:300]
        return text.replace(self._api_key, "***") if self._api_key else text

    async def ask(self, system: str, prompt: str, parse: Callable[[dict[str, Any]], T]) -> Reply[T]:
        """Ask once, and again with the problem pointed out while the reply is unusable.

        `parse` turns the reply's JSON object into the judge's value or raises ValueError saying what
        is wrong with it."""
        caller = self._caller
        if caller is None:
            return Reply(None, 0.0, 0, "no judge model configured: set the judge's `model` argument")
        messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        cost, calls, problem = 0.0, 0, ""
        for _ in range(self.max_retries + 1):
            async with self._semaphore():
                refusal = self.budget.refusal() if self.budget else None
                if refusal:
                    return Reply(None, cost, calls, refusal)
                calls += 1
                try:
                    result = await asyncio.wait_for(self._call(caller, messages), self.timeout_s)
                except TimeoutError:
                    return Reply(None, cost, calls, f"judge model timed out after {self.timeout_s:g}s")
                except CandidateError as exc:
                    if "Timeout" in type(exc.__cause__).__name__:
                        return Reply(None, cost, calls, f"judge model timed out after {self.timeout_s:g}s")
                    status = f" (HTTP {exc.http_status})" if exc.http_status else ""
                    return Reply(None, cost, calls, f"judge model failed{status}: {self._clean(str(exc))}")
                if self.budget:  # before the next waiting call checks it
                    self.budget.add(result.cost_usd, self.model)
            cost += result.cost_usd or 0.0
            text = result.parsed.text or ""
            try:
                return Reply(parse(extract_json(text)), cost, calls)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:  # the reply's shape, not a bug here
                problem = str(exc) if isinstance(exc, ValueError) else f"unexpected shape ({type(exc).__name__}: {exc})"
            messages += [{"role": "assistant", "content": text},
                         {"role": "user", "content": _RETRY.format(problem=problem)}]
        return Reply(None, cost, calls, f"malformed judge reply after {calls} attempts: {problem}")


def extract_json(text: str) -> dict[str, Any]:
    """The JSON object in a model's reply: the whole reply, or the first balanced {...} in it
    (code fences and prose around it are ignored)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
            if isinstance(value, dict):
                return value
        except ValueError:
            pass
    start = text.find("{")
    while start != -1:
        end = _balanced_end(text, start)
        if end is None:
            break
        try:
            value = json.loads(text[start:end])
            if isinstance(value, dict):
                return value
        except ValueError:
            pass
        start = text.find("{", start + 1)
    raise ValueError("no JSON object in the reply")


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the brace closing the one at `start`, skipping braces inside JSON strings."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def model_from(judge_model: JudgeModel | None, model_args: dict[str, Any]) -> JudgeModel:
    """The judge model a judge factory was given, or one built from its keyword arguments."""
    if judge_model is not None:
        if model_args:
            raise TypeError(f"pass either judge_model or model arguments, not both: {sorted(model_args)}")
        return judge_model
    return JudgeModel(**model_args)


# What every LLM judge reads from an exchange.


def passages(exchange: Exchange) -> list[dict[str, Any]]:
    """The retrieved passages the model was given, as [{"id", "title", "text", ...}]."""
    return list(contexts_of(exchange))


def question(exchange: Exchange) -> str:
    """The last user message of the request: chat `messages` or Responses API `input`."""
    return last_user_text(exchange.request or {})


def format_passages(found: list[dict[str, Any]], numbers: list[int] | None = None) -> str:
    """Passages numbered from 1 as the judge prompts cite them; `numbers` picks some (1-based)."""
    chosen = numbers or list(range(1, len(found) + 1))
    lines = []
    for n in chosen:
        p = found[n - 1]
        head = " ".join(str(p[k]) for k in ("title",) if p.get(k))
        lines.append(f"[{n}] {head}\n{p.get('text') or ''}".rstrip())
    return "\n\n".join(lines) or "(none)"
