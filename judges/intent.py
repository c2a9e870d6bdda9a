"""Business-intent alignment: does the answer do what this app or route is for, by the team's own criteria?

The team writes, per app or route, what the assistant is for and the rules it must keep ("answers
billing questions for Acme customers; never promises refunds; sends legal questions to a human").
A judge model first checks that the answer addresses the request at all, then rules on each
criterion with a reason. The intents are judge arguments, so every verdict records the exact
wording it was judged against.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from string import Template
from typing import Any

from shadoweval.core.types import Exchange, Verdict

from .base import Subject, register, verdict
from .llm import JudgeModel, model_from, question

INTENT_SYSTEM = ("You check whether an AI assistant's answer does what its owners built it for. "
                 "Reply with one JSON object and nothing else.")
INTENT_PROMPT = Template("""What the assistant is for: $intent

The user's request:
<request>
$question
</request>

The assistant's answer:
<answer>
$answer
</answer>

First decide whether the answer addresses the request at all (declining or handing over to a human, when \
the assistant's purpose calls for it, counts as addressing it). Then rule on each criterion:
$criteria
"pass" if the answer meets it, "fail" if it does not, "n/a" if it does not apply to this request.

Return JSON: {"addresses_request": true | false, "reason": "<one sentence>", "criteria": [{"id": <criterion \
number>, "verdict": "pass" | "fail" | "n/a", "reason": "<one sentence>"}]} with one entry per criterion.""")
_RULINGS = ("pass", "fail", "n/a")
_KEYS = {"name", "intent", "criteria", "routes", "tags"}


def _intent(i: int, raw: Any) -> dict[str, Any]:
    """One configured intent with every field filled in, so the recorded arguments say it all."""
    if not isinstance(raw, dict) or not str(raw.get("intent") or "").strip():
        raise ValueError(f"intent {i}: needs an `intent` text")
    unknown = set(raw) - _KEYS
    if unknown:
        raise ValueError(f"intent {i}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_KEYS))}")
    criteria, routes, tags = raw.get("criteria") or [], raw.get("routes") or [], raw.get("tags") or {}
    if isinstance(criteria, str) or isinstance(routes, str) or not isinstance(tags, dict):
        raise ValueError(f"intent {i}: `criteria` and `routes` are lists, `tags` a table")
    return {"name": str(raw.get("name") or f"intent-{i}"), "intent": str(raw["intent"]).strip(),
            "criteria": [str(c) for c in criteria], "routes": [str(r) for r in routes],
            "tags": {str(k): str(v) for k, v in tags.items()}}


def intent_for(intents: list[dict[str, Any]], exchange: Exchange) -> dict[str, Any] | None:
    """The first intent whose routes and tags match: a route pattern (glob) matches the exchange's
    `route` tag or its API path; every tag must be equal. Empty routes or tags match everything."""
    for it in intents:
        places = [exchange.route, *([exchange.tags["route"]] if "route" in exchange.tags else [])]
        if it["routes"] and not any(fnmatchcase(p, r) for p in places for r in it["routes"]):
            continue
        if all(exchange.tags.get(k) == v for k, v in it["tags"].items()):
            return it
    return None


def _parse(n: int) -> Any:
    def parse(data: dict[str, Any]) -> tuple[bool, str, list[tuple[str, str]]]:
        on_topic = data.get("addresses_request")
        if not isinstance(on_topic, bool):
            raise ValueError('"addresses_request" must be true or false')
        items = data.get("criteria") if n else []
        if not isinstance(items, list):
            raise ValueError('expected a "criteria" list')
        by_id = {int(x["id"]): x for x in items if isinstance(x, dict) and str(x.get("id", "")).isdigit()}
        rulings = []
        for i in range(1, n + 1):
            if i not in by_id:
                raise ValueError(f"no entry for criterion {i}")
            ruling = str(by_id[i].get("verdict", "")).strip().lower()
            if ruling not in _RULINGS:
                raise ValueError(f'criterion {i}: "verdict" must be "pass", "fail" or "n/a"')
            rulings.append((ruling, str(by_id[i].get("reason") or "")))
        return on_topic, str(data.get("reason") or ""), rulings

    return parse


@register("intent")
class IntentJudge:
    """Business-intent rubric: on topic at all, then the share of the route's criteria the answer meets."""

    name = "intent"
    version = "1"

    def __init__(self, *, intents: list[dict[str, Any]] | None = None, judge_model: JudgeModel | None = None,
                 **model_args: Any) -> None:
        self.llm = model_from(judge_model, model_args)
        self.intents = [_intent(i, raw) for i, raw in enumerate(intents or [], 1)]
        self.args: dict[str, Any] = {**self.llm.args, "intents": self.intents}

    async def judge(self, s: Subject) -> Verdict:
        it = intent_for(self.intents, s.exchange)
        if it is None:
            return verdict(self, s, error="no intent configured for this route")
        asked = question(s.exchange)
        if not asked.strip():
            return verdict(self, s, error="no user message in the request")
        criteria = "\n".join(f"{i}. {c}" for i, c in enumerate(it["criteria"], 1)) or "(none)"
        prompt = INTENT_PROMPT.substitute(intent=it["intent"], question=asked, answer=s.output.text or "",
                                          criteria=criteria)
        reply = await self.llm.ask(INTENT_SYSTEM, prompt, _parse(len(it["criteria"])))
        if reply.value is None:
            return verdict(self, s, error=reply.error, cost_usd=reply.cost_usd)
        on_topic, why, rulings = reply.value
        results = [{"criterion": c, "verdict": r, "reason": w} for c, (r, w) in zip(it["criteria"], rulings, strict=True)]
        evidence = {"intent": it["name"], "addresses_request": on_topic, "reason": why, "criteria": results,
                    "judge_calls": reply.calls}
        if not on_topic:
            return verdict(self, s, score=0.0, label="off_topic", explanation=f"does not address the request: {why}",
                           evidence=evidence, cost_usd=reply.cost_usd)
        applicable = [r for r, _ in rulings if r != "n/a"]
        score = sum(r == "pass" for r in applicable) / len(applicable) if applicable else 1.0
        failed = [c for c, (r, _) in zip(it["criteria"], rulings, strict=True) if r == "fail"]
        explanation = (f"{len(applicable) - len(failed)} of {len(applicable)} criteria met"
                       + (f"; failed: {'; '.join(failed)}" if failed else ""))
        return verdict(self, s, score=score, label="misaligned" if failed else "aligned", explanation=explanation,
                       evidence=evidence, cost_usd=reply.cost_usd)
