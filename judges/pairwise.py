"""Pairwise preference: production's answer against a candidate's, judged blind and in both orders.

Judge models favour whichever answer comes first (or second) far more than one would like, so
every pair is judged twice, concurrently, with the answers swapped; only a preference that holds
in both orders counts, and a flip is a tie that is counted as one. The prompt says "Answer A" and
"Answer B", never which model wrote which. Both lengths are kept so reports can control for the
judge's taste for longer answers.
"""

from __future__ import annotations

import asyncio
from string import Template
from typing import Any

from shadoweval.core.types import Verdict

from .base import Subject, production_to_compare, register, verdict
from .llm import JudgeModel, format_passages, model_from, passages, question

PAIRWISE_SYSTEM = ("You compare two answers to the same request, impartially. "
                   "Reply with one JSON object and nothing else.")
PAIRWISE_PROMPT = Template("""$context
The user's request:
<request>
$question
</request>

Answer A:
<answer_a>
$a
</answer_a>

Answer B:
<answer_b>
$b
</answer_b>

Which answer serves the user better? Weigh correctness, faithfulness to the passages when there are any, \
completeness and clarity. Do not favour an answer for being longer or for coming first. Say "tie" when \
neither is clearly better.

Return JSON: {"reason": "<one or two sentences>", "winner": "A" | "B" | "tie"}""")
_SCORE = {"candidate": 1.0, "production": 0.0, "tie": 0.5}


def _parse(data: dict[str, Any]) -> tuple[str, str]:
    winner = str(data.get("winner", "")).strip().upper().removeprefix("ANSWER ").strip()
    if winner not in ("A", "B", "TIE"):
        raise ValueError('"winner" must be "A", "B" or "tie"')
    return winner.lower() if winner == "TIE" else winner, str(data.get("reason") or "")


@register("pairwise")
class Pairwise:
    """Blind preference between production and candidate, judged in both orders; score = candidate's win share."""

    name = "pairwise"
    version = "1"
    needs_production = True  # the cascade skips production's own outputs instead of asking

    def __init__(self, *, judge_model: JudgeModel | None = None, **model_args: Any) -> None:
        self.llm = model_from(judge_model, model_args)
        self.args: dict[str, Any] = dict(self.llm.args)

    async def judge(self, s: Subject) -> Verdict:
        prod = production_to_compare(s)
        if isinstance(prod, str):
            return verdict(self, s, error=prod)
        cand_text, prod_text = s.output.text or "", prod.text or ""
        found = passages(s.exchange)
        context = f"Passages the answers were given:\n{format_passages(found)}\n" if found else ""

        def prompt(a: str, b: str) -> str:
            return PAIRWISE_PROMPT.substitute(context=context, question=question(s.exchange), a=a, b=b)

        first, second = await asyncio.gather(self.llm.ask(PAIRWISE_SYSTEM, prompt(prod_text, cand_text), _parse),
                                             self.llm.ask(PAIRWISE_SYSTEM, prompt(cand_text, prod_text), _parse))
        cost = first.cost_usd + second.cost_usd
        lengths = {"candidate_chars": len(cand_text), "production_chars": len(prod_text),
                   "length_diff": len(cand_text) - len(prod_text)}
        if first.value is None or second.value is None:
            return verdict(self, s, error=first.error or second.error, cost_usd=cost, evidence=lengths)
        orders = []
        for (a, b), (winner, why) in ((("production", "candidate"), first.value),
                                      (("candidate", "production"), second.value)):
            preferred = {"A": a, "B": b}.get(winner, "tie")
            orders.append({"a": a, "b": b, "winner": winner, "preferred": preferred, "reason": why})
        flipped = orders[0]["preferred"] != orders[1]["preferred"]
        label = "tie" if flipped else orders[0]["preferred"]
        explanation = (f"the orders disagree ({orders[0]['preferred']} first, {orders[1]['preferred']} swapped): tie"
                       if flipped else f"{label} preferred in both orders" if label != "tie" else "tie in both orders")
        return verdict(self, s, score=_SCORE[label], label=label, explanation=explanation, cost_usd=cost,
                       evidence={"flipped": flipped, "orders": orders, **lengths})
