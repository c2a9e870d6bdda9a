"""Groundedness and citations checked by a judge model, sentence by sentence.

`grounded-llm` asks, in one call, whether each sentence of the answer is supported by the
retrieved passages; `citations-llm` asks whether each sentence is supported by the passages it
cites (ALCE-style citation recall and precision), after flagging, without a model, citations to
passages that do not exist. Both need the passages the model was given (`llm.passages`), and
read the answer as the offline judges do (`text.sentences`, `text.find_citations`).
"""

from __future__ import annotations

from string import Template
from typing import Any

from shadoweval.core.types import Verdict

from .base import Subject, register, verdict
from .llm import JudgeModel, format_passages, model_from, passages
from .text import Citations, find_citations, passage_ref, sentences

# --- grounded-llm --------------------------------------------------------------------------------

GROUNDED_SYSTEM = ("You check whether an AI assistant's answer is supported by the passages it was given. "
                   "Reply with one JSON object and nothing else.")
GROUNDED_PROMPT = Template("""Passages:
$passages

Sentences of the answer:
$sentences

For every numbered sentence decide:
- "supported": everything it states is stated in, or directly follows from, the passages;
- "unsupported": it states something the passages do not say, or contradict;
- "not_a_claim": it states no fact (a greeting, a question, an offer of help).
Judge only against the passages, not your own knowledge. Ignore citation markers such as [1].

Return JSON: {"sentences": [{"id": <sentence number>, "verdict": "supported" | "unsupported" | "not_a_claim", \
"reason": "<one short sentence>"}]} with one entry per sentence.""")
_GROUNDED_VERDICTS = ("supported", "unsupported", "not_a_claim")


def _numbered(lines: list[str], suffixes: list[str] | None = None) -> str:
    """One numbered line per sentence (a sentence may span lines: a heading and the text under it)."""
    return "\n".join(f"{i}. {' '.join(s.split())}{suffixes[i - 1] if suffixes else ''}" for i, s in enumerate(lines, 1))


def _entries(data: dict[str, Any], n: int) -> dict[int, dict[str, Any]]:
    """The reply's `sentences` entries by id; ValueError unless there is exactly one per sentence."""
    items = data.get("sentences")
    if not isinstance(items, list):
        raise ValueError('expected a "sentences" list')
    by_id: dict[int, dict[str, Any]] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), int | str) or not str(item["id"]).isdigit():
            raise ValueError('each entry needs a numeric "id"')
        by_id[int(item["id"])] = item
    missing = [i for i in range(1, n + 1) if i not in by_id]
    if missing:
        raise ValueError(f"no entry for sentence(s) {', '.join(map(str, missing))}")
    return by_id


def _parse_grounded(n: int) -> Any:
    def parse(data: dict[str, Any]) -> list[tuple[str, str]]:
        by_id = _entries(data, n)
        out = []
        for i in range(1, n + 1):
            v = str(by_id[i].get("verdict", "")).strip().lower().replace("-", "_").replace(" ", "_")
            if v not in _GROUNDED_VERDICTS:
                raise ValueError(f'sentence {i}: "verdict" must be one of {", ".join(_GROUNDED_VERDICTS)}')
            out.append((v, str(by_id[i].get("reason") or "")))
        return out

    return parse


@register("grounded-llm")
class GroundedLLM:
    """Share of the answer's claims the passages support, each sentence verified by a judge model."""

    name = "grounded-llm"
    version = "1"

    def __init__(self, *, threshold: float = 0.8, judge_model: JudgeModel | None = None, **model_args: Any) -> None:
        self.llm = model_from(judge_model, model_args)
        self.threshold = threshold
        self.args: dict[str, Any] = {**self.llm.args, "threshold": threshold}

    async def judge(self, s: Subject) -> Verdict:
        found = passages(s.exchange)
        if not found:
            return verdict(self, s, error="no context found")
        said = sentences(s.output.text or "")
        if not said:
            return verdict(self, s, error="no text to judge")
        prompt = GROUNDED_PROMPT.substitute(passages=format_passages(found), sentences=_numbered(said))
        reply = await self.llm.ask(GROUNDED_SYSTEM, prompt, _parse_grounded(len(said)))
        if reply.value is None:
            return verdict(self, s, error=reply.error, cost_usd=reply.cost_usd)
        unsupported = [{"sentence": sent, "reason": why}
                       for sent, (v, why) in zip(said, reply.value, strict=True) if v == "unsupported"]
        claims = sum(v != "not_a_claim" for v, _ in reply.value)
        score = (claims - len(unsupported)) / claims if claims else 1.0
        explanation = (f"{claims - len(unsupported)} of {claims} claims supported by the passages" if claims
                       else "no factual claims")
        return verdict(self, s, score=score, label="grounded" if score >= self.threshold else "ungrounded",
                       explanation=explanation, cost_usd=reply.cost_usd,
                       evidence={"sentences": len(said), "claims": claims, "unsupported": unsupported,
                                 "judge_calls": reply.calls})


# --- citations-llm -------------------------------------------------------------------------------

CITATIONS_SYSTEM = ("You check whether each sentence of an AI assistant's answer is supported by the passages it "
                    "cites. Reply with one JSON object and nothing else.")
CITATIONS_PROMPT = Template("""Passages:
$passages

Sentences of the answer, each followed by the passages it cites:
$sentences

For every numbered sentence decide:
- "claim": true if it states a fact that needs a source, false for a greeting, a question or an offer of help;
- "supported": true if the passages it cites, taken together, support everything it states (false when it \
cites none);
- "citations": for each passage it cites, "full" if that passage alone supports the sentence, "partial" if it \
supports part of it, "none" if it does not help.
Judge only against the passages, not your own knowledge.

Return JSON: {"sentences": [{"id": <sentence number>, "claim": true | false, "supported": true | false, \
"citations": {"<passage number>": "full" | "partial" | "none"}, "reason": "<one short sentence>"}]} with one \
entry per sentence.""")
_SUPPORT = ("full", "partial", "none")
# The order in which problems name the verdict's label.
_PROBLEMS = ("unknown_source", "unsupported", "missing_citation", "irrelevant_citation")


def _flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "yes"):
        return True
    if str(value).strip().lower() in ("false", "no"):
        return False
    raise ValueError(f'"{what}" must be true or false')


def _parse_citations(cites: list[Citations]) -> Any:
    def parse(data: dict[str, Any]) -> list[tuple[bool, bool, dict[int, str], str]]:
        by_id = _entries(data, len(cites))
        out: list[tuple[bool, bool, dict[int, str], str]] = []
        for i, c in enumerate(cites, 1):
            e = by_id[i]
            if not _flag(e.get("claim"), "claim"):
                out.append((False, False, {}, str(e.get("reason") or "")))
                continue
            labels = e.get("citations") or {}
            if not isinstance(labels, dict):
                raise ValueError(f'sentence {i}: "citations" must be an object')
            support: dict[int, str] = {}
            for n in c.passages:
                label = str(labels.get(str(n), labels.get(n, ""))).strip().lower()
                if label not in _SUPPORT:
                    raise ValueError(f'sentence {i}: "citations" needs "{n}": "full", "partial" or "none"')
                support[n] = label
            ok = _flag(e.get("supported", False), "supported") and bool(c.passages)
            out.append((True, ok, support, str(e.get("reason") or "")))
        return out

    return parse


def _cites_anything(text: str | None, found: list[dict[str, Any]]) -> bool:
    return any(find_citations(s, found) for s in sentences(text or ""))


@register("citations-llm")
class CitationsLLM:
    """Citation F1: claims supported by the passages they cite (recall) and citations that help (precision)."""

    name = "citations-llm"
    version = "1"

    def __init__(self, *, require_citations: bool = False, judge_model: JudgeModel | None = None,
                 **model_args: Any) -> None:
        self.llm = model_from(judge_model, model_args)
        self.require_citations = require_citations
        self.args: dict[str, Any] = {**self.llm.args, "require_citations": require_citations}

    async def judge(self, s: Subject) -> Verdict:
        found = passages(s.exchange)
        if not found:
            return verdict(self, s, error="no context found")
        said = sentences(s.output.text or "")
        cites = [find_citations(sent, found) for sent in said]
        problems: list[dict[str, Any]] = [{"type": "unknown_source", "sentence": sent, "ref": ref}
                                          for sent, c in zip(said, cites, strict=True) for ref in c.unknown]
        # An answer that cites nothing is judged only where citing is expected: when required, or when
        # production's answer to the same request cites.
        if not any(cites) and not (
                self.require_citations or (s.production is not None and _cites_anything(s.production.text, found))):
            return verdict(self, s, error="the answer cites nothing")
        shown = sorted({n for c in cites for n in c.passages})
        lines = [c.strip(sent) for sent, c in zip(said, cites, strict=True)]
        suffixes = [f"  [cites: {', '.join(map(str, c.passages)) or 'none'}]" for c in cites]
        prompt = CITATIONS_PROMPT.substitute(passages=format_passages(found, shown) if shown else "(none cited)",
                                             sentences=_numbered(lines, suffixes))
        reply = await self.llm.ask(CITATIONS_SYSTEM, prompt, _parse_citations(cites))
        if reply.value is None:
            return verdict(self, s, error=reply.error, cost_usd=reply.cost_usd, evidence={"problems": problems})
        claims = supported = precise = 0
        citations = sum(len(c.unknown) for c in cites)
        for sent, c, (claim, ok, support, why) in zip(said, cites, reply.value, strict=True):
            if not claim:
                continue
            claims += 1
            citations += len(c.passages)
            if not c.passages:
                if not c.unknown:
                    problems.append({"type": "missing_citation", "sentence": sent, "reason": why})
            elif not ok:
                problems.append({"type": "unsupported", "sentence": sent, "cites": [passage_ref(found, n) for n in c.passages],
                                 "reason": why})
            else:
                supported += 1
                for n, label in support.items():
                    # ALCE: a citation is irrelevant when it supports nothing alone and the others suffice
                    if label != "none" or len(c.passages) == 1:
                        precise += 1
                    else:
                        problems.append({"type": "irrelevant_citation", "sentence": sent, "ref": passage_ref(found, n),
                                         "reason": why})
        recall = supported / claims if claims else None
        precision = precise / citations if citations else None
        r, p = 1.0 if recall is None else recall, 1.0 if precision is None else precision
        score = 2 * r * p / (r + p) if r + p else 0.0
        kinds = {x["type"] for x in problems}
        label = next((k for k in _PROBLEMS if k in kinds), "ok")
        explanation = (f"{supported} of {claims} claims supported by their citations; "
                       f"{precise} of {citations} citations precise" + (f"; {len(problems)} problem(s)" if problems
                                                                          else ""))
        return verdict(self, s, score=score, label=label, explanation=explanation, cost_usd=reply.cost_usd,
                       evidence={"recall": recall, "precision": precision, "claims": claims, "citations": citations,
                                 "problems": problems, "judge_calls": reply.calls})
