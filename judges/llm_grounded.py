"""Groundedness and citations checked by a judge model, sentence by sentence.

`grounded-llm` asks, in one call, whether each sentence of the answer is supported by the
retrieved passages; `citations-llm` asks whether each sentence is supported by the passages it
cites (ALCE-style citation recall and precision), after flagging, without a model, citations to
passages that do not exist. Both need the passages the model was given (`llm.passages`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from string import Template
from typing import Any

from shadoweval.proxy.types import Verdict

from .base import Subject, register, verdict
from .llm import JudgeModel, format_passages, model_from, passages

# --- sentences -----------------------------------------------------------------------------------

# Words whose trailing period does not end a sentence (lowercased, without their last period).
_ABBREVIATIONS = frozenset(
    "e.g i.e etc vs cf al approx ca dr mr mrs ms prof sr jr st no nos fig inc ltd co corp dept est "
    "min max resp viz vol pp incl excl avg".split()
)
_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)]*")
_CITE_ITEM = r"[A-Za-z]{0,12}[ _-]?\d{1,4}"
# Citation markers that stay with the sentence before them ("... in 5 days. [1][2] Next ...").
_TRAILING_MARKS = re.compile(
    rf"(?:\s*(?:\[\^?\s*{_CITE_ITEM}(?:\s*[-\u2013,;]\s*{_CITE_ITEM})*\s*\]|\^\d{{1,3}}))+")
_BULLET = re.compile(r"^\s*(?:[-*\u2022+]\s+|\d{1,3}[.)]\s+|#{1,6}\s+|>\s*)")


def split_sentences(text: str) -> list[str]:
    """Sentences of an answer, each line split on its own; citation markers stay with their sentence,
    and abbreviations (e.g., U.S.), initials and decimals do not end one."""
    out: list[str] = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip()
        if line:
            out.extend(s for s in _split_line(line) if any(c.isalnum() for c in s))
    return out


def _split_line(line: str) -> list[str]:
    sentences, start = [], 0
    for m in _END.finditer(line):
        end = m.end()
        marks = _TRAILING_MARKS.match(line, end)
        if marks:
            end = marks.end()
        rest = line[end:]
        if rest and not rest[0].isspace():
            continue  # 3.5, U.S.A, example.com/a.b: not an end
        nxt = rest.lstrip()[:1]
        if nxt and not (nxt.isupper() or nxt.isdigit() or nxt in "\"'\u201c\u2018([*_"):
            continue  # "e.g. the", "approx. five": the sentence goes on
        if m.group()[0] == "." and _abbreviation(line[start:m.start()]):
            continue
        sentences.append(line[start:end].strip())
        start = end
    if line[start:].strip():
        sentences.append(line[start:].strip())
    return sentences


def _abbreviation(before: str) -> bool:
    word = before.rsplit(None, 1)[-1] if before.strip() else ""
    word = word.lstrip("([\"'")
    return (word.lower() in _ABBREVIATIONS or re.fullmatch(r"(?:[A-Za-z]\.)+[A-Za-z]", word) is not None
            or re.fullmatch(r"[A-Z]", word) is not None)


# --- citations -----------------------------------------------------------------------------------

_BRACKET = re.compile(r"\[(\^?[^\[\]\n]{1,60})\](?!\()")  # [1], [1, 2], [doc2], [^1]; not [text](url) links
_CARET = re.compile(r"(?<![\w\[\^])\^(\d{1,3})\b")
_URL = re.compile(r"https?://[^\s<>()\[\]\"']+")
_RANGE = re.compile(r"(\d{1,4})\s*[-\u2013]\s*(\d{1,4})")
_LABELLED = re.compile(r"[A-Za-z]{1,12}[ _-]?(\d{1,4})")


@dataclass(frozen=True, slots=True)
class Citations:
    """What one sentence cites: passage numbers (1-based) and references to no known passage."""

    passages: tuple[int, ...] = ()
    unknown: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()  # as written, to take them out of the sentence


def find_citations(sentence: str, found: list[dict[str, Any]]) -> Citations:
    """Citation markers in a sentence, resolved against the passages: a passage id ([kb-12]), a number
    ([1], [1, 2], [1-3], [doc2], [Source 2], footnotes ^1 and [^1]), or a URL equal to a passage's
    `url` or `id` (other URLs are links, not citations). A marker shaped like a citation that names
    no passage is `unknown`; brackets that are not citations ([sic], [link](url)) are left alone."""
    ids = {str(p.get("id")).strip().lower(): i for i, p in enumerate(found, 1) if p.get("id") is not None}
    urls = {_norm_url(str(p[k])): i for i, p in enumerate(found, 1) for k in ("url", "id") if p.get(k)}
    nums: list[int] = []
    unknown: list[str] = []
    markers: list[str] = []
    for m in _BRACKET.finditer(sentence):
        items = [x.strip() for x in re.split(r"[,;]", m.group(1).lstrip("^"))]
        resolved = [_resolve(x, ids, len(found)) for x in items]
        if not items or any(r is None for r in resolved):
            continue  # not a citation: [sic], [optional], [link text]
        markers.append(m.group())
        for item, r in zip(items, resolved, strict=True):
            if r:
                nums.extend(r)
            else:
                unknown.append(m.group() if len(items) == 1 else f"[{item}]")
    for m in _CARET.finditer(sentence):
        markers.append(m.group())
        footnote = _resolve(m.group(1), ids, len(found))
        if footnote:
            nums.extend(footnote)
        else:
            unknown.append(m.group())
    for m in _URL.finditer(sentence):
        i = urls.get(_norm_url(m.group()))
        if i:
            markers.append(m.group().rstrip(".,;:"))
            nums.append(i)
    return Citations(tuple(dict.fromkeys(nums)), tuple(dict.fromkeys(unknown)), tuple(markers))


def _resolve(item: str, ids: dict[str, int], n: int) -> list[int] | None:
    """Passage numbers an item names; [] when it looks like a citation to no known passage; None when
    it does not look like a citation at all. Numbers are passage ids when the passages have numeric
    ids (the app numbered them: [3] is passage "3", wherever it sits), positions otherwise."""
    if item.lower() in ids:
        return [ids[item.lower()]]
    by_id = any(k.isdigit() for k in ids)

    def number(i: int) -> list[int]:
        if by_id:
            return [ids[str(i)]] if str(i) in ids else []
        return [i] if 1 <= i <= n else []

    if item.isdigit():
        return number(int(item))
    r = _RANGE.fullmatch(item)
    if r:
        lo, hi = int(r.group(1)), int(r.group(2))
        span = [number(i) for i in range(lo, hi + 1)] if lo <= hi <= lo + 50 else []
        return [x[0] for x in span] if span and all(span) else []
    lab = _LABELLED.fullmatch(item)  # [doc2], [Source 2]
    if lab:
        return number(int(lab.group(1)))
    # shaped like the passages' ids ("kb-..." when they are "kb-refunds", "kb-warranty"): a missing one
    prefixes = {k[:i + 1] for k in ids for i in (min((k.find(c) for c in "-_:" if c in k), default=-1),) if i > 0}
    return [] if any(item.lower().startswith(pre) for pre in prefixes) else None


def _norm_url(url: str) -> str:
    return url.strip().rstrip(".,;:/").lower().removeprefix("https://").removeprefix("http://")


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


def _numbered(sentences: list[str], suffixes: list[str] | None = None) -> str:
    return "\n".join(f"{i}. {s}{suffixes[i - 1] if suffixes else ''}" for i, s in enumerate(sentences, 1))


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
        sentences = split_sentences(s.output.text or "")
        if not sentences:
            return verdict(self, s, error="no text to judge")
        prompt = GROUNDED_PROMPT.substitute(passages=format_passages(found), sentences=_numbered(sentences))
        reply = await self.llm.ask(GROUNDED_SYSTEM, prompt, _parse_grounded(len(sentences)))
        if reply.value is None:
            return verdict(self, s, error=reply.error, cost_usd=reply.cost_usd)
        unsupported = [{"sentence": sent, "reason": why}
                       for sent, (v, why) in zip(sentences, reply.value, strict=True) if v == "unsupported"]
        claims = sum(v != "not_a_claim" for v, _ in reply.value)
        score = (claims - len(unsupported)) / claims if claims else 1.0
        explanation = (f"{claims - len(unsupported)} of {claims} claims supported by the passages" if claims
                       else "no factual claims")
        return verdict(self, s, score=score, label="grounded" if score >= self.threshold else "ungrounded",
                       explanation=explanation, cost_usd=reply.cost_usd,
                       evidence={"sentences": len(sentences), "claims": claims, "unsupported": unsupported,
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
        out = []
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
    return any(c.passages or c.unknown for c in (find_citations(s, found) for s in split_sentences(text or "")))


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
        sentences = split_sentences(s.output.text or "")
        cites = [find_citations(sent, found) for sent in sentences]
        problems: list[dict[str, Any]] = [{"type": "unknown_source", "sentence": sent, "ref": ref}
                                          for sent, c in zip(sentences, cites, strict=True) for ref in c.unknown]
        # An answer that cites nothing is judged only where citing is expected: when required, or when
        # production's answer to the same request cites.
        if not any(c.passages or c.unknown for c in cites) and not (
                self.require_citations or (s.production is not None and _cites_anything(s.production.text, found))):
            return verdict(self, s, error="the answer cites nothing")
        shown = sorted({n for c in cites for n in c.passages})
        lines = [_strip(sent, c) for sent, c in zip(sentences, cites, strict=True)]
        suffixes = [f"  [cites: {', '.join(map(str, c.passages)) or 'none'}]" for c in cites]
        prompt = CITATIONS_PROMPT.substitute(passages=format_passages(found, shown) if shown else "(none cited)",
                                             sentences=_numbered(lines, suffixes))
        reply = await self.llm.ask(CITATIONS_SYSTEM, prompt, _parse_citations(cites))
        if reply.value is None:
            return verdict(self, s, error=reply.error, cost_usd=reply.cost_usd, evidence={"problems": problems})
        claims = supported = precise = 0
        citations = sum(len(c.unknown) for c in cites)
        for sent, c, (claim, ok, support, why) in zip(sentences, cites, reply.value, strict=True):
            if not claim:
                continue
            claims += 1
            citations += len(c.passages)
            if not c.passages:
                if not c.unknown:
                    problems.append({"type": "missing_citation", "sentence": sent, "reason": why})
            elif not ok:
                problems.append({"type": "unsupported", "sentence": sent, "cites": [_pid(found, n) for n in c.passages],
                                 "reason": why})
            else:
                supported += 1
                for n, label in support.items():
                    # ALCE: a citation is irrelevant when it supports nothing alone and the others suffice
                    if label != "none" or len(c.passages) == 1:
                        precise += 1
                    else:
                        problems.append({"type": "irrelevant_citation", "sentence": sent, "ref": _pid(found, n),
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


def _pid(found: list[dict[str, Any]], n: int) -> str:
    return str(found[n - 1].get("id") or n)


def _strip(sentence: str, c: Citations) -> str:
    """The sentence without its markers: the prompt lists what it cites by passage number instead."""
    for marker in c.markers:
        sentence = re.sub(r"\s*" + re.escape(marker), "", sentence)
    return " ".join(sentence.split())
